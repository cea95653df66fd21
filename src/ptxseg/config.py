"""Validate a pipeline config against its JSON schema, filling defaults, with errors that name the key.

Snakemake's own ``validate`` reports jsonschema's raw messages; a user who typed ``sizez`` wants to
read "config key 'repack.sizez' is unknown; did you mean 'sizes'?". The schema is the single
source of keys, types, defaults and descriptions.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ptxseg import presets
from ptxseg.data.layouts import LayoutError, SiimLayout, demo_layout, resolve
from ptxseg.layout import BASELINE, RESULTS, ROUND2, round1_arch, round2_name
from ptxseg.models.catalog import CATALOG, names
from ptxseg.recipes import (
    lever_recipe,
    member_names,
    recipe_cycle_ends,
    recipe_for,
    round2_archs,
    segmenter_recipe,
)

# Package data, so that an installed ptxseg (not only this checkout) validates configs.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"


# Keys that moved between sections: a config written before the move is told where they went.
MOVED = {
    "train.device": "runtime.device",
    "train.num_workers": "runtime.num_workers",
    "train.checkpoint_every_s": "runtime.checkpoint_every_s",
    "ensemble.weight_step": "ensemble.blend.grid_step",
}


class ConfigError(ValueError):
    """A config that does not satisfy the schema; the message names every key at fault."""


def _fill_defaults(validator_class: type) -> type:
    # jsonschema's documented recipe: set each missing property's default before checking it,
    # so nested objects given ``default: {}`` receive their own defaults too.
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _fill_defaults(jsonschema.Draft202012Validator)


def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict:
    with open(path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    definitions = schema.get("$defs", {})
    if "recipe" in definitions and "recipe_override" in definitions:
        definitions["recipe_override"] = _override_of(definitions["recipe"])
    return schema


def _override_of(recipe: dict) -> dict:
    """An architecture's recipe override: the recipe's keys and types without defaults, so that
    only what the user wrote overrides the stage; snapshots, SWA and EMA stay per stage because they
    decide which model files every fold job writes."""

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "default"}
        return node

    override = strip(recipe)
    for key in ("snapshots", "swa", "ema", "preset"):
        override["properties"].pop(key, None)
    override["description"] = "Recipe keys that differ for one architecture."
    return override


def _key(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<top level>"


def _describe(error: jsonschema.ValidationError) -> list[str]:
    where = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        lines = []
        for name in sorted(set(error.instance) - set(known)):
            moved = MOVED.get(_key([*where, name]))
            hint = difflib.get_close_matches(str(name), known, n=1)
            suggestion = (
                f"; it moved to {moved!r}"
                if moved
                else f"; did you mean {hint[0]!r}?"
                if hint
                else ""
            )
            lines.append(
                f"config key {_key([*where, name])!r} is unknown{suggestion} "
                f"(known keys here: {', '.join(known)})"
            )
        return lines
    return [f"config key {_key(where)!r}: {error.message}"]


def validate(config: dict, schema: dict | None = None) -> dict:
    """Return a deep copy of ``config`` with defaults filled; raise ConfigError listing every fault.

    The copy's mappings have their keys sorted at every level: rules pass config sections as
    params, and Snakemake compares params in order, so the same config with its keys written in
    another order would otherwise look changed and rerun every job.
    """
    schema = load_schema() if schema is None else schema
    filled = _expand_presets(copy.deepcopy(config))
    errors = sorted(
        _Validator(schema).iter_errors(filled), key=lambda e: list(map(str, e.absolute_path))
    )
    if errors:
        lines = [line for error in errors for line in _describe(error)]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    _check_consistency(filled)
    return _sorted_keys(filled)


RECIPE_SECTIONS = ("pretrain", "classify", "segment", "scaling")


def _expand_presets(config: dict) -> dict:
    """Each recipe that names a preset gets the preset's keys beneath its own, before defaults are
    filled, so that a key the user wrote wins over the preset and the preset over the default.
    The preset's rate is a rule of the batch (optimiser.lr_per_256): an architecture's or a
    stage's batch reaches it when the settings are built (`ptxseg.train.settings`)."""
    for section in RECIPE_SECTIONS:
        recipe = (
            config.get(section, {}).get("recipe") if isinstance(config.get(section), dict) else None
        )
        if isinstance(recipe, dict) and recipe.get("preset") is not None:
            try:
                config[section]["recipe"] = presets.expand(recipe)
            except ValueError as error:
                raise ConfigError(
                    f"invalid config:\n  config key '{section}.recipe.preset': {error}"
                ) from None
    return config


