"""ensemble.json, typed: what the search chose and prediction repeats, written by the search
(`EnsembleSpec.write`) and read by every consumer (`EnsembleSpec.read`, `from_results`); an
export's manifest.json carries the same prediction keys (`prediction_dict`).

The gate's weights (``gate_weights``) hold its sources: classifiers by architecture and segmenter
heads as ``head:<arch>``. Errors name the file and the key. No torch: the ONNX path reads it too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ptxseg.contracts.keys import EnsembleNotFoundError, EnsembleSpecError, Keys
from ptxseg.contracts.search_record import SearchRecord, cascade_of
from ptxseg.data.repack import Normalisation
from ptxseg.io import atomic
from ptxseg.layout import Layout, fold_name, head_arch, head_source
from ptxseg.runtime.tta import tta_passes
from ptxseg.scoring.calibrator import Calibrator
from ptxseg.scoring.cascade import Cascade

__all__ = [
    "CLASSIFY",
    "SEGMENT",
    "EnsembleNotFoundError",
    "EnsembleSpec",
    "EnsembleSpecError",
    "ModelKey",
    "Preprocessing",
]

CLASSIFY, SEGMENT = "classify", "segment"


@dataclass(frozen=True, order=True)
class ModelKey:
    """One fold model of the ensemble: its stage, results architecture name, fold and member."""

    stage: str
    arch: str
    fold: int
    member: str

    def __str__(self) -> str:
        return f"{self.stage}/{self.arch}/{fold_name(self.fold)}/{self.member}"


@dataclass(frozen=True)
class Preprocessing:
    """What prediction must repeat on a new image: the normalisation, each stage's input side,
    the intensity statistics of each side's repack, the folds and the TTA."""

    normalisation: Normalisation
    stats: dict[int, tuple[float, float]]  # side -> (mean, std)
    sizes: dict[str, int]  # stage -> input side
    n_folds: int
    tta: list[str | float]

    def __post_init__(self) -> None:
        if set(self.stats) != set(self.sizes.values()):
            used = sorted(set(self.sizes.values()))
            raise ValueError(f"statistics for sizes {sorted(self.stats)}, the stages use {used}")
        tta_passes(self.tta)

    def to_dict(self) -> dict[str, Any]:
        return {
            "normalisation": asdict(self.normalisation),
            "stats": {str(s): {"mean": m, "std": d} for s, (m, d) in sorted(self.stats.items())},
            "segment_size": self.sizes[SEGMENT],
            "classify_size": self.sizes[CLASSIFY],
            "n_folds": self.n_folds,
            "tta": list(self.tta),
        }

    @classmethod
    def from_keys(cls, keys: Keys) -> Preprocessing:
        sizes = {CLASSIFY: keys.integer("classify_size"), SEGMENT: keys.integer("segment_size")}
        raw_stats = keys.child("stats")
        stats = {}
        for size in sorted(set(sizes.values())):
            entry = raw_stats.child(str(size))
            stats[size] = (entry.number("mean"), entry.number("std"))
        tta = keys.need("tta")
        try:
            normalisation = Normalisation(**keys.child("normalisation").mapping)
            return cls(normalisation, stats, sizes, keys.integer("n_folds"), list(tta))
        except (TypeError, ValueError) as error:
            raise EnsembleSpecError(f"{keys.source}: {error}") from error


