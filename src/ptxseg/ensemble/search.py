"""The ensemble, chosen on out-of-fold (OOF) predictions only, a chunk of images at a time.

1. The image-level probability (the cascade's gate): each classifier's OOF probability and each
   segmenter head's (where the segmenters have a classification head) is the mean of its kept
   members; the weights of all these sources maximise the OOF ROC AUC (``ensemble.blend``:
   greedy ensemble selection, or the exhaustive simplex grid), so the heads are used alone,
   blended with the classifiers, or not at all, as the OOF says.
2. Segmenters (first pass over the maps): every single model and every architecture (its members
   averaged into one map per image) is scored, and each architecture's mean map is kept at
   ``search_size`` in a scratch file; the blend search then scores its candidate blends of the
   architectures on those small maps, each with its own best triplet, one pass over them per
   batch of candidates (greedy: one pass a step), and the best blend is kept. Segmenters trained on
   positive images only (``positive_only``) draw masks only behind the gate, so every score that
   involves them is taken with a gate above 0.
3. The cascade (second pass): the chosen blend is written to one map file, and the gate and the
   triplet thresholds are searched together at the segmenters' size; the best cascade without a
   gate and the best behind a gate above 0 are kept beside it, to show what the gate adds.
4. The result (third pass): the chosen cascade's masks, each drawn at its image's own size
   (1024 x 1024 for SIIM), against the masks decoded from ``train-rle.csv``: the competition's
   own way of scoring, and the score the pipeline reports.

Every pass reads the maps ``chunk`` images at a time and keeps only per-image numbers and the
score grids, so its memory is set by the chunk size, not by the number of images. Every score
row says at which size it was computed (``scored_at``); the search's choices that sit on the
edge of their grid are reported as warnings naming the key to widen.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ptxseg.data.repack import Normalisation, read_manifest, resize_image, resize_mask
from ptxseg.ensemble.blend import BlendSearch, ScoreMany, blend_uint8, one_at_a_time
from ptxseg.ensemble.calibrate import calibrate_gate
from ptxseg.grids import edge_warnings
from ptxseg.io import atomic, maps
from ptxseg.io.png import read_grey
from ptxseg.layout import (
    OOF_CSV,
    OOF_IDS,
    Layout,
    head_arch,
    head_source,
    oof_maps_file,
    probability_column,
    probability_members,
)
from ptxseg.scoring.native import NativeTruth, native_outcomes
from ptxseg.scoring.thresholds import (
    Cascade,
    CascadeGrid,
    Histograms,
    image_outcomes,
)

log = logging.getLogger(__name__)

IMAGE_LEVEL = "image level"  # where classifier scores are computed: one probability an image
CHUNK = 32  # images per read: 15 kept models x 32 maps at 512 px are ~120 MB


@dataclass(frozen=True)
class Grid:
    """Candidate thresholds; ``min_areas`` in pixels of a 1024 x 1024 image."""

    gates: tuple[float, ...]
    tops: tuple[float, ...]
    min_areas: tuple[float, ...]
    bottoms: tuple[float, ...]

    @classmethod
    def from_config(cls, grid: dict) -> Grid:
        return cls(
            tuple(grid["gate"]), tuple(grid["top"]), tuple(grid["min_area"]), tuple(grid["bottom"])
        )

    @property
    def triplet(self) -> tuple[list, list, list]:
        return list(self.tops), list(self.min_areas), list(self.bottoms)


DEFAULT_CASCADE = Cascade(gate=0.0, top=0.5, min_area=0.0, bottom=0.5)
# Natural bounds: a chosen value there cannot be beaten by widening the grid past it.
GRID_KEYS = {
    "gate": ("ensemble.grid.gate", 0.0, 1.0),
    "top": ("ensemble.grid.top", 0.0, 1.0),
    "min_area": ("ensemble.grid.min_area", 0.0, None),
    "bottom": ("ensemble.grid.bottom", 0.0, 1.0),
}


@dataclass
class SegmenterOof:
    """One architecture's OOF maps: per fold, the image ids and the kept members' map files."""

    arch: str
    folds: dict[int, tuple[list[str], dict[str, Path]]]

    def files(self, fold: int, members: list[str]) -> list[Path]:
        _, files = self.folds[fold]
        missing = [m for m in members if m not in files]
        if missing:
            raise ValueError(
                f"{self.arch} fold {fold}: no OOF maps for member(s) {missing}; "
                f"kept: {sorted(files)}"
            )
        return [files[m] for m in members]

    def member_rows(self, fold: int, member: str, rows) -> np.ndarray:
        return maps.read_rows(self.folds[fold][1][member], rows)

    def mean_rows(self, fold: int, members: list[str], rows) -> np.ndarray:
        """The members' mean map of the given rows of ``fold``, as uint8."""
        stacks = [maps.read_rows(path, rows) for path in self.files(fold, members)]
        return blend_uint8(stacks, [1.0] * len(stacks))


