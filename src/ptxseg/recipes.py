"""Recipes: a stage's training recipe with an architecture's overrides, and the models a run keeps.

Plain dictionaries, no torch: the Snakefile uses these to name each training job's outputs.
"""

from __future__ import annotations

import copy

from ptxseg.layout import BASELINE, BEST, EMA, SWA, round1_arch, round2_name, snapshot_member


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "augment":
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def merge_recipe(base: dict, override: dict) -> dict:
    """``override``'s recipe keys over ``base``'s (`deep_merge`). A peak rate the override writes
    (optimiser.lr) beats a batch rule from the base (optimiser.lr_per_256, the EfficientNet
    preset's), and a schedule it renames drops the base's schedule.reference_epochs (the
    exponential schedule's): the more specific key wins, as for every other key."""
    merged = deep_merge(base, override)
    written = override.get("optimiser") or {}
    if "lr" in written and "lr_per_256" not in written and "optimiser" in merged:
        merged["optimiser"]["lr_per_256"] = None
    # The same for the exponential schedule's epoch scale: a schedule renamed is counted as written.
    schedule = override.get("schedule") or {}
    renamed = schedule.get("name", "exponential") != "exponential"
    if renamed and "reference_epochs" not in schedule:
        merged["schedule"]["reference_epochs"] = None
    return merged


def recipe_for(config: dict, stage: str, arch: str) -> dict:
    """The recipe of ``arch`` in ``stage`` ('pretrain', 'classify', 'segment')."""
    section = config[stage]
    override = (
        section.get("archs", {}).get(arch, {}).get("recipe", {}) if stage != "pretrain" else {}
    )
    return merge_recipe(section["recipe"], override)


def ablation_arch(config: dict) -> str:
    """The segmenter the ablation trains: ablation.arch, or the first of segment.archs by name."""
    arch = config["ablation"]["arch"]
    return arch if arch is not None else sorted(config["segment"]["archs"])[0]


def ablation_levers(config: dict) -> list[str]:
    """Every lever of the ablation, the baseline first, then ablation.levers in name order."""
    return [BASELINE, *sorted(config["ablation"]["levers"])]


def lever_recipe(config: dict, lever: str) -> dict:
    """The recipe a lever trains: the segment stage's recipe for the ablation's architecture, with
    the lever's overrides deep-merged (the baseline has none). Snapshots, SWA and EMA cannot be
    overridden, so the kept members are the stage's."""
    recipe = recipe_for(config, "segment", ablation_arch(config))
    if lever == BASELINE:
        return recipe
    return merge_recipe(recipe, config["ablation"]["levers"][lever].get("recipe", {}))


def lever_train(config: dict, lever: str) -> dict:
    """The config's ``train`` section for a lever: its ``tta`` instead of train.tta where given."""
    tta = None if lever == BASELINE else config["ablation"]["levers"][lever].get("tta")
    return config["train"] if tta is None else {**config["train"], "tta": list(tta)}


def round2_archs(config: dict) -> list[str]:
    """The segmenters trained a second time on NIH pseudo-labels (none where the round is off)."""
    pseudo = config["pseudo_labels"]
    if not pseudo["enabled"]:
        return []
    archs = pseudo["archs"]
    return list(config["segment"]["archs"]) if archs is None else list(archs)


def segmenter_names(config: dict) -> list[str]:
    """Every segmenter of the run by its results name: the first round's, then the second's."""
    return list(config["segment"]["archs"]) + [round2_name(a) for a in round2_archs(config)]


def segmenter_recipe(config: dict, name: str) -> dict:
    """The recipe of a segmenter by its results name: a second round's is its architecture's
    segment recipe with pseudo_labels.recipe on top (members stay the stage's)."""
    recipe = recipe_for(config, "segment", round1_arch(name))
    if name == round1_arch(name):
        return recipe
    return merge_recipe(recipe, config["pseudo_labels"]["recipe"])


def positive_only(recipe: dict) -> bool:
    """Whether a segmenter recipe trains on positive images only (2nd place's members, whose masks
    the cascade draws only behind the gate)."""
    return recipe["sampling"]["mode"] == "positive"


def member_names(recipe: dict) -> list[str]:
    """The models a run keeps: 'best', then 'swa', 'ema' and 'snapshot<k>' where the recipe asks."""
    return (
        [BEST]
        + ([SWA] if recipe["swa"]["enabled"] else [])
        + ([EMA] if recipe["ema"]["enabled"] else [])
        + [snapshot_member(k) for k in range(recipe["snapshots"])]
    )


def cycle_ends(
    name: str, epochs: int, warmup_epochs: int, cycle_epochs: int, cycle_mult: int
) -> list[int]:
    """Epoch counts (1-based) after which a cosine cycle of the schedule ends: the snapshot points.

    Plain arithmetic, without torch, so the config check at DAG build can use it too. Only cosine
    restarts end cycles: with any other schedule (plateau, constant, exponential) there are no
    snapshot points, so a recipe with snapshots fails.
    """
    if name != "cosine_restarts":
        return []
    ends, length, at = [], cycle_epochs, warmup_epochs
    while at + length <= epochs:
        at += length
        ends.append(at)
        length *= cycle_mult
    return ends


def recipe_cycle_ends(recipe: dict) -> list[int]:
    schedule = recipe["schedule"]
    return cycle_ends(
        schedule["name"],
        recipe["epochs"],
        schedule["warmup_epochs"],
        schedule["cycle_epochs"],
        schedule["cycle_mult"],
    )


def resolution_keys(config: dict) -> dict:
    """The config's keys that must agree with ``segment.size``, as a config fragment: the size
    itself, every recipe's progressive-resizing ``stages`` (they end at it) and recipe-level
    ``crop`` (it must fit in it), in the segment recipe, the architectures' overrides, the second
    round's recipe and the ablation's levers; and the segmenters' names (their size rules). What
    the compound-scaling search rescales in best.yaml (`ptxseg.report.scaling.best_fragment`)."""

    def of(recipe: dict | None) -> dict:
        recipe = recipe or {}
        kept = {key: recipe[key] for key in ("stages",) if recipe.get(key)}
        if (recipe.get("crop") or {}).get("size"):
            kept["crop"] = recipe["crop"]
        return {"recipe": kept} if kept else {}

    segment = config["segment"]
    keys: dict = {
        "segment": {
            "size": segment["size"],
            **of(segment.get("recipe")),
            "archs": {arch: of(entry.get("recipe")) for arch, entry in segment["archs"].items()},
        }
    }
    pseudo = of((config.get("pseudo_labels") or {}).get("recipe"))
    if pseudo:
        keys["pseudo_labels"] = pseudo
    levers = {
        name: of(lever.get("recipe"))
        for name, lever in ((config.get("ablation") or {}).get("levers") or {}).items()
    }
    if any(levers.values()):
        keys["ablation"] = {"levers": {k: v for k, v in levers.items() if v}}
    return keys