def _sorted_keys(value):
    if isinstance(value, dict):
        return {key: _sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_keys(item) for item in value]
    return value


def _check_consistency(config: dict) -> None:
    """Rules that span several keys, which JSON schema cannot say clearly."""
    problems = (
        _check_models(config)
        + _check_members(config)
        + _check_snapshots(config)
        + _check_searches(config)
        + _check_levers(config)
        + _check_schedules(config)
    )
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    data = config.get("data", {})
    if data.get("source") == "files":
        siim, nih = data.get("siim", {}), data.get("nih", {})
        missing = [f"data.nih.{key}" for key in ("image_dir", "labels_csv") if not nih.get(key)]
        if not siim.get("root"):
            missing += [
                f"data.siim.{key}"
                for key in ("train_dicom_dir", "train_rle_csv", "test_dicom_dir")
                if not siim.get(key)
            ]
        if missing:
            raise ConfigError(
                "invalid config:\n  data.source is 'files' but these keys are empty: "
                + ", ".join(missing)
                + (
                    " (data.siim.root, the SIIM-ACR folder as downloaded, names all three)"
                    if any(key.startswith("data.siim.") for key in missing)
                    else ""
                )
            )


def siim_layout(config: dict) -> SiimLayout:
    """The SIIM-ACR layout of a validated config: the demo's, or the one found below
    ``data.siim.root`` (its path keys in place of what they name). Reads folder listings and a
    label file's header, no image: seconds, at DAG build. Raises ConfigError naming the folder or
    file at fault and the fix."""
    data = config["data"]
    if data["source"] == "demo":
        return demo_layout(RESULTS.demo("siim"))
    try:
        layout = resolve(data["siim"])
    except LayoutError as error:
        raise ConfigError(f"invalid SIIM-ACR data:\n  {error}") from None
    sizes = {*config["repack"]["sizes"], config["classify"]["size"], config["segment"]["size"]}
    larger = sorted(size for size in sizes if layout.mask_size and size > layout.mask_size)
    if larger:  # allowed (a 256 px set trained at 512 is a choice), but worth knowing
        note = (
            f"the images and masks come at {layout.mask_size} px: the repacks at "
            f"{', '.join(map(str, larger))} px enlarge them, adding no detail"
        )
        layout = replace(layout, notes=(*layout.notes, note))
    return layout


def _check_models(config: dict) -> list[str]:
    """Architectures exist, fit their stage and input size; 'nih' weights have a pretraining."""
    problems = []
    stages = [("pretrain", "classifier", config.get("repack", {}).get("nih_size"))]
    stages += [
        ("classify", "classifier", config.get("classify", {}).get("size")),
        ("segment", "segmenter", config.get("segment", {}).get("size")),
    ]
    pretrained = set(config.get("pretrain", {}).get("archs", []))
    for stage, kind, size in stages:
        section = config.get(stage, {})
        archs = section.get("archs", [])
        for arch in archs:
            where = f"{stage}.archs.{arch}" if isinstance(archs, dict) else f"{stage}.archs"
            if arch not in CATALOG:
                hint = difflib.get_close_matches(arch, names(kind), n=1)
                problems.append(
                    f"config key {where!r}: unknown model {arch!r}"
                    + (f"; did you mean {hint[0]!r}?" if hint else "")
                    + f" (valid {kind}s: {', '.join(names(kind))})"
                )
                continue
            arch_kind, min_size, multiple = CATALOG[arch]
            if arch_kind != kind:
                problems.append(f"config key {where!r}: {arch!r} is a {arch_kind}, not a {kind}")
            elif size is not None and (size < min_size or size % multiple):
                problems.append(
                    f"config key {where!r}: {arch!r} needs inputs of at least {min_size} px, a "
                    f"multiple of {multiple}; the stage's size is {size}"
                )
            if (
                isinstance(archs, dict)
                and archs[arch].get("weights") == "nih"
                and arch not in pretrained
            ):
                problems.append(
                    f"config key '{where}.weights' is 'nih' but {arch!r} is not in pretrain.archs"
                )
            weights = (
                archs[arch].get("weights") if isinstance(archs, dict) else section.get("weights")
            )
            problems += _check_weights_path(
                weights, f"{where}.weights" if isinstance(archs, dict) else f"{stage}.weights"
            )
    return problems


