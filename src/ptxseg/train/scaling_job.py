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
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ptxseg.io import atomic
from ptxseg.models import build_model
from ptxseg.models.flops import flops_per_image, parameter_count
from ptxseg.models.scaled_unet.search import find_candidate
from ptxseg.train.held_out import OneFold, train_and_score
from ptxseg.train.settings import FitSettings

log = logging.getLogger(__name__)

ARCH = "scaled_unet"  # every candidate, B0 included: free depth and width multipliers


def train_candidate(
    data: OneFold,
    *,
    name: str,
    scaling: dict,
    settings: FitSettings,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
) -> dict:
    """Train candidate ``name`` of the config's ``scaling`` section on its fold (one model),
    its regularisation grown with its phi; tune its triplet on its own OOF maps and score them at
    each image's own size; write and return its row (with the grid points merged into it).
    ``data.size`` is the repack it reads and resizes to its resolution
    (``compound.source_size``)."""
    candidate, phi = find_candidate(name, scaling)
    depth, width, resolution = candidate.scaled(phi, scaling["base_resolution"])
    options, settings = candidate_recipe(name, scaling, settings)
    scores = train_and_score(
        data,
        arch=ARCH,
        settings=settings,
        out_dir=out_dir,
        state_path=state_path,
        input_size=resolution,
        options=options,
    )
    model = build_model(ARCH, 1, depth=depth, width=width)
    row = {
        "name": name,
        "alpha": candidate.alpha,
        "beta": candidate.beta,
        "gamma": candidate.gamma,
        "phi": phi,
        "depth": depth,
        "width": width,
        "resolution": resolution,
        "merged": " ".join(candidate.merged),
        "params": parameter_count(model),
        "flops": flops_per_image(model, resolution),
        **{
            k: scores[k]
            for k in ("oof_score", "scored_at", "oof_score_at_resolution", "train_seconds")
        },
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


def candidate_recipe(
    name: str, scaling: dict, settings: FitSettings
) -> tuple[dict[str, float], FitSettings]:
    """(options, settings) candidate ``name`` trains `ARCH` with: its depth and width multipliers,
    and the search recipe's settings with the dropout grown to its phi (the activation, drop path
    and dropout reach the model from the settings, as for every stage's models)."""
    candidate, phi = find_candidate(name, scaling)
    depth, width, _ = candidate.scaled(phi, scaling["base_resolution"])
    grown = grown_rates({"dropout_rate": settings.dropout_rate}, phi, scaling["dropout_by_phi"])
    return {"depth": depth, "width": width}, replace(settings, **grown)


def grown_rates(b0: dict, phi: int, dropout_by_phi: Sequence[float] | None) -> dict:
    """B0's regularisation keys (``dropout_rate``, ``drop_path_rate``, ...) at compound step
    ``phi``: the dropout grown as the official EfficientNet B0-B7 grow theirs (B0's rate plus
    ``dropout_by_phi[phi] - dropout_by_phi[0]``: 0.2, 0.2, 0.3 ... 0.5 from 0.2), the others as
    they are (the official code keeps drop_connect_rate 0.2 at every phi); None stays None."""
    rate = b0.get("dropout_rate")
    if rate is None:
        return dict(b0)
    if dropout_by_phi is None or phi >= len(dropout_by_phi):
        raise ValueError(
            f"scaling.dropout_by_phi has {len(dropout_by_phi or [])} entries, none for phi {phi}"
        )
    return {**b0, "dropout_rate": round(rate + dropout_by_phi[phi] - dropout_by_phi[0], 4)}
