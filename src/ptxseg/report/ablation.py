"""The ablation of the winners' levers: one row per lever, each switched on alone, against the
baseline (the segment stage's own recipe), and the ablation's own page.

Every lever's search (rule ``ablation_search``) writes an ensemble.json, a scores.csv and the
per-image outcomes (oof_images.csv) under ``results/ablation/<lever>/ensemble/``; `summarise`
reads them, where `ptxseg.layout` puts them, with the lever's fold jobs' benchmarks (the
baseline's: the segment stage's own training jobs of the architecture). The difference to the
baseline comes with its standard error over the images (the same OOF images for every lever, so
the per-image differences are paired): the page says which differences are within two of it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.contracts.scores import Basis, Kind, Level, Metric, ScoreTable
from ptxseg.io import atomic
from ptxseg.layout import BASELINE, METRICS, Layout
from ptxseg.report import figures
from ptxseg.report.build import Section, page_html

log = logging.getLogger(__name__)

COLUMNS = (
    "lever",
    "changes",
    "oof_score",  # the cascade at each image's own size, each fold by choices made on the others
    "scored_at",
    "oof_score_in_sample",  # the cascade chosen on all folds, scored on the same images
    "oof_score_at_size",  # that cascade on the maps, where its thresholds were searched
    "size",
    "gate_auc",  # the cascade's image-level probability (absent without an image-level source)
    "ungated_score",  # the same blend's best cascade without a gate, in-sample (the cascade if gate 0)
    "all_empty",
    "delta",  # oof_score minus the baseline's
    "delta_se",  # standard error of the mean per-image difference of Dice to the baseline
    "images",
    "train_seconds",
)
NOISE_SE = 2.0  # a difference within this many standard errors is called within noise


def lever_changes(lever: str, override: Mapping | None) -> str:
    """What a lever changes, in the config's words: its recipe keys and its TTA."""
    if lever == BASELINE:
        return "nothing: the segment stage's recipe (its own folds, not trained again)"
    override = override or {}
    parts = [f"{key}: {_flow(value)}" for key, value in (override.get("recipe") or {}).items()]
    if override.get("tta"):
        parts.append(f"tta: {_flow(list(override['tta']))}")
    return "; ".join(parts) or "nothing"


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).strip()


def train_seconds(benchmarks: Sequence[str | os.PathLike], metrics: Sequence[str | os.PathLike]):
    """The fold jobs' training time: the sum of their benchmark files' wall times (``s``), or where
    a benchmark is missing, of the job's metrics.csv epoch ``seconds``; NaN where neither is."""
    total = 0.0
    for benchmark, table in zip(benchmarks, metrics, strict=True):
        if Path(benchmark).is_file():
            total += float(pd.read_csv(benchmark, sep="\t")["s"].sum())
            continue
        frame = pd.read_csv(table) if Path(table).is_file() else pd.DataFrame()
        if "seconds" not in frame:
            return math.nan
        total += float(frame["seconds"].sum())
    return total


def _score(scores: ScoreTable, **where) -> float:
    row = scores.one_or_none(**where)
    return math.nan if row is None else row.score


def _ungated(scores: ScoreTable, spec: EnsembleSpec) -> float:
    """The best cascade of the lever's blend without a gate, at each image's own size: the search's
    row (written where there is an image-level probability), else the cascade itself where its
    gate is 0 (no image-level source); NaN if neither."""
    row = scores.one_or_none(kind=Kind.SEGMENTER, level=Level.CASCADE_UNGATED, basis=Basis.OWN_SIZE)
    if row is not None:
        return row.score
    return spec.searched.oof.cascade_in_sample if spec.cascade.gate == 0 else math.nan


def lever_row(layout: Layout, lever: str, override: Mapping | None, arch: str, n_folds: int):
    """One lever's row (without the deltas) and its per-image Dice at each image's own size."""
    spec = EnsembleSpec.read(layout.ablation_ensemble(lever, "ensemble.json"))
    scores = ScoreTable.read(layout.ablation_ensemble(lever, "scores.csv"))
    images = pd.read_csv(layout.ablation_ensemble(lever, "oof_images.csv"), dtype={"image_id": str})
    oof = spec.searched.oof
    folds = range(n_folds)
    row = {
        "lever": lever,
        "changes": lever_changes(lever, override),
        "oof_score": oof.cascade,
        "scored_at": oof.cascade_scored_at.label(),
        "oof_score_in_sample": oof.cascade_in_sample,
        "oof_score_at_size": oof.cascade_in_sample_at_size,
        "size": oof.size,
        "gate_auc": _score(scores, kind=Kind.GATE, level=Level.BLEND, metric=Metric.AUC),
        "ungated_score": _ungated(scores, spec),
        "all_empty": oof.all_empty,
        "images": oof.images,
        "train_seconds": train_seconds(
            [layout.ablation_benchmark(lever, arch, k) for k in folds],
            [layout.ablation_segmenter_file(lever, arch, k, METRICS) for k in folds],
        ),
    }
    # The per-image Dice the deltas compare: by the cross-fitted choices where the search made them.
    column = "dice_native_nested" if "dice_native_nested" in images else "dice_native"
    return row, images.set_index("image_id")[column], list(spec.searched.warnings)


