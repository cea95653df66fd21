# RandAugment policy search (Cubuk et al. 2020): every (n, m) point of the grid is its own job, so a
# cluster trains them side by side. Target: results/augsearch/summary.csv (not part of 'all').
# A point's score depends on ensemble.grid (its triplet is tuned on its own maps), so widening the
# grid reruns the points too; the segment recipe's own augment is replaced, so it reruns nothing.


rule augsearch_point:
    input:
        **augsearch_stage_repacks(),
        **siim_repack(config["segment"]["size"]),
        folds=L.data("siim_folds.csv"),
        index=L.data("siim_index.csv"),
        rle=SIIM_LABELS,
    output:
        row=L.augsearch_file("{point}", "row.json"),
        model=model_file(L.augsearch_dir("{point}"), BEST),
        metrics=L.augsearch_file("{point}", METRICS),
    log:
        L.log("augsearch_point", "{point}"),
    benchmark:
        L.benchmark("augsearch_point", "{point}")
    wildcard_constraints:
        point="|".join(augsearch_points()),
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("train")["threads"]
    resources:
        mem_mb=resources_of("train")["mem_mb"],
        runtime=resources_of("train")["runtime"],
        gpu=resources_of("train").get("gpu", 0),
    params:
        code=code_of("augsearch_point.py"),
        arch=augsearch_arch_params(),
        fold=config["augsearch"]["fold"],
        size=config["segment"]["size"],
        seed=config["seed"],
        train=config["train"],
        grid=config["ensemble"]["grid"],
        state=L.training_state("augsearch", "{point}"),
    script:
        "../scripts/augsearch_point.py"


rule augsearch_summary:
    input:
        rows=expand(L.augsearch_file("{point}", "row.json"), point=augsearch_points()),
    output:
        summary=L.augsearch("summary.csv"),
        heatmap=L.augsearch("heatmap.png"),
        best=L.augsearch("best.yaml"),
        search=L.augsearch("search.json"),
        report=L.augsearch("report.html"),
    log:
        L.log("augsearch_summary", "augsearch_summary"),
    benchmark:
        L.benchmark("augsearch_summary", "augsearch_summary")
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        code=code_of("augsearch_summary.py"),
        grid={axis: config["augsearch"][axis] for axis in ("n", "m")},
    script:
        "../scripts/augsearch_summary.py"
