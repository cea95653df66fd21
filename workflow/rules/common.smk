# Input functions and helpers shared by all rules, the only Python in the .smk files. Every path
# comes from ptxseg.layout; every rule's params are exactly the config keys its outputs depend on
# (how-it-runs keys, the config's `runtime` section, are read by the scripts and rerun nothing),
# and the hash of the code its script runs (`code_of`).
from pathlib import Path

from ptxseg.code_hash import code_hash
from ptxseg.layout import (
    BASELINE,
    BEST,
    METRICS,
    OOF_CSV,
    OOF_IDS,
    OOF_SUMMARY,
    RESULTS as L,
    SUMMARY,
    ablation_job,
    augsearch_point,
    fold_name,
    job_name,
    model_file,
    oof_maps_file,
    round1_arch,
    round2_name,
)
from ptxseg.data.pseudo_labels import BAND_KEYS
from ptxseg.models.scaled_unet.compound import NAME_PATTERN, source_size
from ptxseg.recipes import (
    ablation_arch,
    ablation_levers,
    lever_recipe,
    lever_train,
    member_names,
    positive_only,
    recipe_for,
    resolution_keys,
    round2_archs,
    segmenter_names,
    segmenter_recipe,
)

# The NIH chain (demo, index, repack, pretraining) gates every pretrained classifier, and with the
# SIIM fingerprints it gates the folds (grouped by NIH patient), so every training: its rules get
# this priority, so it starts before the segmenters take the cores.
NIH_CHAIN_PRIORITY = 10
N_FOLDS = config["folds"]["n_folds"]
# Every segmenter by its results name: segment.archs, then their second rounds where planned.
SEGMENTERS = segmenter_names(config)
ROUND2_ARCHS = round2_archs(config)
# The labels every stage after the index reads: one file in the release's dialect, whatever layout
# the download came in (index_siim writes it).
SIIM_LABELS = L.data("siim_labels.csv")
NORMALISATION = {
    key: config["repack"][key]
    for key in ("normalisation", "clahe_clip_limit", "clahe_tile_grid")
}


def siim_source():
    """Every folder and file the SIIM index reads (SIIM_LAYOUT, found at DAG build): the demo's
    or the user's download."""
    return SIIM_LAYOUT.inputs()


def nih_source():
    if config["data"]["source"] == "demo":
        demo = L.demo("nih")
        return {"images": f"{demo}/images", "labels": f"{demo}/Data_Entry_2017.csv"}
    nih = config["data"]["nih"]
    return {"images": nih["image_dir"], "labels": nih["labels_csv"]}


def resources_of(name):
    """Threads, memory and run time of one rule, its config entry over resources.default."""
    merged = dict(config["resources"]["default"])
    merged.update(config["resources"].get(name, {}))
    return merged


def siim_repack(size):
    """The manifest and stats of one SIIM repack size, as a training or prediction input."""
    return {
        "manifest": L.repack_manifest("siim", size),
        "stats": L.repack_stats("siim", size),
    }


def repacks_of_stages(recipe):
    """The repacks of a segmenter recipe's stages other than segment.size (progressive
    resizing): manifests and stats, in the order of the stage sizes."""
    sizes = sorted({s["size"] for s in recipe["stages"]} - {config["segment"]["size"]})
    return {
        "stage_manifests": [L.repack_manifest("siim", size) for size in sizes],
        "stage_stats": [L.repack_stats("siim", size) for size in sizes],
    }


def stage_repacks(wildcards):
    """The stage repacks of a train_segmenter job's recipe."""
    return repacks_of_stages(recipe_for(config, "segment", wildcards.arch))


def positive_only_archs():
    """Segmenters whose recipe trains on positive images only: the cascade uses their maps only
    behind the gate."""
    return [
        name for name in SEGMENTERS if positive_only(segmenter_recipe(config, name))
    ]


