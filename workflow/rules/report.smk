# The report: one self-contained HTML page of the whole run (data, training, OOF scores, blend,
# threshold search, example predictions, run times). `snakemake --cores all results/report.html`.


rule report:
    input:
        submission="results/submission.csv",
        ensemble="results/ensemble/ensemble.json",
        images="results/ensemble/oof_images.csv",
        maps="results/ensemble/oof_blend.h5",
        scores="results/ensemble/scores.csv",
        folds="results/data/siim_folds.csv",
        nih="results/data/nih_index.csv",
        nih_pretrain="results/data/nih_pretrain_index.csv",
        overlap="results/data/nih_siim_overlap.csv",
        pretrain=expand(
            "results/pretrain/{arch}/summary.json", arch=config["pretrain"]["archs"]
        ),
    output:
        html="results/report.html",
    log:
        "results/logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        # The results folder, derived from the output so that the rule works from any folder.
        results=lambda wildcards, output: os.path.dirname(output.html),
    script:
        "../scripts/report.py"
