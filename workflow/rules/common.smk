# Input functions and helpers shared by all rules, the only Python in the .smk files.
DEMO = "results/demo"


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
    ]
