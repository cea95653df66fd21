"""The ensemble, chosen on out-of-fold (OOF) predictions only, a chunk of images at a time.

1. The image-level probability (the cascade's gate): each classifier's OOF probability and each
   segmenter head's (where the segmenters have a classification head) is the mean of its kept
   members; the weights of all these sources maximise the OOF ROC AUC (``ensemble.blend``:
   greedy ensemble selection, or the exhaustive simplex grid), so the heads are used alone,
   blended with the classifiers, or not at all, as the OOF says.
2. Segmenters (first pass over the maps): every single model and every architecture (its members
   averaged into one map per image) is scored, and each architecture's mean map is kept in a
   scratch file at ``search_size`` and at its own size (the later passes read it there, not
   every member again); the blend search then scores its candidate blends of the
   architectures on those small maps, each with its own best triplet, one pass over them per
   batch of candidates (greedy: one pass a step), and the best blend is kept. Segmenters trained on
   positive images only (``positive_only``) draw masks only behind the gate, so every score that
   involves them is taken with a gate above 0.
3. The cascade (second pass): the chosen blend is written to one map file, and the gate and the
   triplet thresholds are searched together at the segmenters' size; the best cascade without a
   gate and the best behind a gate above 0 are kept beside it, to show what the gate adds.
4. The in-sample result (third pass): the chosen cascade's masks, each drawn at its image's own
   size (1024 x 1024 for SIIM), against the masks decoded from ``train-rle.csv``: the
   competition's own way of scoring, but on the images every choice above was made on.
5. The headline (``ensemble.nested``): steps 1-3 again for each fold on the other folds' images,
   and that fold's images scored at their own size by those choices, with a bootstrap interval.
   Every score row says what it was chosen on (``selected_on``: the same images, the other
   folds, or nothing).

Every pass reads the maps ``chunk`` images at a time and keeps only per-image numbers and the
score grids, so its memory is set by the chunk size, not by the number of images. Every score
row says at which size it was computed (``scored_at``); the search's choices that sit on the
edge of their grid are reported as warnings naming the key to widen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ptxseg.contracts.ensemble_spec import CLASSIFY, SEGMENT, EnsembleSpec, Preprocessing
from ptxseg.contracts.scores import (
    Kind,
    Level,
    Metric,
    ScoredAt,
    ScoreRow,
    ScoreTable,
    SelectedOn,
)
from ptxseg.contracts.search_record import (
    CalibrationOption,
    OofSummary,
    SearchRecord,
    WeightSearch,
)
from ptxseg.data.repack import Normalisation, read_stats, resize_image, resize_mask
from ptxseg.ensemble.blend import BlendSearch
from ptxseg.ensemble.calibrate import calibrate_gate
from ptxseg.ensemble.nested import (
    NestedEstimate,
    allowed_gates,
    cross_fitted,
    positives_only_weighed,
)
from ptxseg.ensemble.oof import (
    CHUNK,
    GRID_KEYS,
    Gating,
    Grid,
    ImageSources,
    OofLayout,
    ScoreRows,
    ScratchMaps,
    SearchInputs,
    SearchOutputs,
    SegmenterFold,
    TruthMasks,
    classifier_oof,
    gate_objective,
    head_oof,
    part,
    roc_auc,
    segmenter_oof,
)
from ptxseg.grids import edge_warnings
from ptxseg.io import atomic, maps
from ptxseg.layout import (
    head_arch,
    head_source,
    probability_column,
    probability_members,
)
from ptxseg.scoring.cascade import (
    Cascade,
    blend_maps,
    members_map,
)
from ptxseg.scoring.native import NativeTruth, native_outcomes
from ptxseg.scoring.thresholds import (
    CascadeGrid,
    Histograms,
    image_outcomes,
)

log = logging.getLogger(__name__)


def run_search(
    *,
    classifiers: dict[str, dict[int, str]],
    segmenters: dict[str, dict[int, SegmenterFold]],
    members: dict[str, list[str]],
    manifest_csv: str | os.PathLike,
    size: int,
    grid: Grid,
    rle_csv: str | os.PathLike,
    index_csv: str | os.PathLike,
    blend: BlendSearch | None = None,
    search_size: int = 256,
    out_json: str | os.PathLike,
    out_scores: str | os.PathLike,
    out_grid: str | os.PathLike,
    out_images: str | os.PathLike,
    out_maps: str | os.PathLike,
    preprocessing: Preprocessing,
    calibration: dict | None = None,
    positive_only: list[str] | tuple[str, ...] = (),
    chunk: int = CHUNK,
) -> EnsembleSpec:
    """Choose weights and thresholds on OOF predictions; write them (ensemble.json, with
    ``preprocessing``: what prediction repeats), the score table, the per-image outcomes and the
    blended OOF maps.

    ``classifiers``: architecture -> fold -> OOF CSV; ``segmenters``: architecture -> fold -> its
    files. ``members``: which kept models of each kind enter the ensemble ('classify', 'segment').
    ``rle_csv``/``index_csv``: the label file and the SIIM index, for the score at each image's
    own size. ``positive_only``: segmenters trained on positive images only, scored behind the gate.
    ``blend``: how the gate's and the segmenters' blend weights are searched (default: greedy).
    """
    blend = blend or BlendSearch()
    inputs = SearchInputs(
        OofLayout({arch: segmenter_oof(arch, folds) for arch, folds in segmenters.items()}),
        TruthMasks(manifest_csv, size),
        classifiers,
        NativeTruth(rle_csv, index_csv),
        size,
    )
    out = SearchOutputs(out_json, out_scores, out_grid, out_images, out_maps)
    heads = {
        head_source(arch): table
        for arch, folds in segmenters.items()
        if (table := head_oof(arch, folds, members["segment"])) is not None
    }
    gate_weights, sources, scores = _image_level(classifiers, heads, members, inputs.oof.ids, blend)
    cls_probability = None
    if sources is not None:
        cls_probability = sources.probability(list(gate_weights.values()))
    unknown = sorted(set(positive_only) - set(inputs.oof.archs))
    if unknown:
        raise ValueError(f"positives-only segmenter(s) {unknown} are not among {inputs.oof.archs}")
    gated = [g for g in grid.gates if g > 0]
    if positive_only and (cls_probability is None or not gated):
        raise ValueError(
            f"segmenter(s) {', '.join(positive_only)} train on positive images only and draw "
            "masks only behind the gate: the ensemble needs an image-level probability "
            "(classifiers or a segmenter head) and a gate above 0 in ensemble.grid.gate"
        )
    kept = members[SEGMENT]
    small_size = min(search_size, inputs.size)
    with tempfile.TemporaryDirectory(dir=Path(out.maps).parent, prefix=".blend_search_") as folder:
        scratch = ScratchMaps(
            Path(folder), inputs.oof.archs, len(inputs.oof.ids), small_size, inputs.size
        )
        seg_weights, weight_search, rows = _segmenter_stage(
            inputs,
            kept,
            grid,
            blend,
            scratch,
            chunk,
            Gating(cls_probability, list(positive_only), gated),
        )
        # The headline: every choice made again without each fold, that fold scored by it.
        nested = cross_fitted(inputs, grid, blend, scratch, sources, list(positive_only), chunk)
        needs_gate = positives_only_weighed(inputs.oof.archs, seg_weights, positive_only)
        cascade, blend_rows, at_size, chosen = _cascade_stage(
            inputs, scratch, seg_weights, grid, cls_probability, out, chunk, needs_gate
        )
    scores += rows
    outcomes, native, all_empty = _native_stage(inputs, cascade, cls_probability, out, chunk)
    scores += [*blend_rows, native, at_size, all_empty]
    if nested is not None:
        outcomes["dice_native_nested"] = nested.dice
        scores.append(_nested_row(nested, native))
    calibrated, calibrator, choice = None, None, ()
    if cls_probability is not None:  # the gate's calibration, on every OOF image's own label
        gate = calibrate_gate(
            cls_probability,
            outcomes["truth_pixels_native"] > 0,
            np.asarray(inputs.oof.fold_of),
            **(calibration or {}),
        )
        scores += gate.rows
        calibrated, calibrator = gate.calibrated_oof, gate.calibrator
        choice = tuple(CalibrationOption.of(r) for r in gate.choice.to_dict("records"))
    for level, alternative in chosen["alternatives"].items():
        scores += _alternative_rows(
            inputs, level, alternative, (cascade, native), cls_probability, out, chunk
        )
    table = ScoreTable(tuple(scores), str(out.scores))
    oof = _oof_summary(table, nested, native, at_size, len(inputs.oof.ids), size)
    spec = EnsembleSpec(
        source=str(out.json),
        gate_weights=gate_weights,
        segmenter_weights=dict(zip(inputs.oof.archs, map(float, seg_weights), strict=True)),
        members={stage: list(names) for stage, names in members.items()},
        cascade=cascade,
        preprocessing=preprocessing,
        calibration=calibrator,
        search=SearchRecord(
            positive_only=tuple(positive_only),
            segmenter_size=size,
            warnings=tuple(chosen["warnings"]),
            weight_search=weight_search,
            oof=oof,
            calibration_choice=choice,
        ),
    )
    _write_outputs(out, spec, table, chosen, inputs.oof, cls_probability, outcomes, calibrated)
    log.info(
        "OOF cascade %.4f at %s, each fold by choices made on the others (in-sample %.4f; %.4f "
        "at %d px; all-empty %.4f, best architecture %.4f) with %s",
        oof.cascade,
        oof.cascade_scored_at.label(),
        oof.cascade_in_sample,
        oof.cascade_in_sample_at_size,
        size,
        oof.all_empty,
        oof.best_architecture,
        cascade,
    )
    return spec


def _segmenter_stage(
    inputs: SearchInputs,
    kept: list[str],
    grid: Grid,
    blend: BlendSearch,
    scratch: ScratchMaps,
    chunk: int,
    gating: Gating | None = None,
) -> tuple[np.ndarray, WeightSearch, list[ScoreRow]]:
    """First pass: single models and architectures scored, the architectures' mean maps written
    into ``scratch`` (at the search size and their own); then the blend search over them."""
    at_size = ScoredAt.maps(inputs.size)
    archs = inputs.oof.archs
    small = scratch.size
    gating = gating or Gating()
    singles, per_arch = _score_models(inputs.oof, inputs.truth, kept, grid, scratch, chunk, gating)
    result = blend.run(len(archs), scratch.scorer(grid, gating, chunk))
    rows: list[ScoreRow] = []
    for (arch, fold, member), rows_of in singles.items():
        rows += rows_of.rows(Level.SINGLE, at_size, arch=arch, fold=fold, member=member)
    for arch in archs:
        rows += per_arch[arch].rows(Level.ARCHITECTURE, at_size, arch=arch)
    log.info(
        "segmenter blend weights %s (%s search at %dpx, %d blends scored)",
        dict(zip(archs, map(float, result.weights), strict=True)),
        blend.method,
        small,
        result.evaluations,
    )
    weight_search = WeightSearch(
        size=small,
        archs=tuple(archs),
        **blend.as_dict(),
        tried=tuple((tuple(map(float, w)), float(s)) for w, s in result.tried),
    )
    return result.weights, weight_search, rows


def _cascade_stage(
    inputs: SearchInputs,
    scratch: ScratchMaps,
    weights: np.ndarray,
    grid: Grid,
    classifier: np.ndarray | None,
    out: SearchOutputs,
    chunk: int,
    needs_gate: bool = False,
) -> tuple[Cascade, list[ScoreRow], ScoreRow, dict]:
    """Second pass: the chosen blend, written once, and the (gate, triplet) grid at the
    segmenters' size; the best cascade (behind a gate above 0 where the blend holds positives-only
    segmenters), the blend's score rows, the cascade's row at this size, and the grid with its edge
    warnings and the best cascade without a gate."""
    configured = list(grid.gates) if classifier is not None else [0.0]
    # Gate 0 is always scored, so the report can show what the gate adds.
    gates = sorted(set(configured) | {0.0})
    above = [g for g in configured if g > 0]
    allowed = allowed_gates(configured, needs_gate)
    blend_rows, cascade_grid = _write_blend(
        inputs.oof,
        inputs.truth,
        scratch,
        weights,
        grid,
        gates,
        classifier,
        out.maps,
        inputs.size,
        chunk,
    )
    cascade, score = cascade_grid.best(allowed)
    at_size = _cascade_row(
        cascade, Level.CASCADE, ScoredAt.maps(inputs.size), len(inputs.oof.ids), score
    )
    warnings = edge_warnings(
        cascade.as_dict(),
        {"gate": configured, "top": grid.tops, "min_area": grid.min_areas, "bottom": grid.bottoms},
        GRID_KEYS,
    )
    for warning in warnings:
        log.warning("%s", warning)
    # What the gate adds, whichever was chosen: the best cascade of the same blend without a gate
    # and the best behind a gate above 0 (where there is an image-level probability).
    alternatives = {}
    if classifier is not None:
        alternatives[Level.CASCADE_UNGATED] = cascade_grid.best([0.0])
        if above:
            alternatives[Level.CASCADE_GATED] = cascade_grid.best(above)
    chosen = {
        "table": cascade_grid.scores(),
        "gates": gates,
        "grid": grid,
        "warnings": warnings,
        "alternatives": alternatives,
    }
    return cascade, blend_rows.rows(Level.BLEND, ScoredAt.maps(inputs.size)), at_size, chosen


def _cascade_row(
    cascade: Cascade, level: Level, scored_at: ScoredAt, images: int, score: float
) -> ScoreRow:
    return ScoreRow(
        Kind.SEGMENTER, level, Metric.COMPETITION, scored_at, images, score, cascade=cascade
    )


def _alternative_rows(
    inputs: SearchInputs,
    level: Level,
    alternative: tuple[Cascade, float],
    chosen: tuple[Cascade, ScoreRow],
    classifier: np.ndarray | None,
    out: SearchOutputs,
    chunk: int,
) -> list[ScoreRow]:
    """Another cascade of the same blend (``level`` 'cascade_ungated': no gate; 'cascade_gated':
    the best gate above 0) at the maps' size and at each image's own size, beside the chosen one
    (``chosen``: its cascade and native-size row, whose score is reused where the two are the
    same cascade rather than drawing every mask at its own size again)."""
    cascade, score = alternative
    ids = inputs.oof.ids
    if cascade == chosen[0]:
        native = chosen[1].score
    else:
        outcomes = _native_outcomes(
            out.maps, ids, inputs.truth, inputs.native, cascade, classifier, chunk
        )
        native = float(outcomes["dice_native"].mean())
    return [
        _cascade_row(cascade, level, ScoredAt.maps(inputs.size), len(ids), score),
        _cascade_row(cascade, level, ScoredAt.native(inputs.native, ids), len(ids), native),
    ]


def _native_stage(
    inputs: SearchInputs,
    cascade: Cascade,
    classifier: np.ndarray | None,
    out: SearchOutputs,
    chunk: int,
) -> tuple[dict[str, np.ndarray], ScoreRow, ScoreRow]:
    """Third pass: the cascade's masks at each image's own size against the label file's masks,
    the competition's own scoring; and the score of predicting every image empty."""
    ids = inputs.oof.ids
    outcomes = _native_outcomes(
        out.maps, ids, inputs.truth, inputs.native, cascade, classifier, chunk
    )
    native_at = ScoredAt.native(inputs.native, ids)
    score = float(outcomes["dice_native"].mean())
    native = _cascade_row(cascade, Level.CASCADE, native_at, len(ids), score)
    all_empty = ScoreRow(
        Kind.SEGMENTER,
        Level.ALL_EMPTY,
        Metric.COMPETITION,
        native_at,
        len(ids),
        float((outcomes["truth_pixels_native"] == 0).mean()),
    )
    return outcomes, native, all_empty


