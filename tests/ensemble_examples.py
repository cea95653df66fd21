"""Small, valid typed ensembles for tests: an `EnsembleSpec` with its search record, whose fields a
test replaces where it needs other values (`dataclasses.replace`)."""

from __future__ import annotations

from dataclasses import replace

from ptxseg.contracts.ensemble_spec import CLASSIFY, SEGMENT, EnsembleSpec, Preprocessing
from ptxseg.contracts.scored_at import ScoredAt
from ptxseg.contracts.scores import SelectedOn
from ptxseg.contracts.search_record import FoldChoice, OofSummary, SearchRecord, WeightSearch
from ptxseg.data.repack import Normalisation
from ptxseg.scoring.cascade import Cascade

OWN = ScoredAt.own_size([(64, 64)], "train-rle.csv")


def preprocessing(size: int = 32, n_folds: int = 2, classify_size: int | None = None):
    sizes = {CLASSIFY: classify_size or size, SEGMENT: size}
    stats = {s: (0.5, 0.25) for s in set(sizes.values())}
    return Preprocessing(Normalisation(), stats, sizes, n_folds, ["none", "hflip"])


def oof_summary(**changes) -> OofSummary:
    cascade = Cascade(gate=0.5, top=0.7, min_area=1024, bottom=0.4)
    folds = tuple(
        FoldChoice(k, {"cls": 1.0}, {"net": 1.0}, cascade, images=10, score=0.7 + k / 100)
        for k in range(2)
    )
    oof = OofSummary(
        images=20,
        cascade=0.705,
        cascade_interval=(0.6, 0.8),
        cascade_confidence=0.95,
        cascade_estimate=SelectedOn.OTHER_FOLDS,
        nested_folds=folds,
        cascade_scored_at=OWN,
        cascade_in_sample=0.75,
        cascade_in_sample_at_size=0.76,
        cascade_in_sample_estimate=SelectedOn.SAME_IMAGES,
        size=32,
        all_empty=0.5,
        blend_default=0.6,
        best_architecture=0.72,
    )
    return replace(oof, **changes)


def search_record(archs: tuple[str, ...] = ("net",), **changes) -> SearchRecord:
    first = tuple(1.0 if a == archs[0] else 0.0 for a in archs)  # the first alone
    weights = WeightSearch(
        size=16,
        archs=archs,
        method="greedy",
        steps=10,
        sorted_init=1,
        grid_step=0.1,
        max_candidates=10_000,
        tried=((first, 0.7),),
    )
    record = SearchRecord(
        positive_only=(),
        segmenter_size=32,
        warnings=(),
        weight_search=weights,
        oof=oof_summary(),
    )
    return replace(record, **changes)


def spec(**changes) -> EnsembleSpec:
    """A classifier gate and one segmenter; ``search=None`` for a manifest's spec."""
    fields = {
        "source": "ensemble.json",
        "gate_weights": {"cls": 1.0},
        "segmenter_weights": {"net": 1.0},
        "members": {CLASSIFY: ["best"], SEGMENT: ["best"]},
        "cascade": Cascade(gate=0.5, top=0.7, min_area=1024, bottom=0.4),
        "preprocessing": preprocessing(),
        "calibration": None,
    }
    fields |= changes
    if "search" not in changes:
        fields["search"] = search_record(tuple(fields["segmenter_weights"]))
    return EnsembleSpec(**fields)