def _check_weights_path(weights: str | None, key: str) -> list[str]:
    """A checkpoint path must exist now, not hours later when its job starts."""
    if weights in (None, "none", "imagenet", "nih") or Path(weights).is_file():
        return []
    return [
        f"config key {key!r}: checkpoint file {weights!r} does not exist "
        "(weights must be 'none', 'imagenet', 'nih' or the path of a .pt/.pth file)"
    ]


def _check_schedules(config: dict) -> list[str]:
    """schedule.reference_epochs scales the exponential schedule only (cosine cycle ends, the
    snapshot points, stay in whole epochs)."""
    problems = []
    for section in RECIPE_SECTIONS:
        entry = config.get(section, {})
        archs = entry.get("archs") if section in ("classify", "segment") else None
        for arch in archs or [None]:
            if "recipe" not in entry:
                continue
            schedule = (recipe_for(config, section, arch) if arch else entry["recipe"])["schedule"]
            if schedule.get("reference_epochs") is not None and schedule["name"] != "exponential":
                problems.append(
                    f"config key '{section}.recipe.schedule.reference_epochs'"
                    f"{f' (for {arch})' if arch else ''} applies to the exponential schedule "
                    f"only, not {schedule['name']!r}"
                )
    return problems


def _check_members(config: dict) -> list[str]:
    """Ensemble members must be models the stage's recipe keeps."""
    problems = []
    for stage in ("classify", "segment"):
        if stage not in config or "recipe" not in config[stage]:
            continue
        kept = member_names(config[stage]["recipe"])
        for member in config.get("ensemble", {}).get("members", {}).get(stage, []):
            if member not in kept:
                problems.append(
                    f"config key 'ensemble.members.{stage}' names {member!r}, which the {stage} "
                    f"recipe does not keep (kept: {', '.join(kept)})"
                )
    return problems


def _check_searches(config: dict) -> list[str]:
    """The RandAugment search trains a segmenter of the segment stage, on one of its folds; the
    blend's simplex grid step divides 1."""
    search, segment = config.get("augsearch", {}), config.get("segment", {})
    archs, problems = list(segment.get("archs", {})), []
    if search.get("arch") is not None and search["arch"] not in archs:
        problems.append(
            f"config key 'augsearch.arch' is {search['arch']!r}, which is not one of segment.archs "
            f"({', '.join(archs) or 'none'})"
        )
    step = config.get("ensemble", {}).get("blend", {}).get("grid_step")
    if step is not None and abs(round(1 / step) * step - 1) > 1e-9:
        problems.append(f"config key 'ensemble.blend.grid_step' is {step}, which does not divide 1")
    scaling = config.get("scaling", {})
    by_phi, phis = scaling.get("dropout_by_phi"), scaling.get("phis") or [1]
    if by_phi is not None and len(by_phi) <= max(phis):
        problems.append(
            f"config key 'scaling.dropout_by_phi' has {len(by_phi)} entries (phi 0 to "
            f"{len(by_phi) - 1}), but scaling.phis reaches {max(phis)}"
        )
    for key in ("augsearch", "scaling"):
        fold, n_folds = config.get(key, {}).get("fold"), config.get("folds", {}).get("n_folds")
        if fold is not None and n_folds is not None and fold >= n_folds:
            problems.append(f"config key '{key}.fold' is {fold}, but folds.n_folds is {n_folds}")
    return problems


LEVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _check_levers(config: dict) -> list[str]:
    """The winners' levers (head, stages, crops, freezing) are segmenter recipe keys; stages end
    at the stage's size; crops fit in their images; the ablation's architecture is a segmenter."""
    problems = []
    for stage in ("pretrain", "classify"):
        section = config.get(stage, {})
        for arch in (section.get("archs") or {}) if stage != "pretrain" else [None]:
            if "recipe" not in section:
                continue
            recipe = recipe_for(config, stage, arch) if arch else section["recipe"]
            for key in _levers_set(recipe):
                problems.append(
                    f"config key '{stage}.recipe.{key}'{f' (for {arch})' if arch else ''}: a "
                    "segmenter option; classifiers do not take it"
                )
    segment = config.get("segment", {})
    if "recipe" not in segment:
        return problems
    for arch in segment.get("archs", {}):
        problems += _check_segmenter_recipe(
            recipe_for(config, "segment", arch), segment["size"], f"segment.recipe (for {arch})"
        )
    ablation, archs = config.get("ablation", {}), segment.get("archs", {})
    if ablation.get("arch") is not None and ablation["arch"] not in archs:
        problems.append(
            f"config key 'ablation.arch' is {ablation['arch']!r}, which is not one of "
            f"segment.archs ({', '.join(archs) or 'none'})"
        )
    elif archs and ablation:
        for name in ablation.get("levers", {}):
            recipe = lever_recipe(config, name)
            problems += _check_segmenter_recipe(
                recipe, segment["size"], f"ablation.levers.{name}.recipe"
            )
            problems += _check_recipe_members(recipe, f"ablation.levers.{name}.recipe", None)
    return problems + _check_lever_names(ablation.get("levers", {})) + _check_pseudo_labels(config)


def _check_pseudo_labels(config: dict) -> list[str]:
    """The second round's architectures are segmenters of the run, its bands are ordered, and its
    recipe is a valid segmenter recipe."""
    pseudo, segment = config.get("pseudo_labels", {}), config["segment"]
    if not pseudo:
        return []
    problems = []
    unknown = [a for a in pseudo.get("archs") or [] if a not in segment.get("archs", {})]
    if unknown:
        problems.append(
            f"config key 'pseudo_labels.archs': {', '.join(map(repr, unknown))} not among "
            f"segment.archs ({', '.join(segment.get('archs', {})) or 'none'})"
        )
    if pseudo["empty_max_probability"] >= pseudo["positive_min_probability"]:
        problems.append(
            "config keys 'pseudo_labels.empty_max_probability' "
            f"({pseudo['empty_max_probability']}) and 'pseudo_labels.positive_min_probability' "
            f"({pseudo['positive_min_probability']}): the empty band must lie below the positive one"
        )
    named = [a for a in segment.get("archs", {}) if a != round1_arch(a)]
    if named:
        problems.append(
            f"config key 'segment.archs': {named[0]!r} ends in {ROUND2!r}, the suffix of a "
            "second-round segmenter's results; rename it"
        )
    if problems or not pseudo["enabled"]:
        return problems
    for arch in round2_archs(config):
        problems += _check_segmenter_recipe(
            segmenter_recipe(config, round2_name(arch)),
            segment["size"],
            f"pseudo_labels.recipe (for {arch})",
        )
    return problems


def _check_lever_names(levers: dict) -> list[str]:
    """A lever's name is a folder and a wildcard value; 'baseline' is the stage's own recipe."""
    problems = []
    for name in levers:
        if name == BASELINE:
            problems.append(
                f"config key 'ablation.levers.{name}': the name {BASELINE!r} is taken by the "
                "ablation's reference (the segment stage's own recipe, its folds not trained "
                "again); name the lever after what it changes"
            )
        elif not LEVER_NAME.fullmatch(name):
            problems.append(
                f"config key 'ablation.levers.{name}': a lever's name becomes a folder name; use "
                "letters, digits, '_' and '-' (starting with a letter or digit)"
            )
    return problems