@dataclass(frozen=True)
class EnsembleSpec:
    source: str = field(compare=False)  # the file it was read from, for messages
    gate_weights: dict[str, float]  # the gate's sources: classifier archs and head:<arch>
    segmenter_weights: dict[str, float]
    members: dict[str, list[str]]  # stage -> the kept members of each fold model
    cascade: Cascade
    preprocessing: Preprocessing
    calibration: Calibrator | None  # the gate's; None where the ensemble has no gate
    search: SearchRecord | None = None  # None in an export's manifest

    def __post_init__(self) -> None:
        for source in self.gate_weights:
            arch = head_arch(source)
            if arch is not None and arch not in self.segmenter_weights:
                raise EnsembleSpecError(
                    f"{self.source}: gate source {source!r} names no segmenter of "
                    f"segmenter_weights ({', '.join(self.segmenter_weights)})"
                )
        for stage, archs in ((CLASSIFY, self.classifiers), (SEGMENT, self.segmenters)):
            if archs and not self.members.get(stage):
                raise EnsembleSpecError(f"{self.source}: key 'members.{stage}' missing or empty")
        if not self.segmenters:
            raise EnsembleSpecError(f"{self.source}: no segmenter has a weight above 0")
        if self.search is not None and set(self.search.weight_search.archs) != set(
            self.segmenter_weights
        ):
            raise EnsembleSpecError(
                f"{self.source}: key 'weight_search.archs' {list(self.search.weight_search.archs)} "
                f"are not the segmenters of segmenter_weights {list(self.segmenter_weights)}"
            )

    # The file.

    def prediction_dict(self) -> dict[str, Any]:
        """The keys prediction reads (those an export's manifest carries)."""
        d = {
            "gate_weights": dict(self.gate_weights),
            "segmenter_weights": dict(self.segmenter_weights),
            "members": {stage: list(names) for stage, names in self.members.items()},
            "cascade": self.cascade.as_dict(),
            "preprocessing": self.preprocessing.to_dict(),
        }
        if self.calibration is not None:
            d["calibration"] = self.calibration.to_dict()
        return d

    def to_dict(self) -> dict[str, Any]:
        """ensemble.json's content: the prediction keys and the search's record."""
        return {**self.prediction_dict(), **(self.search.to_dict() if self.search else {})}

    def write(self, path: str | os.PathLike) -> None:
        atomic.write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> EnsembleSpec:
        """From ensemble.json's or a manifest's content (the search's record where it has one:
        key 'oof'); keys it does not know are left alone."""
        if not isinstance(d, dict):
            raise EnsembleSpecError(f"{source}: not a JSON object")
        keys = Keys(source, d)
        calibration = None
        if d.get("calibration") is not None:
            try:
                calibration = Calibrator.from_dict(keys.child("calibration").mapping)
            except ValueError as error:  # it names the calibration's own key
                raise EnsembleSpecError(f"{source}: calibration.{error}") from error
        members = keys.child("members")
        return cls(
            source=source,
            gate_weights=keys.weights("gate_weights"),
            segmenter_weights=keys.weights("segmenter_weights"),
            members={stage: list(members.strings(stage)) for stage in members.mapping},
            cascade=cascade_of(keys),
            preprocessing=Preprocessing.from_keys(keys.child("preprocessing")),
            calibration=calibration,
            search=SearchRecord.from_keys(keys) if keys.has("oof") else None,
        )

    @classmethod
    def read(cls, path: str | os.PathLike) -> EnsembleSpec:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise EnsembleSpecError(f"{path}: not valid JSON ({error})") from error
        return cls.from_dict(d, str(path))

    @classmethod
    def from_results(cls, results: str | os.PathLike) -> EnsembleSpec:
        path = Path(Layout(str(results)).ensemble("ensemble.json"))
        if not path.is_file():
            raise EnsembleNotFoundError(
                f"{path} not found: train the ensemble first "
                f"(snakemake --cores all results/ensemble/ensemble.json)"
            )
        return cls.read(path)

    @property
    def searched(self) -> SearchRecord:
        """The search's record; an error naming the file where it has none (a manifest)."""
        if self.search is None:
            Keys(self.source, {}).need("oof")
        return self.search

    # What prediction runs.

    @property
    def normalisation(self) -> Normalisation:
        return self.preprocessing.normalisation

    @property
    def stats(self) -> dict[int, tuple[float, float]]:
        return self.preprocessing.stats

    @property
    def sizes(self) -> dict[str, int]:
        return self.preprocessing.sizes

    @property
    def n_folds(self) -> int:
        return self.preprocessing.n_folds

    @property
    def tta(self) -> list[str | float]:
        return self.preprocessing.tta

    @property
    def passes(self) -> list[tuple[str, float]]:
        """The configured passes; each model takes those its training covered
        (`ptxseg.runtime.predict.model_passes`)."""
        return tta_passes(self.tta)

    @property
    def n_flips(self) -> int:
        """The flips of every model's passes (all of them take every flip)."""
        return len(dict.fromkeys(flip for flip, _ in self.passes))

    @property
    def classifiers(self) -> list[str]:
        """The classifiers that enter the gate (weight above 0), in the file's order."""
        return [s for s, w in self.gate_weights.items() if w > 0 and head_arch(s) is None]

    @property
    def segmenters(self) -> list[str]:
        """The segmenters run: those whose maps or whose head's probability have weight."""
        return [
            arch
            for arch, weight in self.segmenter_weights.items()
            if max(weight, self.gate_weights.get(head_source(arch), 0.0)) > 0
        ]

    @property
    def has_gate(self) -> bool:
        return any(w > 0 for w in self.gate_weights.values())

    def archs(self, stage: str) -> list[str]:
        return self.classifiers if stage == CLASSIFY else self.segmenters

    def model_keys(self, stage: str | None = None) -> list[ModelKey]:
        """Every fold model run, architecture by architecture, folds then members (the order in
        which their probabilities are summed)."""
        stages = [stage] if stage else [CLASSIFY, SEGMENT]
        return [
            ModelKey(s, arch, fold, member)
            for s in stages
            for arch in self.archs(s)
            for fold in range(self.n_folds)
            for member in self.members[s]
        ]
