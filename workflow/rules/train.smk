# Training: NIH pretraining per classifier architecture, then classifiers and segmenters per
# architecture and fold. Resume states live in results/checkpoints/, outside the declared outputs,
# so a killed or preempted job's rerun continues where it stopped. A fold job keeps its models;
# their OOF predictions are the architecture's prediction job's (ensemble.smk), with train.tta,
# which is no training job's param: changing it retrains nothing.


rule pretrain_nih:
    input:
        # The NIH index without the NIH images that are SIIM images (rule exclude_siim_from_nih).
        index=L.data("nih_pretrain_index.csv"),
        overlap=L.data("nih_siim_overlap.csv"),
        manifest=L.repack_manifest("nih", config["repack"]["nih_size"]),
        stats=L.repack_stats("nih", config["repack"]["nih_size"]),
    output:
        model=L.model("pretrain", "{arch}", None, "best"),
        metrics=L.pretrain_file("{arch}", METRICS),
        summary=L.pretrain_file("{arch}", SUMMARY),
    log:
        L.log("pretrain_nih", job_name("{arch}")),
    benchmark:
        L.benchmark("pretrain_nih", job_name("{arch}"))
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
        code=code_of("pretrain_nih.py"),
        arch=arch_params("pretrain"),
        exclude_findings=config["pretrain"]["exclude_findings"],
        size=config["repack"]["nih_size"],
        seed=config["seed"],
        train=training_numerics(),
        state=L.training_state("pretrain", "{arch}"),
    script:
        "../scripts/pretrain_nih.py"


rule train_classifier:
    input:
        **siim_repack(config["classify"]["size"]),
        folds=L.data("siim_folds.csv"),
        init=classifier_init,
    output:
        models=expand(
            L.model("classify", "{{arch}}", "{{fold}}", "{member}"),
            member=stage_members("classify"),
        ),
        metrics=L.fold_file("classify", "{arch}", "{fold}", METRICS),
        summary=L.fold_file("classify", "{arch}", "{fold}", SUMMARY),
    log:
        L.log("train_classifier", job_name("{arch}", "{fold}")),
    benchmark:
        L.benchmark("train_classifier", job_name("{arch}", "{fold}"))
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
        code=code_of("train_fold.py"),
        arch=arch_params("classify"),
        size=config["classify"]["size"],
        seed=config["seed"],
        train=training_numerics(),
        state=L.training_state("classify", "{arch}", "{fold}"),
    script:
        "../scripts/train_fold.py"


rule train_segmenter:
    input:
        unpack(stage_repacks),
        **siim_repack(config["segment"]["size"]),
        folds=L.data("siim_folds.csv"),
    output:
        models=expand(
            L.model("segment", "{{arch}}", "{{fold}}", "{member}"),
            member=stage_members("segment"),
        ),
        metrics=L.fold_file("segment", "{arch}", "{fold}", METRICS),
        summary=L.fold_file("segment", "{arch}", "{fold}", SUMMARY),
    log:
        L.log("train_segmenter", job_name("{arch}", "{fold}")),
    benchmark:
        L.benchmark("train_segmenter", job_name("{arch}", "{fold}"))
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
        code=code_of("train_fold.py"),
        arch=arch_params("segment"),
        size=config["segment"]["size"],
        seed=config["seed"],
        train=training_numerics(),
        state=L.training_state("segment", "{arch}", "{fold}"),
    script:
        "../scripts/train_fold.py"
