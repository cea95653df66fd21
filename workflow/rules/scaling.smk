# Compound scaling search (EfficientNet-style) of a U-Net: every candidate is its own job, so a
# cluster trains them side by side. Target: results/scaling/summary.csv (not part of 'all').
# The candidates are listed by input functions (screening measures FLOPs with torch), and the
# wildcard is constrained by the names' pattern, so other targets' DAGs never screen the grid.
# A candidate's score depends on ensemble.grid (its triplet is tuned on its own maps), so widening
# the grid reruns the candidates too.


rule scaling_candidate:
    input:
        unpack(scaling_repack),
        folds=L.data("siim_folds.csv"),
        index=L.data("siim_index.csv"),
        rle=SIIM_LABELS,
    output:
        row=L.scaling_candidate("{candidate}", "row.json"),
        model=model_file(L.scaling_dir("{candidate}"), BEST),
        metrics=L.scaling_candidate("{candidate}", METRICS),
    log:
        L.log("scaling_candidate", "{candidate}"),
    benchmark:
        L.benchmark("scaling_candidate", "{candidate}")
    wildcard_constraints:
        candidate=NAME_PATTERN,
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("train")["threads"]
    resources:
        mem_mb=resources_of("train")["mem_mb"],
        runtime=resources_of("train")["runtime"],
        gpu=resources_of("train").get("gpu", 0),
    params:
        code=code_of("scaling_candidate.py"),
        scaling={
            key: value for key, value in config["scaling"].items() if key != "phis"
        },
        seed=config["seed"],
        train=config["train"],
        grid=config["ensemble"]["grid"],
        state=L.training_state("scaling", "{candidate}"),
    script:
        "../scripts/scaling_candidate.py"


rule scaling_summary:
    input:
        rows=scaling_rows,
    output:
        summary=L.scaling("summary.csv"),
        plot=L.scaling("score_vs_flops.png"),
        best=L.scaling("best.yaml"),
        search=L.scaling("search.json"),
        report=L.scaling("report.html"),
    log:
        L.log("scaling_summary", "scaling_summary"),
    benchmark:
        L.benchmark("scaling_summary", "scaling_summary")
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        code=code_of("scaling_summary.py"),
        base_resolution=config["scaling"]["base_resolution"],
        phis=config["scaling"]["phis"],
        grid=config["scaling"]["grid"],
        # B0's regularisation and activation: best.yaml's B1 (and B2) entries take them, the
        # dropout grown with phi as the official B0-B7 grow theirs.
        b0_recipe={
            key: config["scaling"]["recipe"][key]
            for key in ("dropout_rate", "drop_path_rate", "activation")
        },
        dropout_by_phi=config["scaling"]["dropout_by_phi"],
        # best.yaml scales segment.size by B1's multiplier; the stages and crops keep their ratio.
        resolution_keys=resolution_keys(config),
    script:
        "../scripts/scaling_summary.py"
