# The winners' levers of SIIM-ACR, each switched on alone against one baseline. Target:
# results/ablation/summary.csv (not part of 'all'). Every lever but the baseline trains the
# ablated segmenter (ablation.arch) on every fold, one job per (lever, fold), with the segment
# recipe and the lever's overrides, and predicts its OOF maps in one job per lever with the
# lever's TTA (predict_ablation); one search per lever (the baseline's reads the segment stage's
# own folds of that architecture, the same recipe, not trained again) scores its cascade with the
# stage's classifiers on OOF; the summary compares them.


rule ablation_fold:
    input:
        unpack(lever_stage_repacks),
        **siim_repack(config["segment"]["size"]),
        folds=L.data("siim_folds.csv"),
    output:
        models=expand(
            L.ablation_model("{{lever}}", "{{arch}}", "{{fold}}", "{member}"),
            member=stage_members("segment"),
        ),
        metrics=L.ablation_fold_file("{lever}", "{arch}", "{fold}", METRICS),
        summary=L.ablation_fold_file("{lever}", "{arch}", "{fold}", SUMMARY),
    log:
        L.log("ablation_fold", ablation_job("{lever}", "{arch}", "{fold}")),
    benchmark:
        L.ablation_benchmark("{lever}", "{arch}", "{fold}")
    wildcard_constraints:
        lever="|".join(trained_levers()) or "(?!)",
        arch=ablation_arch(config),
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
        arch=lever_arch_params,
        size=config["segment"]["size"],
        seed=config["seed"],
        # A lever's TTA is its prediction's (predict_ablation), as train.tta is predict_segmenter's.
        train=training_numerics(),
        state=L.ablation_state("{lever}", "{arch}", "{fold}"),
    script:
        "../scripts/train_fold.py"  # train_segmenter's script: the lever's recipe in params


# Every fold's OOF predictions of a lever's models, with the lever's TTA where it has one (else
# train.tta), as predict_segmenter writes the stage's (no test set: the ablation scores OOF).
rule predict_ablation:
    input:
        **siim_repack(config["segment"]["size"]),
        folds=L.data("siim_folds.csv"),
        kept=lever_models,
    output:
        oof_maps=[
            L.ablation_oof_maps("{lever}", "{arch}", fold, member)
            for fold in range(N_FOLDS)
            for member in stage_members("segment")
        ],
        oof_ids=[
            L.ablation_fold_file("{lever}", "{arch}", fold, OOF_IDS)
            for fold in range(N_FOLDS)
        ],
        oof_summaries=[
            L.ablation_fold_file("{lever}", "{arch}", fold, OOF_SUMMARY)
            for fold in range(N_FOLDS)
        ],
    log:
        L.log("predict_ablation", "{lever}_{arch}"),
    benchmark:
        L.benchmark("predict_ablation", "{lever}_{arch}")
    wildcard_constraints:
        lever="|".join(trained_levers()) or "(?!)",
        arch=ablation_arch(config),
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
        train=lever_train_params,
    script:
        "../scripts/predict_test.py"


rule ablation_search:
    input:
        unpack(lever_segmenter_files),
        classifiers=fold_targets("classify", OOF_CSV),
        manifest=L.repack_manifest("siim", config["segment"]["size"]),
        stats=L.repack_stats("siim", config["segment"]["size"]),
        classify_stats=L.repack_stats("siim", config["classify"]["size"]),
        index=L.data("siim_index.csv"),
        rle=SIIM_LABELS,
    output:
        ensemble=L.ablation_ensemble("{lever}", "ensemble.json"),
        scores=L.ablation_ensemble("{lever}", "scores.csv"),
        grid=L.ablation_ensemble("{lever}", "threshold_search.csv"),
        images=L.ablation_ensemble("{lever}", "oof_images.csv"),
        maps=L.ablation_ensemble("{lever}", "oof_blend.h5"),
    log:
        L.log("ablation_search", "{lever}"),
    benchmark:
        L.benchmark("ablation_search", "{lever}")
    wildcard_constraints:
        lever="|".join(ablation_levers(config)),
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("ensemble")["threads"]
    resources:
        mem_mb=resources_of("ensemble")["mem_mb"],
        runtime=resources_of("ensemble")["runtime"],
    params:
        code=code_of("ablation_search.py"),
        ensemble=config["ensemble"],
        classify_archs=list(config["classify"]["archs"]),
        arch=ablation_arch(config),
        n_folds=N_FOLDS,
        kept=stage_members("segment"),
        positive_only=lever_positive_only,
        size=config["segment"]["size"],
        classify_size=config["classify"]["size"],
        normalisation=NORMALISATION,
        tta=lever_tta,
    script:
        "../scripts/ablation_search.py"


rule ablation_summary:
    input:
        **ablation_summary_inputs(),
    output:
        summary=L.ablation("summary.csv"),
        report=L.ablation("report.html"),
    log:
        L.log("ablation_summary", "ablation_summary"),
    benchmark:
        L.benchmark("ablation_summary", "ablation_summary")
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        code=code_of("ablation_summary.py"),
        levers=ablation_levers(config),
        overrides=config["ablation"]["levers"],
        arch=ablation_arch(config),
        n_folds=N_FOLDS,
    script:
        "../scripts/ablation_summary.py"
