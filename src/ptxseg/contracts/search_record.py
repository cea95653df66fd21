"""What ensemble.json records of the search itself, beside what prediction reads: the OOF
summary (the headline and its neighbours), how the segmenters' weights were searched, the
gate's calibration choice, the positives-only segmenters, the maps' size and the warnings.

An export's manifest carries none of it (`EnsembleSpec.search` is None there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ptxseg.contracts.keys import BadValue, Keys
from ptxseg.contracts.scored_at import ScoredAt
from ptxseg.contracts.scores import CASCADE_KEYS, SelectedOn
from ptxseg.scoring.cascade import Cascade


def cascade_of(keys: Keys, key: str = "cascade") -> Cascade:
    cascade = keys.child(key)
    return Cascade(**{name: cascade.number(name) for name in CASCADE_KEYS})


@dataclass(frozen=True)
class FoldChoice:
    """What the search chose without fold ``fold``, and that fold's score by it."""

    fold: int
    gate_weights: dict[str, float]
    segmenter_weights: dict[str, float]
    cascade: Cascade
    images: int
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold": self.fold,
            "gate_weights": self.gate_weights,
            "segmenter_weights": self.segmenter_weights,
            "cascade": self.cascade.as_dict(),
            "images": self.images,
            "score": self.score,
        }

    @classmethod
    def from_keys(cls, keys: Keys) -> FoldChoice:
        return cls(
            fold=keys.integer("fold"),
            gate_weights=keys.weights("gate_weights"),
            segmenter_weights=keys.weights("segmenter_weights"),
            cascade=cascade_of(keys),
            images=keys.integer("images"),
            score=keys.number("score"),
        )


@dataclass(frozen=True)
class OofSummary:
    """The OOF numbers the report and the model card lead with. ``cascade``: the headline, the
    cascade at its images' own size (``cascade_scored_at``), each fold scored by choices made on
    the other folds (``cascade_estimate`` other folds, with its interval) or, with one fold, the
    in-sample score; then the cascade that ships, chosen and scored on the same images, at their
    own size and on the ``size`` px maps; the all-empty baseline, the blend at the default
    triplet and the best architecture at its own."""

    images: int
    cascade: float
    cascade_interval: tuple[float, float] | None
    cascade_confidence: float | None
    cascade_estimate: SelectedOn
    nested_folds: tuple[FoldChoice, ...]
    cascade_scored_at: ScoredAt
    cascade_in_sample: float
    cascade_in_sample_at_size: float
    cascade_in_sample_estimate: SelectedOn
    size: int
    all_empty: float
    blend_default: float
    best_architecture: float

    def __post_init__(self) -> None:
        if (self.cascade_interval is None) != (self.cascade_estimate != SelectedOn.OTHER_FOLDS):
            raise BadValue("cascade_interval", "given exactly where the estimate is cross-fitted")

    @property
    def cross_fitted(self) -> bool:
        return self.cascade_estimate == SelectedOn.OTHER_FOLDS

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "cascade": self.cascade,
            "cascade_interval": None
            if self.cascade_interval is None
            else list(self.cascade_interval),
            "cascade_confidence": self.cascade_confidence,
            "cascade_estimate": self.cascade_estimate.value,
            "nested_folds": [fold.to_dict() for fold in self.nested_folds],
            "cascade_scored_at": self.cascade_scored_at.fields(),
            "cascade_in_sample": self.cascade_in_sample,
            "cascade_in_sample_at_size": self.cascade_in_sample_at_size,
            "cascade_in_sample_estimate": self.cascade_in_sample_estimate.value,
            "size": self.size,
            "all_empty": self.all_empty,
            "blend_default": self.blend_default,
            "best_architecture": self.best_architecture,
        }

    @classmethod
    def from_keys(cls, keys: Keys) -> OofSummary:
        interval = None
        if keys.need("cascade_interval") is not None:
            interval = keys.numbers("cascade_interval")
            if len(interval) != 2:
                keys.fail("cascade_interval", f"is not null or [low, high] but {list(interval)}")
        at = keys.child("cascade_scored_at")
        try:
            scored_at = ScoredAt.parse(at.text("basis"), at.text("size"), at.text("truth"))
        except BadValue as error:
            at.fail(error.key, error.problem)
        try:
            return cls(
                images=keys.integer("images"),
                cascade=keys.number("cascade"),
                cascade_interval=interval,
                cascade_confidence=keys.optional_number("cascade_confidence"),
                cascade_estimate=keys.enum(SelectedOn, "cascade_estimate"),
                nested_folds=tuple(FoldChoice.from_keys(k) for k in keys.objects("nested_folds")),
                cascade_scored_at=scored_at,
                cascade_in_sample=keys.number("cascade_in_sample"),
                cascade_in_sample_at_size=keys.number("cascade_in_sample_at_size"),
                cascade_in_sample_estimate=keys.enum(SelectedOn, "cascade_in_sample_estimate"),
                size=keys.integer("size"),
                all_empty=keys.number("all_empty"),
                blend_default=keys.number("blend_default"),
                best_architecture=keys.number("best_architecture"),
            )
        except BadValue as error:
            keys.fail(error.key, error.problem)


