"""Cross-validation folds of the SIIM train images, stratified on pneumothorax and grouped by patient."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from ptxseg.data.siim import read_index
from ptxseg.io import atomic

log = logging.getLogger(__name__)


class FoldError(ValueError):
    """Folds that cannot be made; the message names the config key to change."""


def assign_folds(
    has_pneumothorax: np.ndarray, groups: np.ndarray, n_folds: int, seed: int
) -> np.ndarray:
    """Fold number (0 .. n_folds-1) per image, by scikit-learn's StratifiedGroupKFold."""
    labels = np.asarray(has_pneumothorax, dtype=int)
    groups = np.asarray(groups)
    n_positive_groups = len(np.unique(groups[labels == 1]))
    n_negative_groups = len(np.unique(groups[labels == 0]))
    if n_folds > min(n_positive_groups, n_negative_groups):
        raise FoldError(
            f"folds.n_folds is {n_folds}, but there are only {n_positive_groups} positive and "
            f"{n_negative_groups} negative groups: every fold needs both. Lower folds.n_folds."
        )
    folds = np.full(len(labels), -1, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[held_out] = fold
    return folds


def make_folds(index: pd.DataFrame, n_folds: int, group_by: str, seed: int) -> pd.DataFrame:
    """Folds for the train rows of the index: image_id, fold, has_pneumothorax, group."""
    train = index[index["split"] == "train"].reset_index(drop=True)
    if group_by == "patient":
        groups = train["patient_id"].where(train["patient_id"].astype(bool), train["image_id"])
    elif group_by == "image":
        groups = train["image_id"]
    else:
        raise FoldError(f"folds.group_by is {group_by!r}; expected 'patient' or 'image'")
    labels = train["has_pneumothorax"].astype(int).to_numpy()
    folds = assign_folds(labels, groups.to_numpy(), n_folds, seed)
    return pd.DataFrame(
        {"image_id": train["image_id"], "fold": folds, "has_pneumothorax": labels, "group": groups}
    )


def write_folds(
    index_path: str | os.PathLike,
    folds_path: str | os.PathLike,
    n_folds: int,
    group_by: str,
    seed: int,
) -> pd.DataFrame:
    folds = make_folds(read_index(index_path), n_folds, group_by, seed)
    atomic.write_csv(folds_path, folds)
    summary = folds.groupby("fold")["has_pneumothorax"].agg(["size", "mean"]).round(3)
    log.info("folds (images, positive rate):\n%s", summary.to_string())
    return folds
