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
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ptxseg.io import atomic, maps
from ptxseg.models import build_model
from ptxseg.models.flops import flops_per_image, parameter_count
from ptxseg.models.scaled_unet.compound import candidates, compound
from ptxseg.runtime.options import Runtime
from ptxseg.scoring.thresholds import Cascade
from ptxseg.train.run import train_fold

log = logging.getLogger(__name__)

BASELINE = "b0"


def candidate_multipliers(
    name: str, grid: dict, target: float, tolerance: float
) -> tuple[float, float, float, int]:
    """(alpha, beta, gamma, phi) of a candidate name; ``b0`` is the unscaled base."""
    if name == BASELINE:
        return 1.0, 1.0, 1.0, 0
    for candidate in candidates(grid, target, tolerance):
        if candidate.name == name:
            return candidate.alpha, candidate.beta, candidate.gamma, 1
    raise ValueError(f"{name!r} is not a candidate of the scaling grid")


def train_candidate(
    *,
    name: str,
    grid: dict,
    target: float,
    tolerance: float,
    base_resolution: int,
    repack_sizes: Sequence[int],
    fold: int,
    folds_csv,
    manifest_csv,
    repack_root,
    stats_json,
    recipe: dict,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
    seed: int,
    rle_csv: str | os.PathLike,
    index_csv: str | os.PathLike,
    runtime: Runtime | None = None,
    tuning_grid: dict | None = None,
) -> dict:
    from ptxseg.scoring.native import NativeTruth, native_score

    alpha, beta, gamma, phi = candidate_multipliers(name, grid, target, tolerance)
    depth, width, resolution = compound(alpha, beta, gamma, phi, base_resolution)
    # Read the smallest repacked size at least as large as the input, and resize on reading.
    source = min([s for s in repack_sizes if s >= resolution] or [max(repack_sizes)])
    recipe = {
        **recipe,
        "snapshots": 0,
        "swa": {**recipe["swa"], "enabled": False},
    }  # one model per candidate
    started = time.perf_counter()
    summary = train_fold(
        kind="segmenter",
        arch="scaled_unet",
        fold=fold,
        folds_csv=folds_csv,
        manifest_csv=manifest_csv,
        repack_root=repack_root,
        stats_json=stats_json,
        size=source,
        input_size=resolution,
        recipe=recipe,
        options={"depth": depth, "width": width},
        out_dir=out_dir,
        state_path=state_path,
        seed=seed,
        runtime=runtime,
        tuning_grid=tuning_grid,
    )
    seconds = time.perf_counter() - started
    model = build_model("scaled_unet", 1, depth=depth, width=width)
    best = summary["members"]["best"]
    cascade = Cascade(
        top=best.get("tuned_top", 0.5),
        min_area=best.get("tuned_min_area", 0.0),
        bottom=best.get("tuned_bottom", 0.5),
    )
    ids = pd.read_csv(Path(out_dir) / "oof_ids.csv", dtype={"image_id": str})["image_id"].tolist()
    truth = NativeTruth(rle_csv, index_csv)
    common = native_score(Path(out_dir) / f"oof_best{maps.SUFFIX}", ids, truth, cascade)
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
        "oof_score": common,
        "scored_at": truth.size_label(ids),
        "oof_score_at_resolution": best.get("competition_tuned", best["competition"]),
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