def _oof_summary(
    scores: ScoreTable,
    nested: NestedEstimate | None,
    native: ScoreRow,
    at_size: ScoreRow,
    images: int,
    size: int,
) -> OofSummary:
    """The headline OOF numbers: the cascade at its images' own size, each fold scored by choices
    made on the other folds, with its interval; then the same cascade chosen on these images.
    Without a cross-fitted estimate (one fold) the headline is the in-sample score, labelled so."""
    segmenters = scores.select(kind=Kind.SEGMENTER)
    architectures = segmenters.select(level=Level.ARCHITECTURE, metric=Metric.COMPETITION_TUNED)
    return OofSummary(
        images=images,
        cascade=native.score if nested is None else nested.score,
        cascade_interval=None if nested is None else (nested.low, nested.high),
        cascade_confidence=None if nested is None else nested.confidence,
        cascade_estimate=SelectedOn.SAME_IMAGES if nested is None else SelectedOn.OTHER_FOLDS,
        nested_folds=() if nested is None else tuple(nested.folds),
        cascade_scored_at=native.scored_at,
        cascade_in_sample=native.score,
        cascade_in_sample_at_size=at_size.score,
        cascade_in_sample_estimate=SelectedOn.SAME_IMAGES,
        size=size,
        all_empty=segmenters.one(level=Level.ALL_EMPTY).score,
        blend_default=segmenters.one(level=Level.BLEND, metric=Metric.COMPETITION_DEFAULT).score,
        best_architecture=max(row.score for row in architectures),
    )


