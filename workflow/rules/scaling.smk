# Compound scaling search (EfficientNet-style) of a U-Net: every candidate is its own job, so a
# cluster trains them side by side. Target: results/scaling/summary.csv (not part of 'all').


rule scaling_candidate:
    input:
        folds="results/data/siim_folds.csv",
        manifest="results/repack/siim/manifest.csv",
        stats="results/repack/siim/stats.json",
        index="results/data/siim_index.csv",
        rle=siim_source()["rle"],
    output:
        row="results/scaling/{candidate}/row.json",
        model="results/scaling/{candidate}/model_best.pt",
        metrics="results/scaling/{candidate}/metrics.csv",
    log:
        "results/logs/scaling_candidate/{candidate}.log",
    benchmark:
        "results/benchmarks/scaling_candidate/{candidate}.tsv"
    wildcard_constraints:
        candidate="|".join(scaling_candidates()),
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("train")["threads"]
    resources:
        mem_mb=resources_of("train")["mem_mb"],
        runtime=resources_of("train")["runtime"],
        gpu=resources_of("train").get("gpu", 0),
    params:
        scaling=config["scaling"],
        sizes=config["repack"]["sizes"],
        seed=config["seed"],
        runtime=config["train"],
        grid=config["ensemble"]["grid"],
        state="results/checkpoints/scaling/{candidate}.pt",
    script:
        "../scripts/scaling_candidate.py"


rule scaling_summary:
    input:
        rows=expand(
            "results/scaling/{candidate}/row.json", candidate=scaling_candidates()
        ),
    output:
        summary="results/scaling/summary.csv",
        plot="results/scaling/score_vs_flops.png",
        best="results/scaling/best.yaml",
        search="results/scaling/search.json",
    log:
        "results/logs/scaling_summary/scaling_summary.log",
    benchmark:
        "results/benchmarks/scaling_summary/scaling_summary.tsv"
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        base_resolution=config["scaling"]["base_resolution"],
        phis=config["scaling"]["phis"],
        grid=config["scaling"]["grid"],
    script:
        "../scripts/scaling_summary.py"
