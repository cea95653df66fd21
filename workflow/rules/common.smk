# Input functions and helpers shared by all rules, the only Python in the .smk files.
from ptxseg.recipes import member_names, recipe_for

DEMO = "results/demo"
# The NIH chain (demo, index, repack, pretraining) gates every pretrained classifier: its rules
# get this priority, so it starts before the segmenters take the cores.
NIH_CHAIN_PRIORITY = 10


def siim_source():
    """Paths of the SIIM train/test DICOM folders and label file: the demo's or the user's."""
    if config["data"]["source"] == "demo":
        return {
            "train": f"{DEMO}/siim/dicom-images-train",
            "test": f"{DEMO}/siim/dicom-images-test",
            "rle": f"{DEMO}/siim/train-rle.csv",
        }
    siim = config["data"]["siim"]
    return {
        "train": siim["train_dicom_dir"],
        "test": siim["test_dicom_dir"],
        "rle": siim["train_rle_csv"],
    }


def nih_source():
    if config["data"]["source"] == "demo":
        return {
            "images": f"{DEMO}/nih/images",
            "labels": f"{DEMO}/nih/Data_Entry_2017.csv",
        }
    nih = config["data"]["nih"]
    return {"images": nih["image_dir"], "labels": nih["labels_csv"]}


def resources_of(name):
    """Threads, memory and run time of one rule, its config entry over resources.default."""
    merged = dict(config["resources"]["default"])
    merged.update(config["resources"].get(name, {}))
    return merged


def data_targets():
    return [
        "results/data/siim_folds.csv",
        "results/repack/siim/stats.json",
        "results/repack/nih/stats.json",
        "results/data/nih_pretrain_index.csv",
    ]


def stage_members(stage):
    """Model files a fold job of the stage keeps (best, swa, snapshot<k>): the stage's recipe decides."""
    return member_names(config[stage]["recipe"])


def arch_params(stage):
    """Per-architecture params (weights, options, recipe), looked up from the job's wildcards."""

    def params(wildcards):
        entry = config[stage]["archs"][wildcards.arch] if stage != "pretrain" else {}
        return {
            "weights": entry.get("weights", config["pretrain"]["weights"]),
            "options": entry.get("options", {}),
            "recipe": recipe_for(config, stage, wildcards.arch),
        }

    return params


def classifier_init(wildcards):
    """The NIH-pretrained weights a classifier starts from, when its config says 'nih'."""
    if config["classify"]["archs"][wildcards.arch]["weights"] == "nih":
        return f"results/pretrain/{wildcards.arch}/model_best.pt"
    return []


def fold_targets(stage, kind_dir, outputs):
    return expand(
        f"results/{kind_dir}/{{arch}}/fold{{fold}}/{outputs}",
        arch=list(config[stage]["archs"]),
        fold=range(config["folds"]["n_folds"]),
    )


def train_targets():
    return (
        expand("results/pretrain/{arch}/summary.json", arch=config["pretrain"]["archs"])
        + fold_targets("classify", "classify", "summary.json")
        + fold_targets("segment", "segment", "summary.json")
    )


def ensemble_targets():
    return [
        "results/ensemble/ensemble.json",
        "results/submission.csv",
        "results/report.html",
    ]


def fold_models(stage):
    """Every kept model file of every fold of the job's architecture."""
    kind_dir = {"classify": "classify", "segment": "segment"}[stage]

    def models(wildcards):
        return expand(
            f"results/{kind_dir}/{wildcards.arch}/fold{{fold}}/model_{{member}}.pt",
            fold=range(config["folds"]["n_folds"]),
            member=config["ensemble"]["members"][stage],
        )

    return models


def scaling_candidates():
    """B0 and the grid points that meet the FLOPs constraint (ptxseg.scaling, without torch)."""
    from ptxseg.scaling import candidates

    scaling = config["scaling"]
    grid = candidates(scaling["grid"], scaling["target"], scaling["tolerance"])
    return ["b0"] + [candidate.name for candidate in grid]
