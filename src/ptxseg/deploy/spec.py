"""What prediction needs from a trained ensemble, read once from ensemble.json or an export's
manifest.json (which carries the same keys): sizes, normalisation, statistics, TTA, weights, the
cascade, the kept members and, where present, the gate's calibration.

Errors name the file and the key. No torch: the ONNX path reads it too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptxseg.data.repack import Normalisation
from ptxseg.layout import Layout, fold_name, head_arch, head_source
from ptxseg.runtime.tta import tta_passes
from ptxseg.scoring.cascade import Cascade

CLASSIFY, SEGMENT = "classify", "segment"


class EnsembleNotFoundError(FileNotFoundError):
    """The results folder holds no trained ensemble (or lacks one of its model files)."""


class EnsembleSpecError(ValueError):
    """ensemble.json or manifest.json lacks a key prediction needs, or holds a bad value."""


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
class EnsembleSpec:
    source: str  # the file it was read from, for messages
    gate_weights: dict[str, float]  # classifier archs and head:<arch> sources, in the file's order
    segmenter_weights: dict[str, float]
    members: dict[str, list[str]]
    cascade: Cascade
    normalisation: Normalisation
    stats: dict[int, tuple[float, float]]  # size -> (mean, std)
    sizes: dict[str, int]  # stage -> input side
    n_folds: int
    tta: list[str | float]
    calibration: dict | None

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str) -> EnsembleSpec:
        def need(mapping: dict, key: str, where: str = "") -> Any:
            if not isinstance(mapping, dict) or key not in mapping:
                raise EnsembleSpecError(
                    f"{source}: key {where + key!r} missing; rerun the ensemble rule "
                    "(snakemake results/ensemble/ensemble.json)"
                )
            return mapping[key]

        prep = need(d, "preprocessing")
        sizes = {
            CLASSIFY: int(need(prep, "classify_size", "preprocessing.")),
            SEGMENT: int(need(prep, "segment_size", "preprocessing.")),
        }
        raw_stats = need(prep, "stats", "preprocessing.")
        stats = {}
        for size in set(sizes.values()):
            entry = need(raw_stats, str(size), "preprocessing.stats.")
            where = f"preprocessing.stats.{size}."
            stats[size] = (float(need(entry, "mean", where)), float(need(entry, "std", where)))
        try:
            normalisation = Normalisation(**need(prep, "normalisation", "preprocessing."))
            tta = list(need(prep, "tta", "preprocessing."))
            tta_passes(tta)
            cascade = Cascade(**need(d, "cascade"))
        except (TypeError, ValueError) as error:
            raise EnsembleSpecError(f"{source}: {error}") from error
        calibration = d.get("calibration")
        if calibration is not None and not isinstance(calibration, dict):
            raise EnsembleSpecError(f"{source}: key 'calibration' is not a dict")
        spec = cls(
            source=source,
            gate_weights={k: float(v) for k, v in need(d, "classifier_weights").items()},
            segmenter_weights={k: float(v) for k, v in need(d, "segmenter_weights").items()},
            members={k: list(v) for k, v in need(d, "members").items()},
            cascade=cascade,
            normalisation=normalisation,
            stats=stats,
            sizes=sizes,
            n_folds=int(need(prep, "n_folds", "preprocessing.")),
            tta=tta,
            calibration=calibration,
        )
        spec._check()
        return spec

    @classmethod
    def read(cls, path: str | os.PathLike) -> EnsembleSpec:
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as error:
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

    def _check(self) -> None:
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
