# Ensemble: predictions per architecture (every fold model: its out-of-fold predictions on the
# fold it held out, and the test set, both with train.tta), blending weights and cascade
# thresholds searched on the out-of-fold predictions, and the submission.


rule predict_classifier:
    input:
        **siim_repack(config["classify"]["size"]),
        folds=L.data("siim_folds.csv"),
        models=fold_models("classify"),
        kept=fold_models("classify", stage_members("classify")),
    output:
        **oof_outputs("classify"),
        probabilities=L.test_probabilities("{arch}"),
    log:
        L.log("predict_classifier", job_name("{arch}")),
    benchmark:
        L.benchmark("predict_classifier", job_name("{arch}"))
    wildcard_constraints:
        arch="|".join(config["classify"]["archs"]) or "none",
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("predict")["threads"]
    resources:
        mem_mb=resources_of("predict")["mem_mb"],
        runtime=resources_of("predict")["runtime"],
        gpu=resources_of("predict").get("gpu", 0),
    params:
        code=code_of("predict_test.py"),
        size=config["classify"]["size"],
        train=config["train"],
    script:
        "../scripts/predict_test.py"


rule predict_segmenter:
    input:
        **siim_repack(config["segment"]["size"]),
        folds=L.data("siim_folds.csv"),
        models=fold_models("segment"),
        kept=fold_models("segment", stage_members("segment")),
    output:
        **oof_outputs("segment"),
        maps=[L.test_maps("{arch}", fold) for fold in range(N_FOLDS)],
        ids=L.test_ids("{arch}"),
    log:
        L.log("predict_segmenter", job_name("{arch}")),
    benchmark:
        L.benchmark("predict_segmenter", job_name("{arch}"))
    wildcard_constraints:
        arch="|".join(SEGMENTERS) or "none",
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("predict")["threads"]
    resources:
        mem_mb=resources_of("predict")["mem_mb"],
        runtime=resources_of("predict")["runtime"],
        gpu=resources_of("predict").get("gpu", 0),
    params:
        code=code_of("predict_test.py"),
        size=config["segment"]["size"],
        train=config["train"],
    script:
        "../scripts/predict_test.py"


rule ensemble:
    input:
        classifiers=fold_targets("classify", OOF_CSV),
        segmenters=fold_targets("segment", OOF_IDS),
        segmenter_maps=[
            L.oof_maps(arch, fold, member)
            for arch in SEGMENTERS
            for fold in range(N_FOLDS)
            for member in stage_members("segment")
        ],
        manifest=L.repack_manifest("siim", config["segment"]["size"]),
        stats=L.repack_stats("siim", config["segment"]["size"]),
        classify_stats=L.repack_stats("siim", config["classify"]["size"]),
        index=L.data("siim_index.csv"),
        rle=SIIM_LABELS,
    output:
        ensemble=L.ensemble("ensemble.json"),
        scores=L.ensemble("scores.csv"),
        grid=L.ensemble("threshold_search.csv"),
        images=L.ensemble("oof_images.csv"),
        maps=L.ensemble("oof_blend.h5"),
    log:
        L.log("ensemble", "ensemble"),
    benchmark:
        L.benchmark("ensemble", "ensemble")
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("ensemble")["threads"]
    resources:
        mem_mb=resources_of("ensemble")["mem_mb"],
        runtime=resources_of("ensemble")["runtime"],
    params:
        code=code_of("ensemble.py"),
        ensemble=config["ensemble"],
        classify_archs=list(config["classify"]["archs"]),
        segment_archs=SEGMENTERS,
        n_folds=N_FOLDS,
        kept=stage_members("segment"),
        positive_only=positive_only_archs(),
        size=config["segment"]["size"],
        classify_size=config["classify"]["size"],
        normalisation=NORMALISATION,
        tta=config["train"]["tta"],
    script:
        "../scripts/ensemble.py"


rule submission:
    input:
        ensemble=L.ensemble("ensemble.json"),
        index=L.data("siim_index.csv"),
        classifiers=[L.test_probabilities(arch) for arch in config["classify"]["archs"]],
        segmenter_ids=[L.test_ids(arch) for arch in SEGMENTERS],
        segmenter_maps=segmenter_test_maps(),
    output:
        submission=L.submission,
        details=L.submission_details,
    log:
        L.log("submission", "submission"),
    benchmark:
        L.benchmark("submission", "submission")
    conda:
        "../../envs/ptxseg.yaml"
    threads: 1
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        code=code_of("submission.py"),
        classify_archs=list(config["classify"]["archs"]),
        segment_archs=SEGMENTERS,
        n_folds=N_FOLDS,
    script:
        "../scripts/submission.py"