def _levers_set(recipe: dict) -> list[str]:
    return [
        key
        for key, on in (
            ("head.enabled", recipe.get("head", {}).get("enabled")),
            ("stages", recipe.get("stages")),
            ("crop.size", recipe.get("crop", {}).get("size")),
            ("freeze_encoder_epochs", recipe.get("freeze_encoder_epochs")),
        )
        if on
    ]


def _check_segmenter_recipe(recipe: dict, size: int, where: str) -> list[str]:
    problems = []
    stages = recipe.get("stages") or []
    if stages:  # each stage has its own crop and frozen epochs: the recipe's would be ignored
        for key, value in (
            ("crop.size", recipe["crop"]["size"]),
            ("freeze_encoder_epochs", recipe["freeze_encoder_epochs"]),
        ):
            if value:
                problems.append(
                    f"config key '{where}.{key}' is set beside stages, where each stage has its "
                    f"own: set it in the stages (e.g. '{where}.stages[0].{key}')"
                )
    if stages and stages[-1]["size"] != size:
        problems.append(
            f"config key '{where}.stages[{len(stages) - 1}].size' is {stages[-1]['size']}, but the "
            f"last stage must train at segment.size ({size}), the size of the OOF and test maps"
        )
    plan = stages or [
        {
            "size": size,
            "epochs": recipe["epochs"],
            "crop": recipe["crop"],
            "freeze_encoder_epochs": recipe["freeze_encoder_epochs"],
        }
    ]
    for k, stage in enumerate(plan):
        key = f"{where}.stages[{k}]" if stages else where
        crop = (stage.get("crop") or {}).get("size")
        if crop is not None and crop > stage["size"]:
            problems.append(
                f"config key '{key}.crop.size' is {crop}, larger than the images it crops "
                f"({stage['size']} px)"
            )
        if stage.get("freeze_encoder_epochs", 0) > stage["epochs"]:
            problems.append(
                f"config key '{key}.freeze_encoder_epochs' is {stage['freeze_encoder_epochs']}, "
                f"more than the {stage['epochs']} epochs it applies to"
            )
    return problems


def _check_snapshots(config: dict) -> list[str]:
    """Snapshots need as many cosine cycle ends within the epochs; SWA must start before the end.

    Found here, a wrong recipe stops the DAG build instead of a training job hours into a run.
    """
    problems = []
    for stage in ("classify", "segment"):
        section = config.get(stage, {})
        if "recipe" not in section:
            continue
        for arch in section.get("archs", {}):
            recipe = recipe_for(config, stage, arch)
            problems += _check_recipe_members(recipe, f"{stage}.recipe", arch)
    return problems


def _check_recipe_members(recipe: dict, where: str, arch: str | None) -> list[str]:
    """The members a recipe keeps fit its epochs (with stages, those of the last stage)."""
    problems = []
    if recipe.get("stages"):  # members are kept in the last stage: its epochs count
        recipe = {**recipe, "epochs": recipe["stages"][-1]["epochs"]}
    of = f" (for {arch})" if arch else ""
    ends = recipe_cycle_ends(recipe)
    if recipe["snapshots"] > len(ends):
        problems.append(
            f"config key '{where}.snapshots'{of} asks for "
            f"{recipe['snapshots']} snapshot(s), but the {recipe['schedule']['name']!r} "
            f"schedule ends {len(ends)} cosine cycle(s) within {recipe['epochs']} epochs"
            + (f" (at epochs {ends})" if ends else "")
        )
    swa = recipe["swa"]
    if swa["enabled"] and swa["start_epoch"] > recipe["epochs"]:
        problems.append(
            f"config key '{where}.swa.start_epoch'{of} is "
            f"{swa['start_epoch']}, but training ends after {recipe['epochs']} epochs: "
            "nothing would be averaged"
        )
    return problems


def load(path: str | os.PathLike, schema: dict | None = None) -> dict:
    """Read a YAML config file and validate it (a convenience for code outside Snakemake)."""
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle) or {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: a config file must hold a mapping of keys, got {type(raw).__name__}"
        )
    try:
        return validate(raw, schema)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
