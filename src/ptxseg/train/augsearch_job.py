"""File-level step of the RandAugment policy search: train and score one (n, m) point.

Every point trains the configured segmenter on the same fold with the segment stage's recipe for
that architecture, its ``augment`` replaced by `ptxseg.data.randaugment.randaugment_policy` (a
horizontal flip, then RandAugment(n, m)), keeping one model (no snapshots, no SWA). It is scored
as a scaling candidate is: the competition metric on its held-out images with its own best
triplet, the masks drawn at each image's own size. Their summary is `ptxseg.report.augsearch`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import pandas as pd

from ptxseg.data.randaugment import randaugment_policy
from ptxseg.io import atomic
from ptxseg.layout import BEST, OOF_IDS, augsearch_point_of, oof_maps_file
from ptxseg.scoring.native import NativeTruth, native_score
from ptxseg.train.run import siim_held_out, train_fold
from ptxseg.train.scaling_job import tune_triplet
from ptxseg.train.settings import FitSettings

log = logging.getLogger(__name__)


def score_held_out(
    *,
    out_dir: str | os.PathLike,
    folds_csv: str | os.PathLike,
    manifest_csv: str | os.PathLike,
    stats_json: str | os.PathLike,
    size: int,
    fold: int,
    rle_csv: str | os.PathLike,
    index_csv: str | os.PathLike,
    tuning_grid: dict,
    input_size: int | None = None,
) -> dict:
    """The OOF competition score of a one-model training folder's best maps, at each image's own
    size with the triplet tuned on those maps (``oof_score``, ``scored_at``), and the tuned score
    at the maps' own size (``oof_score_at_resolution``)."""
    maps_path = Path(oof_maps_file(out_dir, BEST))
    held_out = siim_held_out(folds_csv, manifest_csv, stats_json, size, fold, input_size)
    cascade, at_resolution = tune_triplet(maps_path, held_out, tuning_grid)
    ids = pd.read_csv(Path(out_dir) / OOF_IDS, dtype={"image_id": str})["image_id"].tolist()
    truth = NativeTruth(rle_csv, index_csv)
    return {
        "oof_score": float(native_score(maps_path, ids, truth, cascade)),
        "scored_at": truth.size_label(ids),
        "oof_score_at_resolution": float(at_resolution),
        "top": float(cascade.top),
        "min_area": int(cascade.min_area),
        "bottom": float(cascade.bottom),
    }


def train_point(
    *,
    point: str,
    arch: str,
    fold: int,
    folds_csv: str | os.PathLike,
    manifest_csv: str | os.PathLike,
    stats_json: str | os.PathLike,
    size: int,
    settings: FitSettings,
    weights: str = "none",
    options: dict | None = None,
    weights_dir: str | None = None,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
    rle_csv: str | os.PathLike,
    index_csv: str | os.PathLike,
    tuning_grid: dict,
) -> dict:
    """Train ``arch`` on ``fold`` with RandAugment at ``point`` (``n<N>_m<M>``) in place of the
    recipe's augmentation (one model), score its OOF maps; write and return its row."""
    n, m = augsearch_point_of(point)
    policy = randaugment_policy(n, m)
    started = time.perf_counter()
    train_fold(
        kind="segmenter",
        arch=arch,
        fold=fold,
        folds_csv=folds_csv,
        manifest_csv=manifest_csv,
        stats_json=stats_json,
        size=size,
        settings=dataclasses.replace(settings.one_model(), augment=policy),
        weights=weights,
        options=options,
        weights_dir=weights_dir,
        out_dir=out_dir,
        state_path=state_path,
    )
    seconds = time.perf_counter() - started
    scores = score_held_out(
        out_dir=out_dir,
        folds_csv=folds_csv,
        manifest_csv=manifest_csv,
        stats_json=stats_json,
        size=size,
        fold=fold,
        rle_csv=rle_csv,
        index_csv=index_csv,
        tuning_grid=tuning_grid,
    )
    row = {
        "point": point,
        "n": n,
        "m": m,
        "arch": arch,
        "fold": fold,
        "size": size,
        **scores,
        "train_seconds": round(seconds, 1),
        "augment": policy,
    }
    atomic.write_json(Path(out_dir) / "row.json", row)
    log.info(
        "RandAugment n=%d m=%d (%s, fold %d): OOF %.4f at %s (%.4f on its %d px maps)",
        n,
        m,
        arch,
        fold,
        row["oof_score"],
        row["scored_at"],
        row["oof_score_at_resolution"],
        size,
    )
    return row
