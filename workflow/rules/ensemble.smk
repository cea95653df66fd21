# Ensemble: test-set predictions per architecture (every fold model), blending weights and
# cascade thresholds searched on out-of-fold predictions, and the submission.


rule predict_classifier:
    input:
        models=fold_models("classify"),
        manifest="results/repack/siim/manifest.csv",
        stats="results/repack/siim/stats.json",
    output:
        probabilities="results/predict/classify/{arch}/test.csv",
    log:
        "results/logs/predict_classifier/{arch}.log",
    benchmark:
        "results/benchmarks/predict_classifier/{arch}.tsv"
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
        size=config["classify"]["size"],
        runtime=config["train"],
        members=config["ensemble"]["members"]["classify"],
    script:
        "../scripts/predict_test.py"


rule predict_segmenter:
    input:
        models=fold_models("segment"),
        manifest="results/repack/siim/manifest.csv",
        stats="results/repack/siim/stats.json",
    output:
        maps=expand(
            "results/predict/segment/{{arch}}/fold{fold}.h5",
            fold=range(config["folds"]["n_folds"]),
        ),
        ids="results/predict/segment/{arch}/ids.csv",
    log:
        "results/logs/predict_segmenter/{arch}.log",
    benchmark:
        "results/benchmarks/predict_segmenter/{arch}.tsv"
    wildcard_constraints:
        arch="|".join(config["segment"]["archs"]) or "none",
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("predict")["threads"]
    resources:
        mem_mb=resources_of("predict")["mem_mb"],
        runtime=resources_of("predict")["runtime"],
        gpu=resources_of("predict").get("gpu", 0),
    params:
        size=config["segment"]["size"],
        runtime=config["train"],
        members=config["ensemble"]["members"]["segment"],
    script:
        "../scripts/predict_test.py"


rule ensemble:
    input:
        classifiers=fold_targets("classify", "classify", "oof.csv"),
        segmenters=fold_targets("segment", "segment", "summary.json"),
        manifest="results/repack/siim/manifest.csv",
        stats="results/repack/siim/stats.json",
        index="results/data/siim_index.csv",
        rle=siim_source()["rle"],
    output:
        ensemble="results/ensemble/ensemble.json",
        scores="results/ensemble/scores.csv",
        grid="results/ensemble/threshold_search.csv",
        images="results/ensemble/oof_images.csv",
        maps="results/ensemble/oof_blend.h5",
    log:
        "results/logs/ensemble/ensemble.log",
    benchmark:
        "results/benchmarks/ensemble/ensemble.tsv"
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("ensemble")["threads"]
    resources:
        mem_mb=resources_of("ensemble")["mem_mb"],
        runtime=resources_of("ensemble")["runtime"],
    params:
        ensemble=config["ensemble"],
        classify_archs=list(config["classify"]["archs"]),
        segment_archs=list(config["segment"]["archs"]),
        n_folds=config["folds"]["n_folds"],
        size=config["segment"]["size"],
        classify_size=config["classify"]["size"],
        repack=config["repack"],
        tta=config["train"]["tta"],
    script:
        "../scripts/ensemble.py"


rule submission:
    input:
        ensemble="results/ensemble/ensemble.json",
        index="results/data/siim_index.csv",
        classifiers=expand(
            "results/predict/classify/{arch}/test.csv",
            arch=list(config["classify"]["archs"]),
        ),
        segmenters=expand(
            "results/predict/segment/{arch}/ids.csv",
            arch=list(config["segment"]["archs"]),
        ),
    output:
        submission="results/submission.csv",
    log:
        "results/logs/submission/submission.log",
    benchmark:
        "results/benchmarks/submission/submission.tsv"
    conda:
        "../../envs/ptxseg.yaml"
    threads: 1
    resources:
        mem_mb=resources_of("ensemble")["mem_mb"],
        runtime=resources_of("ensemble")["runtime"],
    params:
        n_folds=config["folds"]["n_folds"],
    script:
        "../scripts/submission.py"
