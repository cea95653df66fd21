"""Recipes: a stage's training recipe with an architecture's overrides, and the models a run keeps.

Plain dictionaries, no torch: the Snakefile uses these to name each training job's outputs.
"""

from __future__ import annotations

import copy


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "augment":
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def recipe_for(config: dict, stage: str, arch: str) -> dict:
    """The recipe of ``arch`` in ``stage`` ('pretrain', 'classify', 'segment')."""
    section = config[stage]
    override = (
        section.get("archs", {}).get(arch, {}).get("recipe", {}) if stage != "pretrain" else {}
    )
    return deep_merge(section["recipe"], override)


def member_names(recipe: dict) -> list[str]:
    """The models a run keeps: 'best', then 'swa' and 'snapshot<k>' where the recipe asks."""
    return (
        ["best"]
        + (["swa"] if recipe["swa"]["enabled"] else [])
        + [f"snapshot{k}" for k in range(recipe["snapshots"])]
    )