def data_targets():
    return [
        L.data("siim_folds.csv"),
        *[L.repack_stats("siim", size) for size in config["repack"]["sizes"]],
        L.repack_stats("nih", config["repack"]["nih_size"]),
        L.data("nih_pretrain_index.csv"),
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
        return L.model("pretrain", wildcards.arch, None, "best")
    return []


def fold_targets(stage, name):
    """One file of every fold model of the stage's architectures (segmenters: both rounds)."""
    archs = SEGMENTERS if stage == "segment" else config[stage]["archs"]
    return [
        L.fold_file(stage, arch, fold, name)
        for arch in archs
        for fold in range(N_FOLDS)
    ]


def train_targets():
    return (
        [L.pretrain_file(arch, SUMMARY) for arch in config["pretrain"]["archs"]]
        + fold_targets("classify", SUMMARY)
        + fold_targets("segment", SUMMARY)
    )


def ensemble_targets():
    return [L.ensemble("ensemble.json"), L.submission, L.report, L.model_card]


def fold_models(stage, members=None):
    """Every fold's model files of the job's architecture: its ensemble members (what predicts
    the test set) or ``members``."""

    def models(wildcards):
        return [
            L.model(stage, wildcards.arch, fold, member)
            for fold in range(N_FOLDS)
            for member in members or config["ensemble"]["members"][stage]
        ]

    return models


def oof_outputs(stage):
    """The OOF files of every fold of a prediction job's architecture ("{arch}"), which it writes
    beside each fold's models (ptxseg.train.oof): a classifier's oof.csv, a segmenter's map file
    per kept member and oof_ids.csv; oof_summary.json (the members' metrics, the TTA passes).
    """
    folds = range(N_FOLDS)
    summaries = [L.fold_file(stage, "{arch}", fold, OOF_SUMMARY) for fold in folds]
    if stage == "classify":
        return {
            "oof": [L.fold_file(stage, "{arch}", fold, OOF_CSV) for fold in folds],
            "oof_summaries": summaries,
        }
    return {
        "oof_maps": [
            L.oof_maps("{arch}", fold, member)
            for fold in folds
            for member in stage_members(stage)
        ],
        "oof_ids": [L.fold_file(stage, "{arch}", fold, OOF_IDS) for fold in folds],
        "oof_summaries": summaries,
    }


# The keys of `train` that only prediction reads (OOF, test, pseudo-labels): a training job's
# `train` param leaves them out, so changing one reruns the predictions and no training.
INFERENCE_ONLY_TRAIN_KEYS = ("tta",)


def training_numerics(train=None):
    """The `train` section (or a lever's, ``train``) less its inference-only keys: the `train`
    param of every job that trains and predicts nothing."""
    train = config["train"] if train is None else train
    return {k: v for k, v in train.items() if k not in INFERENCE_ONLY_TRAIN_KEYS}


def segmenter_test_maps():
    """Every fold's test maps of every segmenter (what the submission blends)."""
    return [L.test_maps(arch, fold) for arch in SEGMENTERS for fold in range(N_FOLDS)]


def benchmarks_for_report():
    """The benchmark file of every job of `all` before the report (its run-time section)."""
    names = {
        "demo_siim": ["demo_siim"] if config["data"]["source"] == "demo" else [],
        "demo_nih": ["demo_nih"] if config["data"]["source"] == "demo" else [],
        "index_siim": ["index_siim"],
        "folds_siim": ["folds_siim"],
        "repack_siim": [str(size) for size in config["repack"]["sizes"]],
        "fingerprint_siim": ["fingerprint_siim"],
        "index_nih": ["index_nih"],
        "repack_nih": [str(config["repack"]["nih_size"])],
        "exclude_siim_from_nih": ["exclude_siim_from_nih"],
        "pretrain_nih": list(config["pretrain"]["archs"]),
        "train_classifier": fold_job_names("classify"),
        "train_segmenter": fold_job_names("segment"),
        "pseudo_label_nih": pseudo_label_job_names(),
        "train_segmenter_round2": [
            job_name(arch, fold) for arch in ROUND2_ARCHS for fold in range(N_FOLDS)
        ],
        "predict_classifier": list(config["classify"]["archs"]),
        "predict_segmenter": SEGMENTERS,
        "ensemble": ["ensemble"],
        "submission": ["submission"],
    }
    return [L.benchmark(rule, name) for rule, jobs in names.items() for name in jobs]


def pseudo_label_folds():
    """The folds pseudo_label_nih runs for: all, where a second round learns from pseudo-labels."""
    if not ROUND2_ARCHS or config["pseudo_labels"]["mean_teacher"]["enabled"]:
        return []
    return list(range(N_FOLDS))


def pseudo_label_job_names():
    return [fold_name(fold) for fold in pseudo_label_folds()]


def fold_job_names(stage):
    return [
        job_name(arch, fold)
        for arch in config[stage]["archs"]
        for fold in range(N_FOLDS)
    ]


def scaling_candidates():
    """B0 and the grid's distinct networks whose measured FLOPs meet the constraint. Screening
    measures FLOPs with torch (seconds), so it is imported here, called only from the input
    functions of the scaling rules: a DAG without a scaling target never loads torch."""
    from ptxseg.models.scaled_unet.search import screen_config

    return ["b0"] + [
        candidate.name for candidate in screen_config(config["scaling"])[0]
    ]


def scaling_rows(wildcards):
    """Every scaling candidate's row.json: B0 and the screened grid."""
    return [L.scaling_candidate(name, "row.json") for name in scaling_candidates()]


def scaling_repack(wildcards):
    """The repack a scaling candidate reads: the smallest of repack.sizes at least its resolution."""
    from ptxseg.models.scaled_unet.search import find_candidate

    candidate, phi = find_candidate(wildcards.candidate, config["scaling"])
    resolution = candidate.scaled(phi, config["scaling"]["base_resolution"])[2]
    return siim_repack(source_size(resolution, config["repack"]["sizes"]))


def augsearch_arch():
    """The segmenter the RandAugment search trains: augsearch.arch, or the first of segment.archs."""
    return config["augsearch"]["arch"] or next(iter(config["segment"]["archs"]))


def augsearch_points():
    """Every (n, m) point of the RandAugment search's grid, by name (n<N>_m<M>)."""
    search = config["augsearch"]
    return [augsearch_point(n, m) for n in search["n"] for m in search["m"]]


def augsearch_stage_repacks():
    """The stage repacks of the searched segmenter's recipe: every point trains its stages."""
    return repacks_of_stages(augsearch_arch_params()["recipe"])


def augsearch_arch_params():
    """The searched segmenter's weights, options and segment recipe, less its augmentation (which
    every point replaces with its own RandAugment policy, so it changes no result)."""
    arch = augsearch_arch()
    entry = config["segment"]["archs"][arch]
    recipe = recipe_for(config, "segment", arch)
    return {
        "name": arch,
        "weights": entry.get("weights", config["pretrain"]["weights"]),
        "options": entry.get("options", {}),
        "recipe": {key: value for key, value in recipe.items() if key != "augment"},
    }


def trained_levers():
    """The ablation's levers that train (all but the baseline, whose folds are the stage's)."""
    return [lever for lever in ablation_levers(config) if lever != BASELINE]


def lever_arch_params(wildcards):
    """The ablated segmenter's weights and options (as train_segmenter's), and the lever's recipe
    (the stage's recipe for it with the lever's overrides)."""
    return {
        **arch_params("segment")(wildcards),
        "recipe": lever_recipe(config, wildcards.lever),
    }


def lever_train_params(wildcards):
    """The `train` section with the lever's TTA where it has one (its prediction's param)."""
    return lever_train(config, wildcards.lever)


def lever_models(wildcards):
    """Every fold's kept models of a lever (what predict_ablation predicts the OOF maps of)."""
    return [
        L.ablation_model(wildcards.lever, wildcards.arch, fold, member)
        for fold in range(N_FOLDS)
        for member in stage_members("segment")
    ]


def lever_tta(wildcards):
    return lever_train(config, wildcards.lever)["tta"]


def lever_stage_repacks(wildcards):
    """The stage repacks of a lever's recipe."""
    return repacks_of_stages(lever_recipe(config, wildcards.lever))


def lever_segmenter_files(wildcards):
    """The OOF image orders and maps of the lever's fold jobs (the baseline's: the segment
    stage's own fold jobs of the ablated architecture); the stage's members, which a lever's
    recipe override cannot change."""
    lever, arch = wildcards.lever, ablation_arch(config)
    folders = [L.ablation_segmenter_dir(lever, arch, fold) for fold in range(N_FOLDS)]
    return {
        "segmenters": [
            L.ablation_segmenter_file(lever, arch, fold, OOF_IDS)
            for fold in range(N_FOLDS)
        ],
        "segmenter_maps": [
            oof_maps_file(folder, member)
            for folder in folders
            for member in stage_members("segment")
        ],
    }


def lever_positive_only(wildcards):
    """[arch] where the lever's recipe trains on positive images only (masks behind the gate)."""
    return (
        [ablation_arch(config)]
        if positive_only(lever_recipe(config, wildcards.lever))
        else []
    )


def ablation_summary_inputs():
    """What the summary reads of every lever: its search's results and its fold jobs'
    benchmarks (the baseline's: the segment stage's train_segmenter jobs)."""
    levers, arch = ablation_levers(config), ablation_arch(config)
    files = {
        "ensembles": "ensemble.json",
        "scores": "scores.csv",
        "images": "oof_images.csv",
    }
    return {
        key: [L.ablation_ensemble(lever, name) for lever in levers]
        for key, name in files.items()
    } | {
        "benchmarks": [
            L.ablation_benchmark(lever, arch, fold)
            for lever in levers
            for fold in range(N_FOLDS)
        ]
    }


def first_round_models(stage):
    """Fold k's kept members of every architecture of the stage (pseudo_label_nih's models)."""

    def models(wildcards):
        return [
            L.model(stage, arch, wildcards.fold, member)
            for arch in config[stage]["archs"]
            for member in config["ensemble"]["members"][stage]
        ]

    return models


def round2_inputs(wildcards):
    """A second-round job's NIH inputs: the candidates' repack, the fold's pseudo-labels (not for
    a mean teacher) and the first-round model it starts from (init round1)."""
    pseudo, size = config["pseudo_labels"], config["segment"]["size"]
    inputs = {"candidates": L.repack_manifest("nih_candidates", size)}
    if not pseudo["mean_teacher"]["enabled"]:
        inputs["labels"] = L.pseudo_label_file(wildcards.fold, "labels.csv")
    if pseudo["init"] == "round1":
        inputs["init"] = L.model("segment", wildcards.arch, wildcards.fold, BEST)
    return inputs


def round2_stage_repacks(wildcards):
    """The stage repacks of a second round's recipe."""
    return repacks_of_stages(segmenter_recipe(config, round2_name(wildcards.arch)))


def round2_arch_params(wildcards):
    """A second round's weights, options and recipe: the architecture's, with the round's recipe."""
    return {
        **arch_params("segment")(wildcards),
        "recipe": segmenter_recipe(config, round2_name(wildcards.arch)),
    }


def pseudo_label_bands():
    """The pseudo_labels keys the labelling reads: its bands and its cascade (ptxseg's Bands)."""
    pseudo = config["pseudo_labels"]
    return {key: pseudo[key] for key in BAND_KEYS}


def pseudo_label_numerics():
    """pseudo_label_nih's `train` param: the training numerics with the pseudo-labelling's own TTA
    (pseudo_labels.tta: the second round's training data, not train.tta's predictions).
    """
    return {**training_numerics(), "tta": config["pseudo_labels"]["tta"]}


def round2_params():
    """The pseudo_labels keys the second round's training reads (the rest shape its inputs)."""
    pseudo = config["pseudo_labels"]
    return {key: pseudo[key] for key in ("batch_share", "init", "mean_teacher")}


def code_of(script):
    """A rule's `code` param: the hash of its script and of the package modules it imports
    (ptxseg.code_hash), so an edit of that code reruns the rule's jobs and a touched file does not
    (profiles/default leaves out Snakemake's mtime-based code trigger)."""
    return code_hash(Path(workflow.basedir) / "workflow" / "scripts" / script)