def summarise(
    layout: Layout,
    levers: Sequence[str],
    overrides: Mapping[str, Mapping],
    arch: str,
    n_folds: int,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per lever (`COLUMNS`), in the order given (the baseline first), and the searches'
    warnings, each naming its lever."""
    if not levers or levers[0] != BASELINE:
        raise ValueError(f"the ablation's levers must start with {BASELINE!r}, got {list(levers)}")
    rows, dice, warnings = [], {}, []
    for lever in levers:
        row, dice[lever], found = lever_row(layout, lever, overrides.get(lever), arch, n_folds)
        rows.append(row)
        warnings += [f"{lever}: {warning}" for warning in found]
    base = dice[BASELINE]
    for row in rows:
        own = dice[row["lever"]]
        if set(own.index) != set(base.index):
            raise ValueError(
                f"lever {row['lever']!r} was scored on other OOF images than the baseline "
                f"({len(own)} against {len(base)}): its folds differ"
            )
        difference = (own.loc[base.index] - base).to_numpy()
        row["delta"] = row["oof_score"] - rows[0]["oof_score"]
        row["delta_se"] = (
            float(np.std(difference, ddof=1) / math.sqrt(len(difference)))
            if row["lever"] != BASELINE and len(difference) > 1
            else math.nan
        )
    return pd.DataFrame(rows, columns=list(COLUMNS)), warnings


def write_summary(
    layout: Layout,
    levers: Sequence[str],
    overrides: Mapping[str, Mapping],
    arch: str,
    n_folds: int,
    out_csv: str | os.PathLike,
) -> tuple[pd.DataFrame, list[str]]:
    """summary.csv; returns the table and the searches' warnings."""
    table, warnings = summarise(layout, levers, overrides, arch, n_folds)
    atomic.write_csv(out_csv, table)
    for row in table.itertuples():
        log.info(
            "%s: OOF %.4f at %s (%.4f at %d px), delta %+.4f (se %.4f), %.0f s of training",
            row.lever,
            row.oof_score,
            row.scored_at,
            row.oof_score_at_size,
            row.size,
            row.delta,
            row.delta_se,
            row.train_seconds,
        )
    return table, warnings


def empty_note(table: pd.DataFrame) -> str | None:
    """The levers whose cascade scores no better than predicting every image empty."""
    empty = table[table["oof_score"] <= table["all_empty"] + 1e-9]
    if empty.empty:
        return None
    return (
        f"At the all-empty score (every image predicted empty: {float(empty['all_empty'].iloc[0]):.4f}"
        f"): {', '.join(empty['lever'])}. A cascade at this score adds nothing over drawing no "
        "mask"
        + (
            "; as the baseline is one, each delta is what a lever adds over no segmenter, not "
            "over a working one."
            if (empty["lever"] == BASELINE).any()
            else "."
        )
    )


def noise_note(table: pd.DataFrame) -> str:
    """Which differences to the baseline lie within `NOISE_SE` standard errors, in words."""
    levers = table[table["lever"] != BASELINE]
    if levers.empty:
        return "No lever besides the baseline."
    within = levers["delta"].abs() <= NOISE_SE * levers["delta_se"].fillna(0)
    images = int(table["images"].iloc[0])
    if within.all():
        return (
            f"On these {images} images every lever's difference from the baseline is within "
            f"{NOISE_SE:g} standard errors of the paired per-image differences: within noise. The "
            "table measures each lever once (one seed); it does not rank them."
        )
    outside = ", ".join(
        f"{r.lever} ({r.delta:+.4f}, se {r.delta_se:.4f})" for r in levers[~within].itertuples()
    )
    return (
        f"Beyond {NOISE_SE:g} standard errors of the paired per-image differences on these "
        f"{images} images: {outside}; the others are within noise. One run, one seed each: a "
        "difference beyond the noise of the images is not the noise of training."
    )


def build_ablation_report(
    table: pd.DataFrame,
    warnings: list[str],
    arch: str,
    n_folds: int,
    out_html: str | os.PathLike,
) -> None:
    """The ablation's own page (the ablation is not part of every run): what was compared, the
    table, the scores as bars, and which differences are within noise."""
    section = Section("ablation", "The winners' levers, each alone")
    section.warnings(warnings)
    base = table.iloc[0]
    section.text(
        f"Each lever switched on alone: {arch} trained on every one of the {n_folds} folds with "
        "the segment stage's recipe and the lever's overrides; the baseline is the stage's own "
        f"{arch} folds (the same recipe, not trained again). Each is scored by its cascade, "
        "searched on OOF predictions with the stage's classifiers (ensemble.members and "
        f"ensemble.grid as the main ensemble): oof_score at {base['scored_at']}, "
        f"oof_score_at_size on the {int(base['size'])} px maps. gate_auc: the gate's OOF ROC "
        "AUC; ungated_score: the same blend's best cascade without a gate (the cascade itself where "
        "its gate is 0); delta: oof_score "
        "minus the baseline's, delta_se its standard error over the images (paired); "
        "train_seconds: the fold jobs' wall time (the baseline's: the stage's training jobs)."
    )
    section.text(noise_note(table))
    if (empty := empty_note(table)) is not None:
        section.text(empty)
    section.figure(
        figures.score_bars(
            table["lever"].tolist(),
            table["oof_score"].tolist(),
            float(base["all_empty"]),
            f"Cascade OOF score per lever ({arch})",
            f"mean Dice per image ({base['scored_at']})",
        ),
        "OOF score per lever",
    )
    section.table(table)
    atomic.write_text(out_html, page_html([section], "ptxseg ablation: the winners' levers"))
