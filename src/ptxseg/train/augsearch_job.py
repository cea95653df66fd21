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
from pathlib import Path

from ptxseg.data.randaugment import randaugment_policy
from ptxseg.io import atomic
from ptxseg.layout import augsearch_point_of
from ptxseg.train.held_out import OneFold, train_and_score
from ptxseg.train.settings import FitSettings

log = logging.getLogger(__name__)


def train_point(
    data: OneFold,
    *,
    point: str,
    arch: str,
    settings: FitSettings,
    weights: str = "none",
    options: dict | None = None,
    weights_dir: str | None = None,
    out_dir: str | os.PathLike,
    state_path: str | os.PathLike,
) -> dict:
    """Train ``arch`` on the fold with RandAugment at ``point`` (``n<N>_m<M>``) in place of the
    recipe's augmentation (one model), score its OOF maps; write and return its row."""
    n, m = augsearch_point_of(point)
    policy = randaugment_policy(n, m)
    scores = train_and_score(
        data,
        arch=arch,
        settings=dataclasses.replace(settings, augment=policy),
        out_dir=out_dir,
        state_path=state_path,
        weights=weights,
        options=options,
        weights_dir=weights_dir,
    )
    row = {
        "point": point,
        "n": n,
        "m": m,
        "arch": arch,
        "fold": data.fold,
        "size": data.size,
        **scores,
        "augment": policy,
    }
    atomic.write_json(Path(out_dir) / "row.json", row)
    log.info(
        "RandAugment n=%d m=%d (%s, fold %d): OOF %.4f at %s (%.4f on its %d px maps)",
        n,
        m,
        arch,
        data.fold,
        row["oof_score"],
        row["scored_at"],
        row["oof_score_at_resolution"],
        data.size,
    )
    return row
