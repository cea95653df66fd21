"""A shipped config at test scale: its keys kept as shipped, counts and sizes shrunk by an override.

The override (tests/workflow/full_structure.yaml) says, for every key of the shipped config, how it
comes to the test: divided by the size factor (``sizes``), by its square (``areas``), replaced by
a count (``counts``), by what stands in for the outside world (``replaced``), or ``kept``. A key of
the shipped config that none of them places is an error: the config cannot gain a lever that the
structure test does not run.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# Mappings that are one value (an albumentations pipeline), not keys of the config.
BLOBS = ("augment",)


def leaf_keys(config: dict, prefix: str = "") -> Iterator[str]:
    """Dotted paths of every value of ``config``; a list of mappings (the stages) gives
    ``stages.<key>`` for each key any of its entries has."""
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key not in BLOBS:
            yield from leaf_keys(value, path + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            merged: dict = {}
            for entry in value:
                merged = {**merged, **entry}
            yield from leaf_keys(merged, path + ".")
        else:
            yield path


def _nested(config: dict, dotted: str) -> list[tuple[Any, str]]:
    """The (container, key) pairs that hold ``dotted`` in ``config``: several inside stages."""
    parts = dotted.split(".")
    places: list[tuple[Any, str]] = [(config, parts[0])]
    for part in parts[1:]:
        deeper = []
        for container, key in places:
            value = container.get(key) if isinstance(container, dict) else None
            if isinstance(value, list):
                deeper += [(entry, part) for entry in value if isinstance(entry, dict)]
            elif isinstance(value, dict):
                deeper.append((value, part))
        places = deeper
    return [(c, k) for c, k in places if k in c]


def _divide(value, divisor: int, where: str):
    if isinstance(value, list):
        return [_divide(v, divisor, where) for v in value]
    if value % divisor:
        raise ValueError(f"{where}: {value} is not divisible by {divisor}")
    return value // divisor


def _set_counts(config: dict, counts: dict) -> None:
    for key, value in counts.items():
        if "." in key:  # stages.<key>: one value per stage
            name, field = key.split(".", 1)
            stages = config[name]
            if len(value) != len(stages):
                raise ValueError(f"counts {key}: {len(value)} values for {len(stages)} stages")
            for stage, count in zip(stages, value, strict=True):
                stage[field] = count
        elif isinstance(value, dict) and isinstance(config.get(key), dict):
            _set_counts(config[key], value)
        else:
            config[key] = copy.deepcopy(value)


def _covered(key: str, entries: list[str]) -> bool:
    return any(key == entry or key.startswith(entry + ".") for entry in entries)


def _count_keys(counts: dict, prefix: str = "") -> Iterator[str]:
    for key, value in counts.items():
        if isinstance(value, dict):
            yield from _count_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def placements(override: dict) -> dict[str, list[str]]:
    """Each list of the override's dotted keys by how the key comes to the test."""
    return {
        "sizes": list(override["sizes"]),
        "areas": list(override["areas"]),
        "counts": list(_count_keys(override["counts"])),
        "replaced": list(_count_keys(override["replaced"])) + list(override["replaced"]),
        "kept": list(override["kept"]),
    }


def unplaced(shipped: dict, override: dict) -> list[str]:
    """Keys of the shipped config that the override does not place (it must place them all)."""
    places = [entry for entries in placements(override).values() for entry in entries]
    return [key for key in leaf_keys(shipped) if not _covered(key, places)]


def stale(shipped: dict, override: dict) -> list[str]:
    """Entries of ``sizes``, ``areas`` and ``kept`` naming no key of the shipped config."""
    keys = list(leaf_keys(shipped))
    named = override["sizes"] + override["areas"] + override["kept"]
    return [entry for entry in named if not any(_covered(key, [entry]) for key in keys)]


def derive(shipped: dict, override: dict, **replacements: str) -> dict:
    """The test's config: ``shipped`` with the override applied; ``{name}`` in replaced values
    takes ``replacements[name]``."""
    config = copy.deepcopy(shipped)
    factor = override["factor"]
    for kind, divisor in (("sizes", factor), ("areas", factor * factor)):
        for key in override[kind]:
            places = _nested(config, key)
            if not places:
                raise ValueError(f"{kind}: {key} is not a key of the shipped config")
            for container, name in places:
                container[name] = _divide(container[name], divisor, key)
    _set_counts(config, override["counts"])
    replaced = yaml.safe_load(yaml.safe_dump(override["replaced"]).format(**replacements))
    for section, value in replaced.items():
        config[section] = {**config.get(section, {}), **value}
    if config["data"].get("source") == "demo":  # the downloads' paths mean nothing then
        config["data"] = {k: v for k, v in config["data"].items() if k not in ("siim", "nih")}
    return config


def kept_values_differ(shipped: dict, derived: dict, override: dict) -> list[str]:
    """Kept keys whose value in ``derived`` is not the shipped one."""
    differ = []
    for key in override["kept"]:
        ours, theirs = _nested(derived, key), _nested(shipped, key)
        if [c[k] for c, k in ours] != [c[k] for c, k in theirs]:
            differ.append(key)
    return differ


def load(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())
