# Data stages: demo data (when data.source is 'demo'), indexes, repacked PNGs, folds.


rule demo_siim:
    output:
        train=directory(f"{L.demo('siim')}/dicom-images-train"),
        test=directory(f"{L.demo('siim')}/dicom-images-test"),
        rle=f"{L.demo('siim')}/train-rle.csv",
        test_rle=f"{L.demo('siim')}/test-rle.csv",
    log:
        L.log("demo_siim", "demo_siim"),
    benchmark:
        L.benchmark("demo_siim", "demo_siim")
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("demo")["threads"]
    resources:
        mem_mb=resources_of("demo")["mem_mb"],
        runtime=resources_of("demo")["runtime"],
    params:
        code=code_of("demo_siim.py"),
        demo=config["data"]["demo"],
        seed=config["seed"],
    script:
        "../scripts/demo_siim.py"


rule demo_nih:
    output:
        images=directory(f"{L.demo('nih')}/images"),
        labels=f"{L.demo('nih')}/Data_Entry_2017.csv",
        # Which NIH images are copies of SIIM images: the answer key of exclude_siim_from_nih.
        copies=f"{L.demo('nih')}/siim_copies.csv",
    log:
        L.log("demo_nih", "demo_nih"),
    benchmark:
        L.benchmark("demo_nih", "demo_nih")
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("demo")["threads"]
    resources:
        mem_mb=resources_of("demo")["mem_mb"],
        runtime=resources_of("demo")["runtime"],
    params:
        code=code_of("demo_nih.py"),
        demo=config["data"]["demo"],
        seed=config["seed"],
    script:
        "../scripts/demo_nih.py"


rule index_siim:
    input:
        **siim_source(),
    output:
        index=L.data("siim_index.csv"),
        # The train labels in the release's dialect, whatever the layout, and where they came from.
        labels=SIIM_LABELS,
        labels_origin=L.data("siim_labels.json"),
    log:
        # A log, not an output: Snakemake keeps it when the job fails on rejects.
        rejects=L.data("siim_rejects.csv"),
        log=L.log("index_siim", "index_siim"),
    benchmark:
        L.benchmark("index_siim", "index_siim")
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("index")["threads"]
    resources:
        mem_mb=resources_of("index")["mem_mb"],
        runtime=resources_of("index")["runtime"],
    params:
        code=code_of("index_siim.py"),
        layout=SIIM_LAYOUT.to_dict(),
        stop_on_rejects=config["data"]["stop_on_rejects"],
    script:
        "../scripts/index_siim.py"


# Grouped by the NIH patient each SIIM image's content matches (SIIM re-anonymised its PatientIDs
# per image): the folds wait for the overlap, which needs SIIM fingerprints, never the folds.
rule folds_siim:
    input:
        index=L.data("siim_index.csv"),
        overlap=L.data("nih_siim_overlap.csv"),
    output:
        folds=L.data("siim_folds.csv"),
        # How many SIIM images share a patient, and how many took it from NIH.
        summary=L.data("siim_folds_summary.json"),
    log:
        L.log("folds_siim", "folds_siim"),
    benchmark:
        L.benchmark("folds_siim", "folds_siim")
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("default")["mem_mb"],
        runtime=resources_of("default")["runtime"],
    params:
        code=code_of("folds_siim.py"),
        folds=config["folds"],
        seed=config["seed"],
    script:
        "../scripts/folds_siim.py"


# One job per size: adding a size repacks that size and nothing else.
rule repack_siim:
    input:
        index=L.data("siim_index.csv"),
        rle=SIIM_LABELS,
    output:
        images=directory(L.repack_images("siim", "{size}")),
        manifest=L.repack_manifest("siim", "{size}"),
        stats=L.repack_stats("siim", "{size}"),
    log:
        L.log("repack_siim", "{size}"),
    benchmark:
        L.benchmark("repack_siim", "{size}")
    wildcard_constraints:
        size=r"\d+",
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("repack")["threads"]
    resources:
        mem_mb=resources_of("repack")["mem_mb"],
        runtime=resources_of("repack")["runtime"],
    params:
        code=code_of("repack_siim.py"),
        normalisation=NORMALISATION,
    script:
        "../scripts/repack_siim.py"


# Content fingerprints of the SIIM DICOMs (train and test), to find them among the NIH images.
rule fingerprint_siim:
    input:
        index=L.data("siim_index.csv"),
    output:
        fingerprints=L.fingerprints("siim"),
    log:
        L.log("fingerprint_siim", "fingerprint_siim"),
    benchmark:
        L.benchmark("fingerprint_siim", "fingerprint_siim")
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("repack")["threads"]
    resources:
        mem_mb=resources_of("repack")["mem_mb"],
        runtime=resources_of("repack")["runtime"],
    params:
        code=code_of("fingerprint_siim.py"),
    script:
        "../scripts/fingerprint_siim.py"


rule index_nih:
    input:
        **nih_source(),
    output:
        index=L.data("nih_index.csv"),
    log:
        rejects=L.data("nih_rejects.csv"),
        log=L.log("index_nih", "index_nih"),
    benchmark:
        L.benchmark("index_nih", "index_nih")
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    resources:
        mem_mb=resources_of("index")["mem_mb"],
        runtime=resources_of("index")["runtime"],
    params:
        code=code_of("index_nih.py"),
        val_fraction=config["nih_split"]["val_fraction"],
        seed=config["seed"],
        stop_on_rejects=config["data"]["stop_on_rejects"],
    script:
        "../scripts/index_nih.py"


rule repack_nih:
    input:
        index=L.data("nih_index.csv"),
    output:
        images=directory(L.repack_images("nih", config["repack"]["nih_size"])),
        manifest=L.repack_manifest("nih", config["repack"]["nih_size"]),
        stats=L.repack_stats("nih", config["repack"]["nih_size"]),
        fingerprints=L.fingerprints("nih"),
    log:
        L.log("repack_nih", str(config["repack"]["nih_size"])),
    benchmark:
        L.benchmark("repack_nih", str(config["repack"]["nih_size"]))
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("repack")["threads"]
    resources:
        mem_mb=resources_of("repack")["mem_mb"],
        runtime=resources_of("repack")["runtime"],
    params:
        code=code_of("repack_nih.py"),
        size=config["repack"]["nih_size"],
        normalisation=NORMALISATION,
    script:
        "../scripts/repack_nih.py"


# NIH images that are SIIM images (train or test), matched by content, leave the pretraining set.
rule exclude_siim_from_nih:
    input:
        index=L.data("nih_index.csv"),
        nih=L.fingerprints("nih"),
        siim=L.fingerprints("siim"),
    output:
        overlap=L.data("nih_siim_overlap.csv"),
        index=L.data("nih_pretrain_index.csv"),
    log:
        L.log("exclude_siim_from_nih", "exclude_siim_from_nih"),
    benchmark:
        L.benchmark("exclude_siim_from_nih", "exclude_siim_from_nih")
    priority: NIH_CHAIN_PRIORITY
    conda:
        "../../envs/ptxseg.yaml"
    threads: resources_of("index")["threads"]
    resources:
        mem_mb=resources_of("index")["mem_mb"],
        runtime=resources_of("index")["runtime"],
    params:
        code=code_of("exclude_siim_from_nih.py"),
    script:
        "../scripts/exclude_siim_from_nih.py"