@dataclass(frozen=True)
class SegmenterFold:
    """The files of one segmenter fold job the search reads: its OOF image order and maps."""

    ids_csv: Path
    maps: dict[str, Path]  # kept member -> its OOF maps

    @classmethod
    def in_folder(cls, folder: str | os.PathLike, members: list[str]) -> SegmenterFold:
        """The members' files in a fold job's folder, by the names ``ptxseg.layout`` gives them."""
        return cls(Path(folder) / OOF_IDS, {m: Path(oof_maps_file(folder, m)) for m in members})


def oof_files(
    layout: Layout,
    classify_archs: list[str],
    segment_archs: list[str],
    n_folds: int,
    kept: list[str],
) -> tuple[dict[str, dict[int, str]], dict[str, dict[int, SegmenterFold]]]:
    """The OOF files of every fold job, where ``layout`` puts them: classifier CSVs and segmenter
    files (of the ``kept`` members, each scored on its own as well)."""
    classifiers = {
        arch: {k: layout.fold_file("classify", arch, k, OOF_CSV) for k in range(n_folds)}
        for arch in classify_archs
    }
    segmenters = {
        arch: {
            k: SegmenterFold.in_folder(layout.fold_dir("segment", arch, k), kept)
            for k in range(n_folds)
        }
        for arch in segment_archs
    }
    return classifiers, segmenters


def head_oof(arch: str, folds: dict[int, SegmenterFold], members: list[str]) -> pd.DataFrame | None:
    """image_id, fold, label, the kept members' mean head probability and each member's, over
    every fold; None where the segmenter has no classification head."""
    frames = []
    for fold, files in folds.items():
        table = pd.read_csv(files.ids_csv, dtype={"image_id": str})
        if not all(probability_column(m) in table for m in members):
            return None
        frames.append(_probabilities_of(table, fold, members))
    return pd.concat(frames, ignore_index=True)


def _probabilities_of(table: pd.DataFrame, fold: int, members: list[str]) -> pd.DataFrame:
    """One fold's image_id, label, fold, the members' mean probability and each member's."""
    frame = table[["image_id", "has_pneumothorax"]].copy()
    frame["fold"] = fold
    frame["probability"] = table[[probability_column(m) for m in members]].mean(axis=1)
    for m in probability_members(table.columns):
        frame[probability_column(m)] = table[probability_column(m)]
    return frame


def segmenter_oof(arch: str, folds: dict[int, SegmenterFold]) -> SegmenterOof:
    read = {}
    for fold, files in folds.items():
        ids = pd.read_csv(files.ids_csv, dtype={"image_id": str})["image_id"].tolist()
        read[fold] = (ids, dict(files.maps))
    return SegmenterOof(arch, read)