@dataclass(frozen=True)
class WeightSearch:
    """How the segmenters' blend weights were searched (``ensemble.blend``), at which size, and
    every blend it scored: its weights in the order of ``archs``, and its score."""

    size: int
    archs: tuple[str, ...]
    method: str
    steps: int
    sorted_init: int
    grid_step: float
    max_candidates: int
    tried: tuple[tuple[tuple[float, ...], float], ...]

    @property
    def evaluations(self) -> int:
        return len(self.tried)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "archs": list(self.archs),
            "method": self.method,
            "steps": self.steps,
            "sorted_init": self.sorted_init,
            "grid_step": self.grid_step,
            "max_candidates": self.max_candidates,
            "evaluations": self.evaluations,
            "tried": [{"weights": list(w), "score": s} for w, s in self.tried],
        }

    @classmethod
    def from_keys(cls, keys: Keys) -> WeightSearch:
        tried = tuple(
            (entry.numbers("weights"), entry.number("score")) for entry in keys.objects("tried")
        )
        search = cls(
            size=keys.integer("size"),
            archs=keys.strings("archs"),
            method=keys.text("method"),
            steps=keys.integer("steps"),
            sorted_init=keys.integer("sorted_init"),
            grid_step=keys.number("grid_step"),
            max_candidates=keys.integer("max_candidates"),
            tried=tried,
        )
        if keys.integer("evaluations") != search.evaluations:
            keys.fail("evaluations", f"is not the {search.evaluations} blends listed in 'tried'")
        if any(len(weights) != len(search.archs) for weights, _ in tried):
            keys.fail("tried", f"holds weights that are not one per arch of {list(search.archs)}")
        return search


@dataclass(frozen=True)
class CalibrationOption:
    """One method the gate's calibration was chosen among: its cross-fitted scores (None where
    the inputs could not score it), whether it was chosen and why."""

    method: str
    brier: float | None
    log_loss: float | None
    ece: float | None
    delta: float | None
    delta_se: float | None
    chosen: bool
    reason: str

    SCORES = ("brier", "log_loss", "ece", "delta", "delta_se")

    @classmethod
    def of(cls, record: dict[str, Any]) -> CalibrationOption:
        """From a row of `scoring.calibration.choose_calibration`'s table (NaN: None)."""
        scores = {k: None if math.isnan(record[k]) else float(record[k]) for k in cls.SCORES}
        return cls(
            str(record["method"]),
            **scores,
            chosen=bool(record["chosen"]),
            reason=str(record["reason"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            **{k: getattr(self, k) for k in self.SCORES},
            "chosen": self.chosen,
            "reason": self.reason,
        }

    @classmethod
    def from_keys(cls, keys: Keys) -> CalibrationOption:
        chosen = keys.need("chosen")
        if not isinstance(chosen, bool):
            keys.fail("chosen", f"is not true or false but {chosen!r}")
        scores = {k: keys.optional_number(k) for k in cls.SCORES}
        return cls(keys.text("method"), **scores, chosen=chosen, reason=keys.text("reason"))


@dataclass(frozen=True)
class SearchRecord:
    positive_only: tuple[str, ...]  # segmenters trained on positive images, used behind the gate
    segmenter_size: int  # the OOF maps' side, where the thresholds were searched
    warnings: tuple[str, ...]  # choices on the edge of their grid, naming the key to widen
    weight_search: WeightSearch
    oof: OofSummary
    calibration_choice: tuple[CalibrationOption, ...] = ()  # empty without a gate

    def calibration_table(self) -> pd.DataFrame:
        """One row per calibration method (`CalibrationOption`), unscored values as NaN."""
        columns = ["method", *CalibrationOption.SCORES, "chosen", "reason"]
        table = pd.DataFrame([o.to_dict() for o in self.calibration_choice], columns=columns)
        return table.astype(dict.fromkeys(CalibrationOption.SCORES, "float64"))

    def to_dict(self) -> dict[str, Any]:
        record = {
            "positive_only": list(self.positive_only),
            "segmenter_size": self.segmenter_size,
            "warnings": list(self.warnings),
            "weight_search": self.weight_search.to_dict(),
            "oof": self.oof.to_dict(),
        }
        if self.calibration_choice:
            record["calibration_choice"] = [option.to_dict() for option in self.calibration_choice]
        return record

    @classmethod
    def from_keys(cls, keys: Keys) -> SearchRecord:
        choice = keys.objects("calibration_choice") if keys.has("calibration_choice") else []
        return cls(
            positive_only=keys.strings("positive_only"),
            segmenter_size=keys.integer("segmenter_size"),
            warnings=keys.strings("warnings"),
            weight_search=WeightSearch.from_keys(keys.child("weight_search")),
            oof=OofSummary.from_keys(keys.child("oof")),
            calibration_choice=tuple(CalibrationOption.from_keys(k) for k in choice),
        )
