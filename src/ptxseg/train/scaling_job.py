"""File-level steps of the compound-scaling search: train one candidate, then summarise them all.

Every candidate (and the B0 it is scaled from) trains the scaled U-Net on the same fold with the
same recipe, its input side the compound-scaled resolution, and is scored by the competition
metric on its held-out images (with its own best triplet, as the ensemble stage would use it).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ptxseg import scaling
from ptxseg.io import atomic
from ptxseg.models import build_model
from ptxseg.train.run import Runtime, train_fold

log = logging.getLogger(__name__)

BASELINE = "b0"


def candidate_multipliers(
    name: str, grid: dict, target: float, tolerance: float
) -> tuple[float, float, float, int]:
    """(alpha, beta, gamma, phi) of a candidate name; ``b0`` is the unscaled base."""
    if name == BASELINE:
        return 1.0, 1.0, 1.0, 0
    for candidate in scaling.candidates(grid, target, tolerance):
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
    runtime: Runtime | None = None,
    tuning_grid: dict | None = None,
) -> dict:
    alpha, beta, gamma, phi = candidate_multipliers(name, grid, target, tolerance)
    depth, width, resolution = scaling.compound(alpha, beta, gamma, phi, base_resolution)
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
    row = {
        "name": name,
        "alpha": alpha,
        "beta": beta,
        "gamma": gamma,
        "phi": phi,
        "depth": depth,
        "width": width,
        "resolution": resolution,
        "params": scaling.parameter_count(model),
        "flops": scaling.flops_per_image(model, resolution),
        "oof_score": best.get("competition_tuned", best["competition"]),
        "train_seconds": round(seconds, 1),
    }
    atomic.write_json(Path(out_dir) / "row.json", row)
    log.info(
        "scaling candidate %s: depth %.2f width %.2f at %dpx, %.2f GFLOPs, OOF %.4f",
        name,
        depth,
        width,
        resolution,
        row["flops"] / 1e9,
        row["oof_score"],
    )
    return row


def write_summary(
    rows: Sequence[str | os.PathLike],
    base_resolution: int,
    phis: Sequence[int],
    out_csv: str | os.PathLike,
    out_png: str | os.PathLike,
    out_best: str | os.PathLike,
):
    """summary.csv, the score-against-FLOPs plot, and the config entries of the chosen B1 and B2."""
    table = scaling.summarise(
        [json.loads(Path(p).read_text()) for p in rows], base_resolution, phis
    )
    atomic.write_csv(out_csv, table)
    scaling.plot_score_vs_flops(table, out_png)
    best = table[table["label"] == "B1"].iloc[0]
    entries = {}
    for label, arch in (("B1", "scaled_unet_b1"), ("B2", "scaled_unet_b2")):
        row = table[table["label"] == label]
        if len(row):
            entries[arch] = {
                "size": int(row["resolution"].iloc[0]),
                "options": {"alpha": float(best["alpha"]), "beta": float(best["beta"])},
            }
    atomic.write_text(
        out_best,
        "# The searched B1 and B2, to use as segmenters: put an entry under segment.archs\n"
        "# (with its options) and set segment.size to its size (a repacked size).\n"
        + json.dumps(entries, indent=2)
        + "\n",
    )
    log.info(
        "scaling: best %s (alpha %.2f beta %.2f gamma %.2f), OOF %.4f",
        best["name"],
        best["alpha"],
        best["beta"],
        best["gamma"],
        best["oof_score"],
    )
    return table
