"""The OOF ground the ensemble's searches stand on: the threshold grid, the fold jobs' OOF files
read and aligned over architectures, the true masks, score rows, the gate's role in scoring and the
small maps the blend search scores. Shared by the search on all folds (``ensemble.search``) and its
cross-fitted re-runs (``ensemble.nested``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ptxseg.contracts.scores import Kind, Level, Metric, ScoredAt, ScoreRow
from ptxseg.data.repack import read_manifest
from ptxseg.ensemble.blend import BlendSearch, ScoreMany, one_at_a_time
from ptxseg.io import maps
from ptxseg.io.png import read_grey
from ptxseg.layout import (
    OOF_CSV,
    OOF_IDS,
    Layout,
    oof_maps_file,
    probability_column,
    probability_members,
)
from ptxseg.scoring.cascade import (
    Cascade,
    blend_maps,
    gate_probability,
    members_probability,
)
from ptxseg.scoring.native import NativeTruth
from ptxseg.scoring.thresholds import (
    CascadeGrid,
    Histograms,
)

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
    frame["probability"] = members_probability(
        [table[probability_column(m)].to_numpy() for m in members]
    )
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


def roc_auc(labels, scores) -> float:
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
        self.empty = 0  # images whose true mask at the maps' size is empty

    def add(self, h: Histograms, probability: np.ndarray | None = None) -> None:
        """Without ``gates`` the grids' one gate is 0, which passes every image."""
        self.tuned.add(h, probability)
        self.default.add(h, probability)
        self.empty += int(np.count_nonzero(h.inside.sum(axis=1) == 0))

    def rows(self, level: Level, scored_at: ScoredAt, **where) -> list[ScoreRow]:
        """The default and the tuned score; ``where``: arch, fold, member as they apply."""
        tuned, tuned_score = self.tuned.best()
        images = self.tuned.images
        default = float(self.default.scores().ravel()[0])
        where = {**where, "all_empty": self.empty / images}
        return [
            ScoreRow(
                Kind.SEGMENTER,
                level,
                Metric.COMPETITION_DEFAULT,
                scored_at,
                images,
                default,
                **where,
            ),
            ScoreRow(
                Kind.SEGMENTER,
                level,
                Metric.COMPETITION_TUNED,
                scored_at,
                images,
                tuned_score,
                cascade=tuned,
                **where,
            ),
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


@dataclass(frozen=True)
class Gating:
    """How the first pass scores maps of positives-only segmenters: behind the best of ``gates``
    (those above 0) on the image-level ``probability``."""

    probability: np.ndarray | None = None
    positive_only: list[str] = field(default_factory=list)
    gates: list[float] = field(default_factory=list)

    def gates_for(self, archs_used: list[str]) -> list[float] | None:
        return self.gates if set(archs_used) & set(self.positive_only) else None


@dataclass
class ScratchMaps:
    """Each architecture's mean OOF maps in scratch map files (layout order), written by the first
    pass: at the search size ``size`` with the true masks, read by every batch of the blend
    search; and at the maps' own size, read by the later passes (the cascade's, the cross-fit's)
    instead of reading and averaging every kept member's maps again. A mean map is uint8
    (`members_map`), so the file holds it exactly; the first pass reads the members anyway, to
    score each one."""

    folder: Path
    archs: list[str]
    images: int
    size: int  # the search's
    full_size: int  # the maps' own

    def path(self, name: str) -> Path:
        return self.folder / f"{name}{maps.SUFFIX}"

    @property
    def names(self) -> list[str]:
        """The search-size files: one per architecture, then the true masks."""
        return [*(f"arch{k}" for k in range(len(self.archs))), "truth"]

    @property
    def full_names(self) -> list[str]:
        """The own-size files, one per architecture."""
        return [f"arch{k}_full" for k in range(len(self.archs))]

    def full_means(self, position: int, count: int) -> list[np.ndarray]:
        """Every architecture's mean maps of ``count`` images from ``position`` (layout order), at
        the maps' own size."""
        rows = slice(position, position + count)
        return [maps.read_rows(self.path(name), rows) for name in self.full_names]

    def scorer(self, grid: Grid, gating: Gating, chunk: int, among: np.ndarray | None = None):
        """The blend search's objective: one pass over the small maps scores a batch of candidate
        weight vectors, each blend with its own best triplet (behind the gate where a
        positives-only segmenter has weight). ``among``: the images (a boolean per image, in
        layout order) the scores are taken on; every image where None."""

        def score_many(candidates: np.ndarray) -> list[float]:
            accumulators = []
            for weights in candidates:
                used = [a for a, w in zip(self.archs, weights, strict=True) if w > 0]
                accumulators.append(CascadeGrid(*grid.triplet, gating.gates_for(used)))
            files = [maps.MapFile(self.path(name)) for name in self.names]
            try:
                for start in range(0, self.images, chunk):
                    rows = slice(start, min(start + chunk, self.images))
                    keep = None if among is None else among[rows]
                    if keep is not None and not keep.any():
                        continue  # a held-out fold's chunk: not read
                    *arch_small, truth = (f.read(rows) for f in files)
                    probability = part(gating.probability, start, rows.stop - start)
                    if keep is not None:
                        arch_small, truth = [a[keep] for a in arch_small], truth[keep]
                        probability = None if probability is None else probability[keep]
                    for weights, accumulator in zip(candidates, accumulators, strict=True):
                        h = Histograms.of(blend_maps(arch_small, weights), truth > 0)
                        accumulator.add(h, probability)  # gate 0 passes every image
            finally:
                for f in files:
                    f.close()
            return [float(a.scores().max()) for a in accumulators]

        return score_many


def part(values: np.ndarray | None, start: int, count: int) -> np.ndarray | None:
    return None if values is None else values[start : start + count]


def gate_objective(labels: np.ndarray, matrix: np.ndarray) -> ScoreMany:
    """The gate's blend objective: the OOF ROC AUC of ``matrix @ weights`` (images x sources)
    against ``labels``, -1 where the labels hold one class only."""
    return one_at_a_time(lambda w: float(np.nan_to_num(roc_auc(labels, matrix @ w), nan=-1)))


@dataclass(frozen=True)
class ImageSources:
    """The gate's candidate sources on the OOF images (layout order): their names, probabilities
    (images x sources, each its kept members' mean) and the images' labels."""

    names: list[str]
    matrix: np.ndarray
    labels: np.ndarray

    def choose(self, blend: BlendSearch, among: np.ndarray | None = None):
        """The blend search's result for the gate's weights, on ``among`` (all images if None)."""
        rows = slice(None) if among is None else among
        return blend.run(len(self.names), gate_objective(self.labels[rows], self.matrix[rows]))

    def probability(self, weights) -> np.ndarray:
        """The gate's probability of every image under ``weights`` (the cascade's blend)."""
        return gate_probability([self.matrix[:, k] for k in range(len(self.names))], weights)
