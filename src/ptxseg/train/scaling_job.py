"""File-level step of the compound-scaling search: train and score one candidate.

Every candidate (and the B0 it is scaled from) trains the scaled U-Net on the same fold with the
same recipe, its input side the compound-scaled resolution, and is scored by the competition
metric on its held-out images with its own best triplet (searched on its own maps, as the ensemble
stage would), the masks drawn at each image's own size against the label file: one common size,
so candidates of different resolutions compare fairly. Their summary is `ptxseg.report.scaling`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ptxseg.data.datasets import RepackedImages
from ptxseg.data.repack import read_manifest
from ptxseg.io import atomic, maps
from ptxseg.layout import BEST, OOF_IDS, oof_maps_file
from ptxseg.models import build_model
from ptxseg.models.flops import flops_per_image, parameter_count
from ptxseg.models.scaled_unet.compound import candidate_multipliers, candidate_shape
from ptxseg.scoring.native import NativeTruth, native_score
from ptxseg.scoring.thresholds import Cascade, CascadeGrid, Histograms
from ptxseg.train.run import siim_held_out, train_fold
from ptxseg.train.settings import FitSettings

log = logging.getLogger(__name__)


def train_candidate(
    *,
    name: str,
    scaling: dict,
    folds_csv: str | os.PathLike,
    manifest_csv: str | os.PathLike,
    stats_json: str | os.PathLike,
    settings: FitSettings,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
    rle_csv: str | os.PathLike,
    index_csv: str | os.PathLike,
    tuning_grid: dict,
) -> dict:
    """Train candidate ``name`` of the config's ``scaling`` section on its fold (one model: no
    snapshots, no SWA), tune its triplet on its own OOF maps and score them at each image's own
    size; write and return its row."""
    alpha, beta, gamma, phi = candidate_multipliers(
        name, scaling["grid"], scaling["target"], scaling["tolerance"]
    )
    depth, width, resolution = candidate_shape(name, scaling)
    size = int(read_manifest(manifest_csv)["size"].iloc[0])  # the repack it reads (source_size)
    started = time.perf_counter()
    train_fold(
        kind="segmenter",
        arch="scaled_unet",
        fold=scaling["fold"],
        folds_csv=folds_csv,
        manifest_csv=manifest_csv,
        stats_json=stats_json,
        size=size,
        input_size=resolution,
        settings=scaled_regularisation(settings, phi).one_model(),
        options={"depth": depth, "width": width},
        out_dir=out_dir,
        state_path=state_path,
    )
    seconds = time.perf_counter() - started
    maps_path = Path(oof_maps_file(out_dir, BEST))
    held_out = siim_held_out(folds_csv, manifest_csv, stats_json, size, scaling["fold"], resolution)
    cascade, at_resolution = tune_triplet(maps_path, held_out, tuning_grid)
    ids = pd.read_csv(Path(out_dir) / OOF_IDS, dtype={"image_id": str})["image_id"].tolist()
    truth = NativeTruth(rle_csv, index_csv)
    model = build_model("scaled_unet", 1, depth=depth, width=width)
    row = {
        "name": name,
        "alpha": alpha,
        "beta": beta,
        "gamma": gamma,
        "phi": phi,
        "depth": depth,
        "width": width,
        "resolution": resolution,
        "params": parameter_count(model),
        "flops": flops_per_image(model, resolution),
        "oof_score": native_score(maps_path, ids, truth, cascade),
        "scored_at": truth.size_label(ids),
        "oof_score_at_resolution": at_resolution,
        "train_seconds": round(seconds, 1),
    }
    atomic.write_json(Path(out_dir) / "row.json", row)
    log.info(
        "scaling candidate %s: depth %.2f width %.2f at %dpx, %.2f GFLOPs, OOF %.4f at %s "
        "(%.4f on its own %d px maps)",
        name,
        depth,
        width,
        resolution,
        row["flops"] / 1e9,
        row["oof_score"],
        row["scored_at"],
        row["oof_score_at_resolution"],
        resolution,
    )
    return row


# EfficientNet's dropout grows linearly from 0.2 at B0 to 0.5 at B7: 0.3 / 7 more per step of phi.
RATE_PER_PHI = (0.5 - 0.2) / 7


def scaled_rate(rate: float | None, phi: int) -> float | None:
    """A regularisation rate of B0 at compound step ``phi``; None stays None."""
    return None if rate is None else round(rate + RATE_PER_PHI * phi, 4)


def scaled_regularisation(settings: FitSettings, phi: int) -> FitSettings:
    """The recipe's dropout and drop path rates (B0's) grown with phi, so B1 and B2 get more."""
    return replace(
        settings,
        dropout_rate=scaled_rate(settings.dropout_rate, phi),
        drop_path_rate=scaled_rate(settings.drop_path_rate, phi),
    )


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