def _nested_row(nested: NestedEstimate, native: ScoreRow) -> ScoreRow:
    return ScoreRow(
        Kind.SEGMENTER,
        Level.CASCADE_NESTED,
        Metric.COMPETITION,
        native.scored_at,
        len(nested.dice),
        nested.score,
        interval=(nested.low, nested.high),
    )


def _write_outputs(
    out: SearchOutputs,
    spec: EnsembleSpec,
    scores: ScoreTable,
    chosen: dict,
    oof: OofLayout,
    classifier: np.ndarray | None,
    outcomes: dict[str, np.ndarray],
    calibrated: np.ndarray | None = None,
) -> None:
    spec.write(out.json)
    scores.write(out.scores)
    _write_grid(out.grid, chosen["table"], chosen["gates"], *chosen["grid"].triplet)
    atomic.write_csv(
        out.images,
        pd.DataFrame(
            {
                "image_id": oof.ids,
                "fold": oof.fold_of,
                "classifier_probability": classifier if classifier is not None else np.nan,
                # The gate's probability calibrated by a map fitted on the other folds.
                "calibrated_probability": calibrated if calibrated is not None else np.nan,
                **outcomes,
            }
        ),
    )


def _score_models(
    layout: OofLayout,
    truth_masks: TruthMasks,
    kept: list[str],
    grid: Grid,
    scratch: ScratchMaps,
    chunk: int,
    gating: Gating,
) -> tuple[dict, dict]:
    """One pass over every kept model's maps: the score grids of each single model (per fold) and
    each architecture (its kept members averaged), behind the gate for a positives-only segmenter;
    each architecture's mean maps written into ``scratch``, at their size for the later passes and
    with the true masks at ``scratch.size`` for the blend search."""
    for arch in layout.archs:
        for fold in layout.folds:
            layout.seg[arch].files(fold, kept)  # every kept member is there, or say which is not
    singles: dict[tuple, ScoreRows] = {}
    per_arch = {arch: ScoreRows(grid, gating.gates_for([arch])) for arch in layout.archs}
    shape = (scratch.images, scratch.size, scratch.size)
    full_shape = (scratch.images, scratch.full_size, scratch.full_size)
    with contextlib.ExitStack() as stack:
        out = [stack.enter_context(maps.create(scratch.path(n), shape)) for n in scratch.names]
        full = [
            stack.enter_context(maps.create(scratch.path(n), full_shape))
            for n in scratch.full_names
        ]
        for fold, position, rows, chunk_ids in layout.chunks(chunk):
            truth = truth_masks.stack(chunk_ids)
            probability = part(gating.probability, position, len(chunk_ids))
            where = slice(position, position + len(chunk_ids))
            for k, arch in enumerate(layout.archs):
                stacks = {}
                for member in sorted(layout.seg[arch].folds[fold][1]):
                    stacks[member] = layout.seg[arch].member_rows(fold, member, rows)
                    key = (arch, fold, member)
                    single = singles.setdefault(key, ScoreRows(grid, gating.gates_for([arch])))
                    single.add(Histograms.of(stacks[member], truth), probability)
                mean = members_map([stacks[m] for m in kept])
                per_arch[arch].add(Histograms.of(mean, truth), probability)
                full[k][where] = mean
                out[k][where] = np.stack([resize_image(m, scratch.size) for m in mean])
            out[-1][where] = np.stack([resize_mask(t, scratch.size) for t in truth])
    return singles, per_arch


