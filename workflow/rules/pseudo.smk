# The NIH second round (pseudo_labels.enabled): candidates sampled from the NIH images that are not
# SIIM images, repacked at the segment size; per fold, that fold's first-round models label them
# (pseudo_label_nih); per architecture and fold, the segmenter trains again with them
# (train_segmenter_round2, results under <arch>-round2, which the ensemble takes beside round 1;
# its OOF and test predictions are predict_segmenter's for <arch>-round2, as round 1's).


rule pseudo_label_candidates:
    input:
        index=L.data("nih_pretrain_index.csv"),
        overlap=L.data("nih_siim_overlap.csv"),
    output:
        candidates=L.pseudo_labels("candidates.csv"),
    log:
        L.log("pseudo_label_candidates", "pseudo_label_candidates"),
    benchmark:
        L.benchmark("pseudo_label_candidates", "pseudo_label_candidates")
    conda:
        "../../envs/ptxseg.yaml"
    params:
        code=code_of("pseudo_label_candidates.py"),
        n=config["pseudo_labels"]["candidates"],
        seed=config["seed"],
    script:
        "../scripts/pseudo_label_candidates.py"


rule repack_nih_candidates:
    input:
        index=L.pseudo_labels("candidates.csv"),
    output:
        images=directory(L.repack_images("nih_candidates", config["segment"]["size"])),
        manifest=L.repack_manifest("nih_candidates", config["segment"]["size"]),
        stats=L.repack_stats("nih_candidates", config["segment"]["size"]),
    log:
        L.log("repack_nih_candidates", str(config["segment"]["size"])),
    benchmark:
        L.benchmark("repack_nih_candidates", str(config["segment"]["size"]))
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("repack")["threads"]
    resources:
        mem_mb=resources_of("repack")["mem_mb"],
        runtime=resources_of("repack")["runtime"],
    params:
        code=code_of("repack_nih.py"),
        size=config["segment"]["size"],
        normalisation=NORMALISATION,
    script:
        "../scripts/repack_nih.py"


rule pseudo_label_nih:
    input:
        candidates=L.repack_manifest("nih_candidates", config["segment"]["size"]),
        overlap=L.data("nih_siim_overlap.csv"),
        segment_stats=L.repack_stats("siim", config["segment"]["size"]),
        classify_stats=L.repack_stats("siim", config["classify"]["size"]),
        segmenters=first_round_models("segment"),
        classifiers=first_round_models("classify"),
    output:
        labels=L.pseudo_label_file("{fold}", "labels.csv"),
        summary=L.pseudo_label_file("{fold}", SUMMARY),
        masks=directory(L.pseudo_label_masks("{fold}")),
    log:
        L.log("pseudo_label_nih", fold_name("{fold}")),
    benchmark:
        L.benchmark("pseudo_label_nih", fold_name("{fold}"))
    wildcard_constraints:
        fold=r"\d+",
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("predict")["threads"]
    resources:
        mem_mb=resources_of("predict")["mem_mb"],
        runtime=resources_of("predict")["runtime"],
        gpu=resources_of("predict").get("gpu", 0),
    params:
        code=code_of("pseudo_label_nih.py"),
        bands=pseudo_label_bands(),
        segment_size=config["segment"]["size"],
        classify_size=config["classify"]["size"],
        train=pseudo_label_numerics(),
    script:
        "../scripts/pseudo_label_nih.py"


rule train_segmenter_round2:
    input:
        unpack(round2_stage_repacks),
        unpack(round2_inputs),
        **siim_repack(config["segment"]["size"]),
        folds=L.data("siim_folds.csv"),
    output:
        models=expand(
            L.model("segment", round2_name("{{arch}}"), "{{fold}}", "{member}"),
            member=stage_members("segment"),
        ),
        metrics=L.fold_file("segment", round2_name("{arch}"), "{fold}", METRICS),
        summary=L.fold_file("segment", round2_name("{arch}"), "{fold}", SUMMARY),
    log:
        L.log("train_segmenter_round2", job_name("{arch}", "{fold}")),
    benchmark:
        L.benchmark("train_segmenter_round2", job_name("{arch}", "{fold}"))
    wildcard_constraints:
        arch="|".join(ROUND2_ARCHS) or "none",
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
        arch=round2_arch_params,
        round2=round2_params(),
        size=config["segment"]["size"],
        seed=config["seed"],
        train=training_numerics(),
        state=L.training_state("segment", round2_name("{arch}"), "{fold}"),
    script:
        "../scripts/train_fold.py"
