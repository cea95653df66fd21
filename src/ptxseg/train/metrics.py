"""Metrics: the competition's mean Dice per image, IoU, and classifier AUC / F1 / accuracy.

The competition metric is written here by hand because its empty-vs-empty rule (score 1) is
specific to SIIM-ACR; per-pixel Dice from a library would score an empty pair as 0 or NaN.
Classifier metrics come from scikit-learn.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score


def _flat(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    return masks.reshape(masks.shape[0], -1).astype(bool, copy=False)


def dice_per_image(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each image's predicted and true mask; 1.0 where both are empty."""
    p, t = _flat(predicted), _flat(truth)
    if p.shape != t.shape:
        raise ValueError(f"predicted masks {p.shape} and true masks {t.shape} differ in shape")
    intersection = np.count_nonzero(p & t, axis=1).astype(np.float64)
    total = np.count_nonzero(p, axis=1) + np.count_nonzero(t, axis=1)
    return np.where(total == 0, 1.0, 2.0 * intersection / np.maximum(total, 1))


def competition_score(predicted: np.ndarray, truth: np.ndarray) -> float:
    """SIIM-ACR's metric: the mean over images of Dice, an empty prediction of an empty mask scoring 1."""
    return float(dice_per_image(predicted, truth).mean())


def all_empty_score(truth: np.ndarray) -> float:
    """What predicting nothing anywhere scores: the share of images without a pneumothorax."""
    return float((np.count_nonzero(_flat(truth), axis=1) == 0).mean())


def iou_per_image(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    p, t = _flat(predicted), _flat(truth)
    intersection = np.count_nonzero(p & t, axis=1)
    union = np.count_nonzero(p | t, axis=1)
    return np.where(union == 0, 1.0, intersection / np.maximum(union, 1))


class SegmentationScores:
    """Per-image Dice and IoU and pixel counts, added chunk by chunk so memory stays flat."""

    def __init__(self) -> None:
        self.dice: list[np.ndarray] = []
        self.iou: list[np.ndarray] = []
        self.empty: list[np.ndarray] = []
        self.intersection = 0
        self.total = 0

    def add(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        p, t = _flat(predicted), _flat(truth)
        self.dice.append(dice_per_image(p, t))
        self.iou.append(iou_per_image(p, t))
        self.empty.append(np.count_nonzero(t, axis=1) == 0)
        self.intersection += int(np.count_nonzero(p & t))
        self.total += int(np.count_nonzero(p) + np.count_nonzero(t))

    def result(self) -> dict:
        return {
            "competition": float(np.concatenate(self.dice).mean()),
            "all_empty": float(np.concatenate(self.empty).mean()),
            "dice": 1.0 if self.total == 0 else 2.0 * self.intersection / self.total,
            "mean_iou": float(np.concatenate(self.iou).mean()),
        }


def segmentation_metrics(
    probabilities: np.ndarray, truth: np.ndarray, threshold: float = 0.5
) -> dict:
    """Competition score, the all-empty baseline, pixel Dice and mean IoU at ``threshold``."""
    scores = SegmentationScores()
    scores.add(probabilities >= threshold, truth)
    return scores.result()


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    # AUC is undefined when only one class is present (a tiny demo fold can have that).
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5
) -> dict:
    labels = np.asarray(labels).astype(int).ravel()
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    predicted = (probabilities >= threshold).astype(int)
    return {
        "auc": _auc(labels, probabilities),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "accuracy": float(accuracy_score(labels, predicted)),
    }


def multilabel_auc(
    labels: np.ndarray, probabilities: np.ndarray, names: list[str] | tuple[str, ...]
) -> dict:
    """AUC per class (NIH's 14 findings) and their mean over the classes where it is defined."""
    per_class = {
        f"auc_{name}": _auc(labels[:, k], probabilities[:, k]) for k, name in enumerate(names)
    }
    defined = [value for value in per_class.values() if not np.isnan(value)]
    return {"auc": float(np.mean(defined)) if defined else float("nan"), **per_class}