def classifier_oof(fold_csvs: dict[int, str | os.PathLike], members: list[str]) -> pd.DataFrame:
    """image_id, fold, label and the members' mean probability, over every fold."""
    frames = []
    for fold, path in fold_csvs.items():
        table = pd.read_csv(path, dtype={"image_id": str})
        missing = [m for m in members if probability_column(m) not in table]
        if missing:
            raise ValueError(f"{path}: no OOF column for member(s) {missing}")
        frames.append(_probabilities_of(table, fold, members))
    return pd.concat(frames, ignore_index=True)


def _auc(labels, scores) -> float:
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


class TruthMasks:
    """True masks of the OOF images at the segmenters' size, read from the repacked PNGs on request."""

    def __init__(self, manifest_csv: str | os.PathLike, size: int) -> None:
        manifest = read_manifest(manifest_csv)
        rows = manifest[(manifest["size"] == size) & (manifest["split"] == "train")]
        self.paths = dict(zip(rows["image_id"], rows["mask"], strict=True))
        self.root = Path(manifest_csv).parent  # the manifest's paths are relative to its folder

    def stack(self, image_ids: list[str]) -> np.ndarray:
        return np.stack([read_grey(self.root / self.paths[i]) > 127 for i in image_ids])


class ScoreRows:
    """A set of maps scored at the default binarisation (0.5, no area) and with its own best
    triplet; behind the best of ``gates`` where given (maps of positives-only segmenters)."""

    def __init__(self, grid: Grid, gates: list[float] | None = None) -> None:
        self.tuned = CascadeGrid(*grid.triplet, gates)
        self.default = CascadeGrid(
            [DEFAULT_CASCADE.top], [DEFAULT_CASCADE.min_area], [DEFAULT_CASCADE.bottom], gates
        )

    def add(self, h: Histograms, probability: np.ndarray | None = None) -> None:
        """Without ``gates`` the grids' one gate is 0, which passes every image."""
        self.tuned.add(h, probability)
        self.default.add(h, probability)

    def rows(self, level: str, scored_at: str, **where) -> list[dict]:
        tuned, tuned_score = self.tuned.best()
        base = {"kind": "segmenter", "level": level, **where, "images": self.tuned.images}
        return [
            {
                **base,
                "metric": "competition_default",
                "score": float(self.default.scores().ravel()[0]),
                "scored_at": scored_at,
            },
            {
                **base,
                "metric": "competition_tuned",
                "score": tuned_score,
                "scored_at": scored_at,
                **{f"cascade_{k}": v for k, v in tuned.as_dict().items()},
            },
        ]


@dataclass
class OofLayout:
    """The segmenters' OOF maps, aligned: every architecture lists the same images per fold."""

    seg: dict[str, SegmenterOof]

    def __post_init__(self) -> None:
        self.archs = list(self.seg)
        first = self.seg[self.archs[0]]
        self.folds = sorted(first.folds)
        for arch in self.archs[1:]:
            for fold in self.folds:
                if self.seg[arch].folds[fold][0] != first.folds[fold][0]:
                    raise ValueError(
                        f"OOF image order of {arch} fold {fold} differs from {self.archs[0]}'s"
                    )
        self.ids = [i for fold in self.folds for i in self.fold_ids(fold)]
        self.fold_of = [fold for fold in self.folds for _ in self.fold_ids(fold)]

    def fold_ids(self, fold: int) -> list[str]:
        return self.seg[self.archs[0]].folds[fold][0]

    def chunks(self, chunk: int) -> Iterator[tuple[int, int, slice, list[str]]]:
        """(fold, position of the chunk's first image over all folds, rows in the fold, ids)."""
        position = 0
        for fold in self.folds:
            ids = self.fold_ids(fold)
            for start in range(0, len(ids), chunk):
                stop = min(start + chunk, len(ids))
                yield fold, position + start, slice(start, stop), ids[start:stop]
            position += len(ids)


