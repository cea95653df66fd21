# Data stages: demo data (when data.source is 'demo'), indexes, repacked PNGs, folds.


rule demo_siim:
    output:
        train=directory(f"{DEMO}/siim/dicom-images-train"),
        test=directory(f"{DEMO}/siim/dicom-images-test"),
        rle=f"{DEMO}/siim/train-rle.csv",
        test_rle=f"{DEMO}/siim/test-rle.csv",
    log:
        "results/logs/demo_siim/demo_siim.log",
    benchmark:
        "results/benchmarks/demo_siim/demo_siim.tsv"
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("demo")["threads"]
    resources:
        mem_mb=resources_of("demo")["mem_mb"],
        runtime=resources_of("demo")["runtime"],
    params:
        demo=config["data"]["demo"],
        seed=config["seed"],
    script:
        "../scripts/demo_siim.py"


rule demo_nih:
    output:
        images=directory(f"{DEMO}/nih/images"),
        labels=f"{DEMO}/nih/Data_Entry_2017.csv",
        # Which NIH images are copies of SIIM images: the answer key of exclude_siim_from_nih.
        copies=f"{DEMO}/nih/siim_copies.csv",
    log:
        "results/logs/demo_nih/demo_nih.log",
    benchmark:
        "results/benchmarks/demo_nih/demo_nih.tsv"
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("demo")["threads"]
    resources:
        mem_mb=resources_of("demo")["mem_mb"],
        runtime=resources_of("demo")["runtime"],
    params:
        demo=config["data"]["demo"],
        seed=config["seed"],
    script:
        "../scripts/demo_nih.py"


rule index_siim:
    input:
        **siim_source(),
    output:
        index="results/data/siim_index.csv",
    log:
        # A log, not an output: Snakemake keeps it when the job fails on rejects.
        rejects="results/data/siim_rejects.csv",
        log="results/logs/index_siim/index_siim.log",
    benchmark:
        "results/benchmarks/index_siim/index_siim.tsv"
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("index")["threads"]
    resources:
        mem_mb=resources_of("index")["mem_mb"],
        runtime=resources_of("index")["runtime"],
    params:
        stop_on_rejects=config["data"]["stop_on_rejects"],
    script:
        "../scripts/index_siim.py"


rule folds_siim:
    input:
        index="results/data/siim_index.csv",
    output:
        folds="results/data/siim_folds.csv",
    log:
        "results/logs/folds_siim/folds_siim.log",
    benchmark:
        "results/benchmarks/folds_siim/folds_siim.tsv"
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        folds=config["folds"],
        seed=config["seed"],
    script:
        "../scripts/folds_siim.py"


rule repack_siim:
    input:
        index="results/data/siim_index.csv",
        rle=siim_source()["rle"],
    output:
        images=directory(
            expand("results/repack/siim/{size}", size=config["repack"]["sizes"])
        ),
        manifest="results/repack/siim/manifest.csv",
        stats="results/repack/siim/stats.json",
        fingerprints="results/repack/siim/fingerprints.npy",
    log:
        "results/logs/repack_siim/repack_siim.log",
    benchmark:
        "results/benchmarks/repack_siim/repack_siim.tsv"
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("repack")["threads"]
    resources:
        mem_mb=resources_of("repack")["mem_mb"],
        runtime=resources_of("repack")["runtime"],
    params:
        repack=config["repack"],
    script:
        "../scripts/repack_siim.py"


rule index_nih:
    input:
        **nih_source(),
    output:
        index="results/data/nih_index.csv",
    log:
        rejects="results/data/nih_rejects.csv",
        log="results/logs/index_nih/index_nih.log",
    benchmark:
        "results/benchmarks/index_nih/index_nih.tsv"
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("index")["mem_mb"],
        runtime=resources_of("index")["runtime"],
    params:
        val_fraction=config["nih_split"]["val_fraction"],
        seed=config["seed"],
        stop_on_rejects=config["data"]["stop_on_rejects"],
    script:
        "../scripts/index_nih.py"


rule repack_nih:
    input:
        index="results/data/nih_index.csv",
    output:
        images=directory(f"results/repack/nih/{config['repack']['nih_size']}"),
        manifest="results/repack/nih/manifest.csv",
        stats="results/repack/nih/stats.json",
        fingerprints="results/repack/nih/fingerprints.npy",
    log:
        "results/logs/repack_nih/repack_nih.log",
    benchmark:
        "results/benchmarks/repack_nih/repack_nih.tsv"
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("repack")["threads"]
    resources:
        mem_mb=resources_of("repack")["mem_mb"],
        runtime=resources_of("repack")["runtime"],
    params:
        repack=config["repack"],
    script:
        "../scripts/repack_nih.py"


# NIH images that are SIIM images (train or test), matched by content, leave the pretraining set.
rule exclude_siim_from_nih:
    input:
        index="results/data/nih_index.csv",
        nih="results/repack/nih/fingerprints.npy",
        siim="results/repack/siim/fingerprints.npy",
    output:
        overlap="results/data/nih_siim_overlap.csv",
        index="results/data/nih_pretrain_index.csv",
    log:
        "results/logs/exclude_siim_from_nih/exclude_siim_from_nih.log",
    benchmark:
        "results/benchmarks/exclude_siim_from_nih/exclude_siim_from_nih.tsv"
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("index")["threads"]
    resources:
        mem_mb=resources_of("index")["mem_mb"],
        runtime=resources_of("index")["runtime"],
    script:
        "../scripts/exclude_siim_from_nih.py"