def _write_blend(
    layout: OofLayout,
    truth_masks: TruthMasks,
    scratch: ScratchMaps,
    weights,
    grid: Grid,
    gates: list[float],
    classifier: np.ndarray | None,
    out_maps: str | os.PathLike,
    size: int,
    chunk: int,
) -> tuple[ScoreRows, CascadeGrid]:
    """One pass writing the chosen blend's maps; its score rows and the (gate, triplet) grid."""
    blend_rows = ScoreRows(grid)
    cascade_grid = CascadeGrid(*grid.triplet, gates)
    with maps.create(out_maps, (len(layout.ids), size, size)) as blended_out:
        for _, position, _, chunk_ids in layout.chunks(chunk):
            blended = blend_maps(scratch.full_means(position, len(chunk_ids)), weights)
            h = Histograms.of(blended, truth_masks.stack(chunk_ids))
            blend_rows.add(h)
            cascade_grid.add(h, part(classifier, position, len(chunk_ids)))
            blended_out[slice(position, position + len(chunk_ids))] = blended
    return blend_rows, cascade_grid


def _image_level(
    classifiers: dict[str, dict[int, str]],
    heads: dict[str, pd.DataFrame],
    members: dict,
    ids: list[str],
    blend: BlendSearch,
) -> tuple[dict[str, float], ImageSources | None, list[ScoreRow]]:
    """The image-level sources (classifiers and segmenter heads): their weights by OOF AUC, the
    sources themselves (whose blend by the weights is the cascade's gate), and score rows: each
    source per fold and member and over all folds, the classifiers' own blend, and the gate's."""
    sources = {
        arch: classifier_oof(files, members[CLASSIFY]).set_index("image_id").loc[ids]
        for arch, files in classifiers.items()
    }
    sources |= {name: table.set_index("image_id").loc[ids] for name, table in heads.items()}
    if not sources:
        return {}, None, []
    labels = next(iter(sources.values()))["has_pneumothorax"].to_numpy()
    rows: list[ScoreRow] = []
    for name, table in sources.items():
        rows += _source_rows(name, table)
    matrix = np.stack([sources[a]["probability"].to_numpy() for a in sources], axis=1)
    names = list(sources)
    ground = ImageSources(names, matrix, labels)
    if classifiers:  # the classifiers alone, as before the heads could join
        only = [k for k, name in enumerate(names) if name in classifiers]
        auc = blend.run(len(only), gate_objective(labels, matrix[:, only])).score
        rows.append(_auc_row(Kind.CLASSIFIER, Level.BLEND, len(labels), auc))
    chosen = ground.choose(blend)
    weights, best_auc = chosen.weights, chosen.score
    rows.append(_auc_row(Kind.GATE, Level.BLEND, len(labels), best_auc))
    log.info(
        "image-level probability (the gate): OOF AUC %.4f with %s",
        best_auc,
        dict(zip(names, map(float, weights), strict=True)),
    )
    return dict(zip(names, map(float, weights), strict=True)), ground, rows