@dataclass(frozen=True)
class SearchOutputs:
    """Where the search writes: the choice, the score table, the cascade grid, the per-image
    outcomes and the blended OOF maps."""

    json: str | os.PathLike
    scores: str | os.PathLike
    grid: str | os.PathLike
    images: str | os.PathLike
    maps: str | os.PathLike


@dataclass
class SearchInputs:
    """The OOF ground of the search, opened once: maps aligned over architectures, true masks at
    the segmenters' size, the classifiers' OOF files and the label file for native scoring."""

    oof: OofLayout
    truth: TruthMasks
    classifiers: dict[str, dict[int, str]]
    native: NativeTruth
    size: int


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
    preprocessing: dict | None = None,
    calibration: dict | None = None,
    positive_only: list[str] | tuple[str, ...] = (),
    chunk: int = CHUNK,
) -> dict:
    """Choose weights and thresholds on OOF predictions; write them, the score table, the per-image
    outcomes and the blended OOF maps.

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
    cls_weights, cls_probability, scores = _image_level(
        classifiers, heads, members, inputs.oof.ids, blend
    )
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
    seg_weights, weight_search, rows = _segmenter_stage(
        inputs,
        members["segment"],
        grid,
        blend,
        search_size,
        chunk,
        Gating(cls_probability, list(positive_only), gated),
        Path(out.maps).parent,
    )
    scores += rows
    needs_gate = any(
        w > 0 and a in positive_only for a, w in zip(inputs.oof.archs, seg_weights, strict=True)
    )
    cascade, blend_rows, at_size, chosen = _cascade_stage(
        inputs, members["segment"], seg_weights, grid, cls_probability, out, chunk, needs_gate
    )
    outcomes, native, all_empty = _native_stage(inputs, cascade, cls_probability, out, chunk)
    scores += [*blend_rows, native, at_size, all_empty]
    calibrated = None
    if cls_probability is not None:  # the gate's calibration, on every OOF image's own label
        gate = calibrate_gate(
            cls_probability,
            outcomes["truth_pixels_native"] > 0,
            np.asarray(inputs.oof.fold_of),
            **(calibration or {}),
        )
        scores += gate.rows
        calibrated = gate.calibrated_oof
    for level, alternative in chosen["alternatives"].items():
        scores += _alternative_rows(
            inputs, level, alternative, (cascade, native), cls_probability, out, chunk
        )
    result = {
        "classifier_weights": cls_weights,
        "segmenter_weights": dict(zip(inputs.oof.archs, map(float, seg_weights), strict=True)),
        "positive_only": list(positive_only),
        "members": members,
        "cascade": cascade.as_dict(),
        "segmenter_size": size,
        "preprocessing": preprocessing or {},
        "warnings": chosen["warnings"],
        "weight_search": weight_search,
        "oof": _oof_summary(scores, native, at_size, len(inputs.oof.ids), size),
    }
    if calibrated is not None:
        result["calibration"] = gate.calibrator.to_dict()
        # NaN (a method the inputs could not score) as null: ensemble.json stays strict JSON.
        choice = gate.choice.astype(object).where(gate.choice.notna(), None)
        result["calibration_choice"] = choice.to_dict("records")
    _write_outputs(out, result, scores, chosen, inputs.oof, cls_probability, outcomes, calibrated)
    log.info(
        "OOF cascade %.4f at %s (%.4f at %d px; all-empty %.4f, best architecture %.4f) with %s",
        result["oof"]["cascade"],
        result["oof"]["cascade_scored_at"],
        result["oof"]["cascade_at_size"],
        size,
        result["oof"]["all_empty"],
        result["oof"]["best_architecture"],
        cascade,
    )
    return result


@dataclass(frozen=True)
class Gating:
    """How the first pass scores maps of positives-only segmenters: behind the best of ``gates``
    (those above 0) on the image-level ``probability``."""

    probability: np.ndarray | None = None
    positive_only: list[str] = field(default_factory=list)
    gates: list[float] = field(default_factory=list)

    def gates_for(self, archs_used: list[str]) -> list[float] | None:
        return self.gates if set(archs_used) & set(self.positive_only) else None


def _segmenter_stage(
    inputs: SearchInputs,
    kept: list[str],
    grid: Grid,
    blend: BlendSearch,
    search_size: int,
    chunk: int,
    gating: Gating | None = None,
    scratch: str | os.PathLike | None = None,
) -> tuple[np.ndarray, dict, list[dict]]:
    """First pass: single models and architectures scored, the architectures' mean maps kept at
    the search size (in a scratch folder under ``scratch``); then the blend search over them."""
    at_size = f"{inputs.size} px"
    archs = inputs.oof.archs
    small = min(search_size, inputs.size)
    gating = gating or Gating()
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".blend_search_") as folder:
        small_maps = SmallMaps(Path(folder), archs, len(inputs.oof.ids), small)
        singles, per_arch = _score_models(
            inputs.oof, inputs.truth, kept, grid, small_maps, chunk, gating
        )
        result = blend.run(len(archs), small_maps.scorer(grid, gating, chunk))
    rows: list[dict] = []
    for (arch, fold, member), rows_of in singles.items():
        rows += rows_of.rows("single", at_size, arch=arch, fold=fold, member=member)
    for arch in archs:
        rows += per_arch[arch].rows("architecture", at_size, arch=arch)
    log.info(
        "segmenter blend weights %s (%s search at %dpx, %d blends scored)",
        dict(zip(archs, map(float, result.weights), strict=True)),
        blend.method,
        small,
        result.evaluations,
    )
    weight_search = {
        "size": small,
        **blend.as_dict(),
        "evaluations": result.evaluations,
        "tried": [{"weights": w, "score": s} for w, s in result.tried],
    }
    return result.weights, weight_search, rows


@dataclass
class SmallMaps:
    """Each architecture's mean OOF maps and the true masks at the search size, in scratch map
    files (layout order), written by the first pass and read by every batch of the blend search."""

    folder: Path
    archs: list[str]
    images: int
    size: int

    def path(self, name: str) -> Path:
        return self.folder / f"{name}{maps.SUFFIX}"

    @property
    def names(self) -> list[str]:
        return [*(f"arch{k}" for k in range(len(self.archs))), "truth"]

    def scorer(self, grid: Grid, gating: Gating, chunk: int):
        """The blend search's objective: one pass over the small maps scores a batch of candidate
        weight vectors, each blend with its own best triplet (behind the gate where a
        positives-only segmenter has weight)."""

        def score_many(candidates: np.ndarray) -> list[float]:
            accumulators = []
            for weights in candidates:
                used = [a for a, w in zip(self.archs, weights, strict=True) if w > 0]
                accumulators.append(CascadeGrid(*grid.triplet, gating.gates_for(used)))
            files = [maps.MapFile(self.path(name)) for name in self.names]
            try:
                for start in range(0, self.images, chunk):
                    rows = slice(start, min(start + chunk, self.images))
                    *arch_small, truth = (f.read(rows) for f in files)
                    probability = _part(gating.probability, start, rows.stop - start)
                    for weights, accumulator in zip(candidates, accumulators, strict=True):
                        h = Histograms.of(blend_uint8(arch_small, weights), truth > 0)
                        accumulator.add(h, probability)  # gate 0 passes every image
            finally:
                for f in files:
                    f.close()
            return [float(a.scores().max()) for a in accumulators]

        return score_many


def _cascade_stage(
    inputs: SearchInputs,
    kept: list[str],
    weights: np.ndarray,
    grid: Grid,
    classifier: np.ndarray | None,
    out: SearchOutputs,
    chunk: int,
    needs_gate: bool = False,
) -> tuple[Cascade, list[dict], dict, dict]:
    """Second pass: the chosen blend, written once, and the (gate, triplet) grid at the
    segmenters' size; the best cascade (behind a gate above 0 where the blend holds positives-only
    segmenters), the blend's score rows, the cascade's row at this size, and the grid with its edge
    warnings and the best cascade without a gate."""
    configured = list(grid.gates) if classifier is not None else [0.0]
    # Gate 0 is always scored, so the report can show what the gate adds.
    gates = sorted(set(configured) | {0.0})
    above = [g for g in configured if g > 0]
    allowed = above if needs_gate else configured
    blend_rows, cascade_grid = _write_blend(
        inputs.oof,
        inputs.truth,
        kept,
        weights,
        grid,
        gates,
        classifier,
        out.maps,
        inputs.size,
        chunk,
    )
    cascade, score = cascade_grid.best(allowed)
    at_size = {
        **_cascade_row(cascade, len(inputs.oof.ids)),
        "score": score,
        "scored_at": f"{inputs.size} px",
    }
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
        alternatives["cascade_ungated"] = cascade_grid.best([0.0])
        if above:
            alternatives["cascade_gated"] = cascade_grid.best(above)
    chosen = {
        "table": cascade_grid.scores(),
        "gates": gates,
        "grid": grid,
        "warnings": warnings,
        "alternatives": alternatives,
    }
    return cascade, blend_rows.rows("blend", f"{inputs.size} px"), at_size, chosen


def _cascade_row(cascade: Cascade, images: int) -> dict:
    return {
        "kind": "segmenter",
        "level": "cascade",
        "metric": "competition",
        "images": images,
        **{f"cascade_{k}": v for k, v in cascade.as_dict().items()},
    }


def _alternative_rows(
    inputs: SearchInputs,
    level: str,
    alternative: tuple[Cascade, float],
    chosen: tuple[Cascade, dict],
    classifier: np.ndarray | None,
    out: SearchOutputs,
    chunk: int,
) -> list[dict]:
    """Another cascade of the same blend (``level`` 'cascade_ungated': no gate; 'cascade_gated':
    the best gate above 0) at the maps' size and at each image's own size, beside the chosen one
    (``chosen``: its cascade and native-size row, whose score is reused where the two are the
    same cascade rather than drawing every mask at its own size again)."""
    cascade, score = alternative
    ids = inputs.oof.ids
    if cascade == chosen[0]:
        native = chosen[1]["score"]
    else:
        outcomes = _native_outcomes(
            out.maps, ids, inputs.truth, inputs.native, cascade, classifier, chunk
        )
        native = float(outcomes["dice_native"].mean())
    row = {**_cascade_row(cascade, len(ids)), "level": level}
    return [
        {**row, "score": score, "scored_at": f"{inputs.size} px"},
        {**row, "score": native, "scored_at": inputs.native.size_label(ids)},
    ]


def _native_stage(
    inputs: SearchInputs,
    cascade: Cascade,
    classifier: np.ndarray | None,
    out: SearchOutputs,
    chunk: int,
) -> tuple[dict[str, np.ndarray], dict, dict]:
    """Third pass: the cascade's masks at each image's own size against the label file's masks,
    the competition's own scoring; and the score of predicting every image empty."""
    ids = inputs.oof.ids
    outcomes = _native_outcomes(
        out.maps, ids, inputs.truth, inputs.native, cascade, classifier, chunk
    )
    native_at = inputs.native.size_label(ids)
    native = {
        **_cascade_row(cascade, len(ids)),
        "score": float(outcomes["dice_native"].mean()),
        "scored_at": native_at,
    }
    all_empty = {
        "kind": "segmenter",
        "level": "all_empty",
        "metric": "competition",
        "images": len(ids),
        "score": float((outcomes["truth_pixels_native"] == 0).mean()),
        "scored_at": native_at,
    }
    return outcomes, native, all_empty


