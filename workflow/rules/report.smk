# The report: one self-contained HTML page of the whole run (data, training, OOF scores, blend,
# threshold search, example predictions, run times). `snakemake --cores all results/report.html`.
# It declares every file it reads, so that it reruns whenever one of them changes.


rule report:
    input:
        submission=L.submission,
        ensemble=L.ensemble("ensemble.json"),
        scores=L.ensemble("scores.csv"),
        grid=L.ensemble("threshold_search.csv"),
        images=L.ensemble("oof_images.csv"),
        maps=L.ensemble("oof_blend.h5"),
        index=L.data("siim_index.csv"),
        rejects=L.data("siim_rejects.csv"),
        folds=L.data("siim_folds.csv"),
        nih=L.data("nih_index.csv"),
        nih_pretrain=L.data("nih_pretrain_index.csv"),
        overlap=L.data("nih_siim_overlap.csv"),
        stats=[L.repack_stats("siim", size) for size in config["repack"]["sizes"]],
        manifests=[
            L.repack_manifest("siim", size)
            for size in sorted({*config["repack"]["sizes"], config["segment"]["size"]})
        ],
        metrics=[
            L.pretrain_file(arch, METRICS) for arch in config["pretrain"]["archs"]
        ]
        + fold_targets("classify", METRICS)
        + fold_targets("segment", METRICS),
        benchmarks=benchmarks_for_report(),
        pseudo_labels=[
            L.pseudo_label_file(fold, SUMMARY) for fold in pseudo_label_folds()
        ],
    output:
        html=L.report,
    log:
        L.log("report", "report"),
    benchmark:
        L.benchmark("report", "report")
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        code=code_of("report.py"),
    script:
        "../scripts/report.py"


# The model card: intended use, training data, recipe, OOF scores per fold, calibration, second
# round and the limits of what was measured, in Markdown. Every number on it is read from the
# files it declares (`ptxseg.report.model_card`).
rule model_card:
    input:
        ensemble=L.ensemble("ensemble.json"),
        scores=L.ensemble("scores.csv"),
        images=L.ensemble("oof_images.csv"),
        index=L.data("siim_index.csv"),
        rejects=L.data("siim_rejects.csv"),
        folds=L.data("siim_folds.csv"),
        nih=L.data("nih_index.csv"),
        nih_pretrain=L.data("nih_pretrain_index.csv"),
        overlap=L.data("nih_siim_overlap.csv"),
        summaries=[
            L.pretrain_file(arch, SUMMARY) for arch in config["pretrain"]["archs"]
        ]
        + fold_targets("classify", SUMMARY)
        + fold_targets("segment", SUMMARY),
        pseudo_labels=[
            L.pseudo_label_file(fold, SUMMARY) for fold in pseudo_label_folds()
        ],
    output:
        md=L.model_card,
    log:
        L.log("model_card", "model_card"),
    benchmark:
        L.benchmark("model_card", "model_card")
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        code=code_of("model_card.py"),
        demo=config["data"]["source"] == "demo",
    script:
        "../scripts/model_card.py"
