# Training: NIH pretraining per classifier architecture, then classifiers and segmenters per
# architecture and fold. Resume states live in results/checkpoints/, outside the declared outputs,
# so a killed or preempted job's rerun continues where it stopped.


rule pretrain_nih:
    input:
        # The NIH index without the NIH images that are SIIM images (rule exclude_siim_from_nih).
        index="results/data/nih_pretrain_index.csv",
        overlap="results/data/nih_siim_overlap.csv",
        manifest="results/repack/nih/manifest.csv",
        stats="results/repack/nih/stats.json",
    output:
        model="results/pretrain/{arch}/model_best.pt",
        metrics="results/pretrain/{arch}/metrics.csv",
        summary="results/pretrain/{arch}/summary.json",
    log:
        "results/logs/pretrain_nih/{arch}.log",
    benchmark:
        "results/benchmarks/pretrain_nih/{arch}.tsv"
    wildcard_constraints:
        arch="|".join(config["pretrain"]["archs"]) or "none",
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("pretrain")["threads"]
    resources:
        mem_mb=resources_of("pretrain")["mem_mb"],
        runtime=resources_of("pretrain")["runtime"],
        gpu=resources_of("pretrain").get("gpu", 0),
    params:
        arch=arch_params("pretrain"),
        exclude_findings=config["pretrain"]["exclude_findings"],
        size=config["repack"]["nih_size"],
        seed=config["seed"],
        runtime=config["train"],
        weights_dir=config["models"]["weights_dir"],
        state="results/checkpoints/pretrain/{arch}.pt",
    script:
        "../scripts/pretrain_nih.py"


rule train_classifier:
    input:
        folds="results/data/siim_folds.csv",
        manifest="results/repack/siim/manifest.csv",
        stats="results/repack/siim/stats.json",
        init=classifier_init,
    output:
        models=expand(
            "results/classify/{{arch}}/fold{{fold}}/model_{member}.pt",
            member=stage_members("classify"),
        ),
        oof="results/classify/{arch}/fold{fold}/oof.csv",
        metrics="results/classify/{arch}/fold{fold}/metrics.csv",
        summary="results/classify/{arch}/fold{fold}/summary.json",
    log:
        "results/logs/train_classifier/{arch}_fold{fold}.log",
    benchmark:
        "results/benchmarks/train_classifier/{arch}_fold{fold}.tsv"
    wildcard_constraints:
        arch="|".join(config["classify"]["archs"]) or "none",
        fold=r"\d+",
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("train")["threads"]
    resources:
        mem_mb=resources_of("train")["mem_mb"],
        runtime=resources_of("train")["runtime"],
        gpu=resources_of("train").get("gpu", 0),
    params:
        arch=arch_params("classify"),
        size=config["classify"]["size"],
        seed=config["seed"],
        runtime=config["train"],
        weights_dir=config["models"]["weights_dir"],
        state="results/checkpoints/classify/{arch}/fold{fold}.pt",
        grid=None,
    script:
        "../scripts/train_fold.py"


rule train_segmenter:
    input:
        folds="results/data/siim_folds.csv",
        manifest="results/repack/siim/manifest.csv",
        stats="results/repack/siim/stats.json",
    output:
        models=expand(
            "results/segment/{{arch}}/fold{{fold}}/model_{member}.pt",
            member=stage_members("segment"),
        ),
        oof=expand(
            "results/segment/{{arch}}/fold{{fold}}/oof_{member}.h5",
            member=stage_members("segment"),
        ),
        oof_ids="results/segment/{arch}/fold{fold}/oof_ids.csv",
        metrics="results/segment/{arch}/fold{fold}/metrics.csv",
        summary="results/segment/{arch}/fold{fold}/summary.json",
    log:
        "results/logs/train_segmenter/{arch}_fold{fold}.log",
    benchmark:
        "results/benchmarks/train_segmenter/{arch}_fold{fold}.tsv"
    wildcard_constraints:
        arch="|".join(config["segment"]["archs"]) or "none",
        fold=r"\d+",
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("train")["threads"]
    resources:
        mem_mb=resources_of("train")["mem_mb"],
        runtime=resources_of("train")["runtime"],
        gpu=resources_of("train").get("gpu", 0),
    params:
        arch=arch_params("segment"),
        size=config["segment"]["size"],
        seed=config["seed"],
        runtime=config["train"],
        weights_dir=config["models"]["weights_dir"],
        state="results/checkpoints/segment/{arch}/fold{fold}.pt",
        grid=config["ensemble"]["grid"],
    script:
        "../scripts/train_fold.py"