def _oof_summary(scores: list[dict], native: dict, at_size: dict, images: int, size: int) -> dict:
    """The headline OOF numbers: the cascade at its images' own size first."""
    return {
        "images": images,
        "cascade": native["score"],
        "cascade_scored_at": native["scored_at"],
        "cascade_at_size": at_size["score"],
        "size": size,
        "all_empty": next(r["score"] for r in scores if r["level"] == "all_empty"),
        "blend_default": next(
            r["score"]
            for r in scores
            if r["level"] == "blend" and r["metric"] == "competition_default"
        ),
        "best_architecture": max(
            r["score"]
            for r in scores
            if r["level"] == "architecture" and r["metric"] == "competition_tuned"
        ),
    }


def _write_outputs(
    out: SearchOutputs,
    result: dict,
    scores: list[dict],
    chosen: dict,
    oof: OofLayout,
    classifier: np.ndarray | None,
    outcomes: dict[str, np.ndarray],
    calibrated: np.ndarray | None = None,
) -> None:
    atomic.write_json(out.json, result)
    atomic.write_csv(out.scores, pd.DataFrame(scores))
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
    small: SmallMaps,
    chunk: int,
    gating: Gating,
) -> tuple[dict, dict]:
    """One pass over every kept model's maps: the score grids of each single model (per fold) and
    each architecture (its kept members averaged), behind the gate for a positives-only segmenter;
    each architecture's mean maps and the true masks written at ``small.size`` for the blend search."""
    for arch in layout.archs:
        for fold in layout.folds:
            layout.seg[arch].files(fold, kept)  # every kept member is there, or say which is not
    singles: dict[tuple, ScoreRows] = {}
    per_arch = {arch: ScoreRows(grid, gating.gates_for([arch])) for arch in layout.archs}
    shape = (small.images, small.size, small.size)
    with contextlib.ExitStack() as stack:
        out = [stack.enter_context(maps.create(small.path(n), shape)) for n in small.names]
        for fold, position, rows, chunk_ids in layout.chunks(chunk):
            truth = truth_masks.stack(chunk_ids)
            probability = _part(gating.probability, position, len(chunk_ids))
            where = slice(position, position + len(chunk_ids))
            for k, arch in enumerate(layout.archs):
                stacks = {}
                for member in sorted(layout.seg[arch].folds[fold][1]):
                    stacks[member] = layout.seg[arch].member_rows(fold, member, rows)
                    key = (arch, fold, member)
                    single = singles.setdefault(key, ScoreRows(grid, gating.gates_for([arch])))
                    single.add(Histograms.of(stacks[member], truth), probability)
                mean = blend_uint8([stacks[m] for m in kept], [1.0] * len(kept))
                per_arch[arch].add(Histograms.of(mean, truth), probability)
                out[k][where] = np.stack([resize_image(m, small.size) for m in mean])
            out[-1][where] = np.stack([resize_mask(t, small.size) for t in truth])
    return singles, per_arch


