"""A one-model training folder scored the way the searches score it: the triplet tuned on its own
OOF maps (as the ensemble stage tunes the blend's), then the competition metric with the masks drawn
at each image's own size, one common size for candidates of different resolutions. Shared by the
compound-scaling search and the RandAugment search."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ptxseg.contracts.scored_at import ScoredAt
from ptxseg.data.datasets import RepackedImages
from ptxseg.io import maps
from ptxseg.layout import BEST, OOF_IDS, model_file, oof_maps_file
from ptxseg.scoring.cascade import Cascade
from ptxseg.scoring.native import NativeTruth, native_score
from ptxseg.scoring.thresholds import CascadeGrid, Histograms
from ptxseg.train.oof import write_fold_oof
from ptxseg.train.run import siim_held_out, train_fold
from ptxseg.train.settings import FitSettings


@dataclass(frozen=True)
class OneFold:
    """What a search job trains on and is scored against: one held-out fold of the SIIM folds,
    one repacked size, the label file and the index (for each image's own size), the grid
    its triplet is tuned on, and the repacks of a staged recipe's earlier stages (size ->
    (manifest, stats); progressive resizing ends at ``size``)."""

    fold: int
    folds_csv: str | os.PathLike
    manifest_csv: str | os.PathLike
    stats_json: str | os.PathLike
    size: int
    rle_csv: str | os.PathLike
    index_csv: str | os.PathLike
    tuning_grid: dict
    stage_repacks: dict[int, tuple[str | os.PathLike, str | os.PathLike]] | None = None


def train_and_score(
    data: OneFold,
    *,
    arch: str,
    settings: FitSettings,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
    input_size: int | None = None,
    weights: str = "none",
    options: dict | None = None,
    weights_dir: str | None = None,
) -> dict:
    """Train one model of ``arch`` (no snapshots, SWA or EMA) on the fold's other folds, then
    score its OOF maps (``score_held_out``); the scores and the training's seconds."""
    started = time.perf_counter()
    settings = settings.one_model()
    split = dict(
        fold=data.fold,
        folds_csv=data.folds_csv,
        manifest_csv=data.manifest_csv,
        stats_json=data.stats_json,
        size=data.size,
        input_size=input_size,
    )
    train_fold(
        kind="segmenter",
        arch=arch,
        **split,
        settings=settings,
        weights=weights,
        options=options,
        weights_dir=weights_dir,
        out_dir=out_dir,
        state_path=state_path,
        stage_repacks=data.stage_repacks,
    )
    seconds = time.perf_counter() - started
    # Trained and scored in one job: its OOF maps with the job's TTA, as every fold job's.
    models = [model_file(out_dir, member) for member in settings.members]
    write_fold_oof(kind="segmenter", models=models, runtime=settings.runtime, **split)
    return {**score_held_out(data, out_dir, input_size), "train_seconds": round(seconds, 1)}


def score_held_out(
    data: OneFold, out_dir: str | os.PathLike, input_size: int | None = None
) -> dict:
    """The OOF competition score of a one-model training folder's best maps, at each image's own
    size with the triplet tuned on those maps (``oof_score``, ``scored_at``), and the tuned score
    at the maps' own size (``oof_score_at_resolution``)."""
    maps_path = Path(oof_maps_file(out_dir, BEST))
    held_out = siim_held_out(
        data.folds_csv, data.manifest_csv, data.stats_json, data.size, data.fold, input_size
    )
    cascade, at_resolution = tune_triplet(maps_path, held_out, data.tuning_grid)
    ids = pd.read_csv(Path(out_dir) / OOF_IDS, dtype={"image_id": str})["image_id"].tolist()
    truth = NativeTruth(data.rle_csv, data.index_csv)
    return {
        "oof_score": float(native_score(maps_path, ids, truth, cascade)),
        "scored_at": ScoredAt.native(truth, ids).label(),
        "oof_score_at_resolution": float(at_resolution),
        "top": float(cascade.top),
        "min_area": int(cascade.min_area),
        "bottom": float(cascade.bottom),
    }


def tune_triplet(
    maps_path: str | os.PathLike, dataset: RepackedImages, grid: dict, chunk: int = 64
) -> tuple[Cascade, float]:
    """The triplet that suits these maps best on their own images (as the ensemble stage does for
    the blend), and its competition score at the maps' size."""
    tuning = CascadeGrid(grid["top"], grid["min_area"], grid["bottom"])
    with maps.MapFile(maps_path) as stored:
        for start, chunk_maps in stored.chunks(chunk):
            truth = np.stack([dataset.truth_mask(i) for i in range(start, start + len(chunk_maps))])
            tuning.add(Histograms.of(chunk_maps, truth))
    cascade, score = tuning.best()
    return Cascade(top=cascade.top, min_area=cascade.min_area, bottom=cascade.bottom), score
