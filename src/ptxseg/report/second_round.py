"""The report's NIH second-round tables: how many NIH images each fold pseudo-labelled, and each
architecture's OOF score in round 1 against round 2 (from the ensemble's scores.csv)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ptxseg.contracts.scores import Kind, Level, Metric, ScoreTable
from ptxseg.layout import round1_arch, round2_name

# The scores.csv rows compared: an architecture's kept members averaged over all its folds.
COMPARED = {
    (Kind.SEGMENTER, Metric.COMPETITION_TUNED): "OOF competition score (own best triplet)",
    (Kind.SEGMENTER, Metric.COMPETITION_DEFAULT): "OOF competition score (0.5, no area)",
    (Kind.HEAD, Metric.AUC): "head ROC AUC",
}


def pseudo_label_counts(summaries: list[Path]) -> pd.DataFrame:
    """One row per fold: candidates predicted, kept positives and empty images, and left out."""
    rows = []
    for path in summaries:
        summary = json.loads(Path(path).read_text())
        rows.append(
            {
                "fold": summary["fold"],
                "NIH candidates": summary["candidates"],
                "kept positive": summary["positive"],
                "kept empty": summary["empty"],
                **{f"left out: {why}": n for why, n in summary["left_out"].items()},
            }
        )
    return pd.DataFrame(rows).fillna(0).sort_values("fold").reset_index(drop=True)


def round_comparison(scores: ScoreTable) -> pd.DataFrame:
    """Per architecture with a second round: each compared score in round 1 and round 2."""
    whole = scores.select(level=Level.ARCHITECTURE)
    names = dict.fromkeys(r.arch for r in whole if r.arch is not None)
    rows = []
    for name in (a for a in names if a != round1_arch(a)):
        arch = round1_arch(name)
        for (kind, metric), label in COMPARED.items():
            picked = whole.select(kind=kind, metric=metric)
            one = picked.one_or_none(arch=arch)
            two = picked.one_or_none(arch=round2_name(arch))
            if one is None or two is None:
                continue
            rows.append(
                {
                    "architecture": arch,
                    "score": label,
                    "round 1": one.score,
                    "round 2": two.score,
                    "round 2 - round 1": two.score - one.score,
                }
            )
    return pd.DataFrame(rows)
