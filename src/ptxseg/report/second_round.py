"""The report's NIH second-round tables: how many NIH images each fold pseudo-labelled, and each
architecture's OOF score in round 1 against round 2 (from the ensemble's scores.csv)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ptxseg.layout import round1_arch, round2_name

# The scores.csv rows compared: an architecture's kept members averaged over all its folds.
COMPARED = {
    ("segmenter", "competition_tuned"): "OOF competition score (own best triplet)",
    ("segmenter", "competition_default"): "OOF competition score (0.5, no area)",
    ("head", "auc"): "head ROC AUC",
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


def round_comparison(scores: pd.DataFrame) -> pd.DataFrame:
    """Per architecture with a second round: each compared score in round 1 and round 2."""
    whole = scores[scores["level"] == "architecture"]
    second = [a for a in dict.fromkeys(whole["arch"].dropna()) if a != round1_arch(a)]
    rows = []
    for name in second:
        arch = round1_arch(name)
        for (kind, metric), label in COMPARED.items():
            picked = whole[(whole["kind"] == kind) & (whole["metric"] == metric)]
            one = picked.loc[picked["arch"] == arch, "score"]
            two = picked.loc[picked["arch"] == round2_name(arch), "score"]
            if one.empty or two.empty:
                continue
            rows.append(
                {
                    "architecture": arch,
                    "score": label,
                    "round 1": float(one.iloc[0]),
                    "round 2": float(two.iloc[0]),
                    "round 2 - round 1": float(two.iloc[0] - one.iloc[0]),
                }
            )
    return pd.DataFrame(rows)