def _write_blend(
    layout: OofLayout,
    truth_masks: TruthMasks,
    kept: list[str],
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
        for fold, position, rows, chunk_ids in layout.chunks(chunk):
            means = [layout.seg[arch].mean_rows(fold, kept, rows) for arch in layout.archs]
            blended = blend_uint8(means, weights)
            h = Histograms.of(blended, truth_masks.stack(chunk_ids))
            blend_rows.add(h)
            cascade_grid.add(h, _part(classifier, position, len(chunk_ids)))
            blended_out[slice(position, position + len(chunk_ids))] = blended
    return blend_rows, cascade_grid


def _part(values: np.ndarray | None, start: int, count: int) -> np.ndarray | None:
    return None if values is None else values[start : start + count]


def _image_level(
    classifiers: dict[str, dict[int, str]],
    heads: dict[str, pd.DataFrame],
    members: dict,
    ids: list[str],
    blend: BlendSearch,
) -> tuple[dict, np.ndarray | None, list[dict]]:
    """The image-level sources (classifiers and segmenter heads): their weights by OOF AUC, the
    blended probability per OOF image (the cascade's gate), and score rows: each source per fold
    and member and over all folds, the classifiers' own blend, and the gate's blend."""
    sources = {
        arch: classifier_oof(files, members["classify"]).set_index("image_id").loc[ids]
        for arch, files in classifiers.items()
    }
    sources |= {name: table.set_index("image_id").loc[ids] for name, table in heads.items()}
    if not sources:
        return {}, None, []
    labels = next(iter(sources.values()))["has_pneumothorax"].to_numpy()
    rows: list[dict] = []
    for name, table in sources.items():
        rows += _source_rows(name, table)
    matrix = np.stack([sources[a]["probability"].to_numpy() for a in sources], axis=1)
    names = list(sources)
    if classifiers:  # the classifiers alone, as before the heads could join
        only = [k for k, name in enumerate(names) if name in classifiers]
        auc = blend.run(len(only), gate_objective(labels, matrix[:, only])).score
        rows.append(_auc_row("classifier", "blend", len(labels), auc))
    chosen = blend.run(len(names), gate_objective(labels, matrix))
    weights, best_auc = chosen.weights, chosen.score
    rows.append(_auc_row("gate", "blend", len(labels), best_auc))
    log.info(
        "image-level probability (the gate): OOF AUC %.4f with %s",
        best_auc,
        dict(zip(names, map(float, weights), strict=True)),
    )
    return dict(zip(names, map(float, weights), strict=True)), matrix @ weights, rows


def gate_objective(labels: np.ndarray, matrix: np.ndarray) -> ScoreMany:
    """The gate's blend objective: the OOF ROC AUC of ``matrix @ weights`` (images x sources)
    against ``labels``, -1 where the labels hold one class only."""
    return one_at_a_time(lambda w: float(np.nan_to_num(_auc(labels, matrix @ w), nan=-1)))


def _auc_row(kind: str, level: str, images: int, score: float, **where) -> dict:
    return {
        "kind": kind,
        "level": level,
        **where,
        "metric": "auc",
        "scored_at": IMAGE_LEVEL,
        "images": images,
        "score": score,
    }


def _source_rows(name: str, table: pd.DataFrame) -> list[dict]:
    """AUC of one image-level source (a classifier, or a segmenter's head) per fold and member,
    and over all its folds."""
    arch = head_arch(name) or name
    kind = "classifier" if arch == name else "head"
    rows = []
    for fold in sorted(set(table["fold"])):
        part = table[table["fold"] == fold]
        for member in probability_members(table.columns):
            score = _auc(part["has_pneumothorax"], part[probability_column(member)])
            rows.append(
                _auc_row(kind, "single", len(part), score, arch=arch, fold=fold, member=member)
            )
    rows.append(
        _auc_row(
            kind,
            "architecture",
            len(table),
            _auc(table["has_pneumothorax"], table["probability"]),
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
            probabilities = _part(classifier, start, len(stack))
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
            [inputs.stats, inputs.classify_stats],
            params.size,
            params.classify_size,
            params.n_folds,
            params.tta,
        ),
        calibration=params.ensemble.get("calibration"),
    )


def preprocessing(
    normalisation: Normalisation,
    stats_jsons: list[str | os.PathLike],
    segment_size: int,
    classify_size: int,
    n_folds: int,
    tta: list[str],
) -> dict:
    """What `ptxseg predict` must repeat on a new image: normalisation, sizes, statistics (of each
    size's repack), TTA."""
    stats = {}
    for path in stats_jsons:
        stats.update(json.loads(Path(path).read_text()))
    return {
        "normalisation": asdict(normalisation),
        "stats": dict(sorted(stats.items(), key=lambda item: int(item[0]))),
        "segment_size": segment_size,
        "classify_size": classify_size,
        "n_folds": n_folds,
        "tta": list(tta),
    }


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
