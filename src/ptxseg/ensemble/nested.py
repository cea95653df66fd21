"""The honest OOF estimate: every choice of the search made again without the images it scores.

The search chooses the gate's weights, the segmenters' blend weights and the (gate, triplet)
cascade on every fold's OOF images; its score on those images is therefore optimistic (720 grid
points and a blend searched on the very Dice it reports). Here, for each fold k, the same
functions make the same choices on the other folds' images only (the gate's blend by the OOF AUC,
the blend search on the small maps, the cascade on the full-size maps with the same gate rule), and
fold k's images are scored with them, each mask drawn at its image's own size. The per-image Dice
of every fold, each by choices that never saw it, is the headline (cross-fitting, as in nested
cross-validation: Varma and Simon, BMC Bioinformatics 2006; Cawley and Talbot, JMLR 2010), with a
percentile bootstrap interval over images (scipy.stats.bootstrap). The ensemble that ships is
still the one chosen on all folds.

Not refitted, as they change no mask: the gate's calibration (it maps the reported probability;
`ensemble.calibrate` fits it on the other folds already) and the kept members (the config's).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap

from ptxseg.contracts.search_record import FoldChoice
from ptxseg.ensemble.blend import BlendSearch
from ptxseg.ensemble.oof import Gating, Grid, ImageSources, ScratchMaps, SearchInputs, part
from ptxseg.scoring.cascade import blend_maps
from ptxseg.scoring.native import native_outcomes
from ptxseg.scoring.thresholds import CascadeGrid, Histograms

log = logging.getLogger(__name__)

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class NestedEstimate:
    """Per OOF image (layout order) its Dice at its own size by its fold's `FoldChoice`; their
    mean and its bootstrap interval."""

    dice: np.ndarray
    folds: list[FoldChoice]
    score: float
    low: float
    high: float
    confidence: float = CONFIDENCE


def positives_only_weighed(archs: list[str], weights, positive_only) -> bool:
    """Whether a blend gives weight to a segmenter that draws only behind the gate."""
    return any(w > 0 and a in positive_only for a, w in zip(archs, weights, strict=True))


def allowed_gates(configured: list[float], needs_gate: bool) -> list[float]:
    """The gates a cascade may take: above 0 where positives-only segmenters weigh in."""
    return [g for g in configured if g > 0] if needs_gate else configured


def cross_fitted(
    inputs: SearchInputs,
    grid: Grid,
    blend: BlendSearch,
    scratch: ScratchMaps,
    sources: ImageSources | None,
    positive_only: list[str],
    chunk: int,
    seed: int = 0,
) -> NestedEstimate | None:
    """The search's choices per held-out fold, and the held-out images' scores by them; None with
    a single fold (nothing to hold out)."""
    layout = inputs.oof
    if len(layout.folds) < 2:
        log.warning("one fold only: no cross-fitted estimate, the headline is in-sample")
        return None
    fold_of = np.asarray(layout.fold_of)
    configured = list(grid.gates) if sources is not None else [0.0]
    gated = [g for g in grid.gates if g > 0]
    choices = {}
    for k in layout.folds:
        among = fold_of != k
        gate_weights, probability = None, None
        if sources is not None:
            gate_weights = sources.choose(blend, among).weights
            probability = sources.probability(gate_weights)
        gating = Gating(probability, list(positive_only), gated)
        seg_weights = blend.run(
            len(layout.archs), scratch.scorer(grid, gating, chunk, among)
        ).weights
        choices[k] = (gate_weights, probability, seg_weights)
    # Each fold's cascade on the other folds' images, every fold's blend in one pass.
    gates = sorted(set(configured) | {0.0})
    grids = {k: CascadeGrid(*grid.triplet, gates) for k in layout.folds}
    for fold, position, _, ids in layout.chunks(chunk):
        means = scratch.full_means(position, len(ids))
        truth = inputs.truth.stack(ids)
        for k, (_, probability, seg_weights) in choices.items():
            if k != fold:
                h = Histograms.of(blend_maps(means, seg_weights), truth)
                grids[k].add(h, part(probability, position, len(ids)))
    cascades = {}
    for k, (_, _, seg_weights) in choices.items():
        needs_gate = positives_only_weighed(layout.archs, seg_weights, positive_only)
        cascades[k] = grids[k].best(allowed_gates(configured, needs_gate))[0]
    # Each fold's images by its own choices, each mask at its image's own size.
    dice = np.empty(len(layout.ids), dtype=np.float64)
    for fold, position, _, ids in layout.chunks(chunk):
        _, probability, seg_weights = choices[fold]
        means = scratch.full_means(position, len(ids))
        outcomes = native_outcomes(
            blend_maps(means, seg_weights),
            ids,
            inputs.native,
            cascades[fold],
            part(probability, position, len(ids)),
        )
        dice[position : position + len(ids)] = outcomes["dice_native"]
    folds = [
        FoldChoice(
            fold=k,
            gate_weights=(
                {}
                if gate_weights is None
                else dict(zip(sources.names, map(float, gate_weights), strict=True))
            ),
            segmenter_weights=dict(zip(layout.archs, map(float, seg_weights), strict=True)),
            cascade=cascades[k],
            images=int((fold_of == k).sum()),
            score=float(dice[fold_of == k].mean()),
        )
        for k, (gate_weights, _, seg_weights) in choices.items()
    ]
    low, high = bootstrap_interval(dice, seed=seed)
    estimate = NestedEstimate(dice, folds, float(dice.mean()), low, high)
    log.info(
        "OOF cascade, each fold by choices made on the others: %.4f (%.0f %% interval %.4f-%.4f)",
        estimate.score,
        100 * CONFIDENCE,
        low,
        high,
    )
    return estimate


def bootstrap_interval(
    values: np.ndarray, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean over ``values`` (one per image)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2 or np.ptp(values) == 0:
        mean = float(values.mean())
        return mean, mean  # nothing varies: the mean is the interval
    result = bootstrap(
        (values,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