def _auc_row(kind: Kind, level: Level, images: int, score: float, **where) -> ScoreRow:
    return ScoreRow(kind, level, Metric.AUC, ScoredAt.image_level(), images, score, **where)


def _source_rows(name: str, table: pd.DataFrame) -> list[ScoreRow]:
    """AUC of one image-level source (a classifier, or a segmenter's head) per fold and member,
    and over all its folds."""
    arch = head_arch(name) or name
    kind = Kind.CLASSIFIER if arch == name else Kind.HEAD
    rows = []
    for fold in sorted(set(table["fold"])):
        part = table[table["fold"] == fold]
        for member in probability_members(table.columns):
            score = roc_auc(part["has_pneumothorax"], part[probability_column(member)])
            rows.append(
                _auc_row(
                    kind, Level.SINGLE, len(part), score, arch=arch, fold=int(fold), member=member
                )
            )
    rows.append(
        _auc_row(
            kind,
            Level.ARCHITECTURE,
            len(table),
            roc_auc(table["has_pneumothorax"], table["probability"]),
            arch=arch,
        )
    )
    return rows


def _native_outcomes(
    blend_path: str | os.PathLike,
    ids: list[str],
    truth_masks: TruthMasks,
    native: NativeTruth,
    cascade: Cascade,
    classifier: np.ndarray | None,
    chunk: int,
) -> dict[str, np.ndarray]:
    """Per image: pixel counts and Dice at the maps' size, and the same at the image's own size."""
    parts: list[dict] = []
    with maps.MapFile(blend_path) as blended:
        for start, stack in blended.chunks(chunk):
            chunk_ids = ids[start : start + len(stack)]
            probabilities = part(classifier, start, len(stack))
            h = Histograms.of(stack, truth_masks.stack(chunk_ids))
            parts.append(
                {
                    **image_outcomes(h, cascade, probabilities),
                    **native_outcomes(stack, chunk_ids, native, cascade, probabilities),
                }
            )
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def search_rule(params, inputs, outputs, classifiers: dict, segmenters: dict) -> dict:
    """`run_search` as the rules that search call it (``ensemble``, ``ablation_search``): from
    their params (ensemble config, sizes, folds, TTA, normalisation, positives-only segmenters) and
    named input and output files; ``classifiers``/``segmenters`` as `oof_files` gives them."""
    return run_search(
        classifiers=classifiers,
        segmenters=segmenters,
        members=params.ensemble["members"],
        manifest_csv=inputs.manifest,
        size=params.size,
        grid=Grid.from_config(params.ensemble["grid"]),
        rle_csv=inputs.rle,
        index_csv=inputs.index,
        blend=BlendSearch.from_config(params.ensemble["blend"]),
        search_size=params.ensemble["search_size"],
        out_json=outputs.ensemble,
        out_scores=outputs.scores,
        out_grid=outputs.grid,
        out_images=outputs.images,
        out_maps=outputs.maps,
        positive_only=params.positive_only,
        preprocessing=preprocessing(
            Normalisation.from_config(params.normalisation),
            inputs.stats,
            inputs.classify_stats,
            params.size,
            params.classify_size,
            params.n_folds,
            params.tta,
        ),
        calibration=params.ensemble.get("calibration"),
    )


def preprocessing(
    normalisation: Normalisation,
    segment_stats: str | os.PathLike,
    classify_stats: str | os.PathLike,
    segment_size: int,
    classify_size: int,
    n_folds: int,
    tta: list[str],
) -> Preprocessing:
    """What `ptxseg predict` must repeat on a new image: normalisation, sizes, statistics (each
    stage's from its size's repack), TTA."""
    return Preprocessing(
        normalisation,
        {
            segment_size: read_stats(segment_stats, segment_size),
            classify_size: read_stats(classify_stats, classify_size),
        },
        {CLASSIFY: classify_size, SEGMENT: segment_size},
        n_folds,
        list(tta),
    )


def _write_grid(path, table: np.ndarray, gates, tops, areas, bottoms) -> None:
    g, t, a, b = np.meshgrid(gates, tops, areas, bottoms, indexing="ij")
    atomic.write_csv(
        path,
        pd.DataFrame(
            {
                "gate": g.ravel(),
                "top": t.ravel(),
                "min_area": a.ravel(),
                "bottom": b.ravel(),
                "score": table.ravel(),
            }
        ),
    )
