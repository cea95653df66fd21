"""Calibration of an image-level probability (the cascade's gate): none, temperature or isotonic.

The ensemble search blends the gate's probability on out-of-fold (OOF) predictions; the blend ranks
images well but its values are not calibrated. A ``Calibrator`` (`ptxseg.scoring.calibrator`) maps
probabilities to calibrated ones with NumPy alone (its parameters are plain numbers: applying calls
no SciPy or scikit-learn code); fitting, here, uses SciPy (temperature) and scikit-learn (isotonic).

``choose_calibration`` picks the method by a proper score (Brier or log loss) of cross-fitted
predictions: each fold's images are calibrated by a map fitted on the other folds only, so the
in-sample overfit of isotonic regression cannot win by construction. The simplest method whose
score is within one paired standard error of the lowest is chosen, then refitted on every image.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss, log_loss
from sklearn.model_selection import StratifiedKFold

from ptxseg.scoring.calibrator import METHODS, Calibrator, logit

log = logging.getLogger(__name__)

SCORES = ("brier", "log_loss")
# Fewer images than this (or fewer of either class than 2) are too few to fit or compare anything.
MIN_IMAGES = 10
# The bounds of log T searched by fit_temperature: T in [1/100, 100].
LOG_T_BOUND = math.log(100.0)
DEFAULT_FOLDS = 5  # cross-fitting folds when none are given (stratified, fixed seed)


def _checked(p: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``p`` and ``y`` as 1-D float64 arrays; a ValueError saying what is wrong with them."""
    p = np.asarray(p, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"p and y differ in length: {p.size} probabilities, {y.size} labels")
    if np.isnan(p).any():
        raise ValueError(f"p: {int(np.isnan(p).sum())} NaN probabilities")
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"p: {int(((p < 0) | (p > 1)).sum())} probabilities outside [0, 1]")
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"y: {int(bad.sum())} labels outside {{0, 1}} (first: {y[bad][0]!r}); "
            "expected 1 for a non-empty mask, 0 for an empty one"
        )
    return p, y


def _fit_problem(p: np.ndarray, y: np.ndarray) -> str:
    """Why (p, y) cannot be fitted, or ''."""
    if p.size < MIN_IMAGES:
        return f"{p.size} images (fewer than {MIN_IMAGES})"
    positives = int(y.sum())
    if min(positives, p.size - positives) < 2:
        return f"{positives} positive and {p.size - positives} negative images (fewer than 2 of a class)"
    if np.ptp(p) == 0:
        return f"every probability is {p[0]:g}"
    return ""


def _fittable(p: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = _checked(p, y)
    problem = _fit_problem(p, y)
    if problem:
        raise ValueError(f"cannot fit a calibration: {problem}")
    return p, y


def fit_temperature(p: np.ndarray, y: np.ndarray) -> Calibrator:
    """The temperature T minimising the log loss of sigmoid(logit(p) / T), T in [1/100, 100]."""
    p, y = _fittable(p, y)
    z = logit(p)

    def mean_log_loss(log_t: float) -> float:
        scaled = z * math.exp(-log_t)
        # log(1 + e^s) - y s: the log loss of sigmoid(s), without overflow.
        return float(np.mean(np.logaddexp(0.0, scaled) - y * scaled))

    found = minimize_scalar(
        mean_log_loss,
        bounds=(-LOG_T_BOUND, LOG_T_BOUND),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return Calibrator("temperature", temperature=float(math.exp(found.x)))


def fit_isotonic(p: np.ndarray, y: np.ndarray) -> Calibrator:
    """A non-decreasing step-wise linear map from ``p`` to the observed frequency (scikit-learn)."""
    p, y = _fittable(p, y)
    fitted = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p, y)
    return Calibrator(
        "isotonic",
        x_thresholds=tuple(float(x) for x in fitted.X_thresholds_),
        y_thresholds=tuple(float(v) for v in fitted.y_thresholds_),
    )


# Each method by name: how it is fitted (also the ensemble's, for a method named in the config).
FITS = {"none": lambda p, y: Calibrator(), "temperature": fit_temperature, "isotonic": fit_isotonic}


def _bins(p: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-width bin edges over [0, 1] and each probability's bin ([lower, upper), the last
    closed, so p = 1 is in the last bin)."""
    if not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    return edges, np.searchsorted(edges[1:-1], p, side="right")


def reliability_table(p: np.ndarray, y: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """One row per equal-width bin, empty bins included: lower, upper, count, mean_probability,
    observed_frequency (NaN where the bin is empty).

    The bins are computed here rather than by sklearn.calibration.calibration_curve: it returns
    neither the bins' counts (which the ECE weights by and the diagram draws) nor its empty bins,
    so its rows cannot be matched to bin edges.
    """
    p, y = _checked(p, y)
    edges, index = _bins(p, bins)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=p, minlength=bins) / count
        frequency = np.bincount(index, weights=y, minlength=bins) / count
    return pd.DataFrame(
        {
            "lower": edges[:-1],
            "upper": edges[1:],
            "count": count.astype(np.int64),
            "mean_probability": mean_p,
            "observed_frequency": frequency,
        }
    )


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Sum over equal-width bins of (share of images) x |mean probability - observed frequency|;
    NaN for no images."""
    table = reliability_table(p, y, bins)
    filled = table[table["count"] > 0]
    if filled.empty:
        return float("nan")
    gap = (filled["mean_probability"] - filled["observed_frequency"]).abs()
    return float((filled["count"] * gap).sum() / filled["count"].sum())


def _image_losses(p: np.ndarray, y: np.ndarray, score: str) -> np.ndarray:
    """Per-image losses whose mean is the score (for the paired standard errors only)."""
    if score == "brier":
        return (p - y) ** 2
    q = np.clip(p, np.finfo(np.float64).eps, 1 - np.finfo(np.float64).eps)
    return -(y * np.log(q) + (1 - y) * np.log1p(-q))


def _scores(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if p.size == 0:
        return {"brier": float("nan"), "log_loss": float("nan"), "ece": float("nan")}
    return {
        "brier": float(brier_score_loss(y, p, labels=[0, 1])),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "ece": expected_calibration_error(p, y),
    }


def _fold_ids(folds: np.ndarray | None, y: np.ndarray) -> np.ndarray:
    if folds is not None:
        folds = np.asarray(folds).ravel()
        if folds.shape != y.shape:
            raise ValueError(f"folds: {folds.size} fold ids for {y.size} images")
        if folds.dtype.kind == "f" and np.isnan(folds).any():
            raise ValueError(f"folds: {int(np.isnan(folds).sum())} NaN fold ids")
        return folds
    minority = int(min(y.sum(), y.size - y.sum()))
    splits = min(DEFAULT_FOLDS, minority)
    ids = np.zeros(y.size, dtype=np.int64)
    if splits < 2:
        return ids
    splitter = StratifiedKFold(n_splits=splits, shuffle=True, random_state=0)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(y.size), y)):
        ids[held_out] = k
    return ids


def _cross_fitted(
    p: np.ndarray, y: np.ndarray, folds: np.ndarray
) -> tuple[dict[str, np.ndarray], str]:
    """Each method's predictions, every fold's by a map fitted on the other folds; or a reason
    why they cannot be made."""
    ids = np.unique(folds)
    if ids.size < 2:
        return {}, "one fold only: nothing to cross-fit"
    predictions = {method: np.empty_like(p) for method in METHODS}
    for k in ids:
        held_out = folds == k
        train = ~held_out
        problem = _fit_problem(p[train], y[train])
        if problem:
            return {}, f"without fold {k}: {problem}"
        for method in METHODS:
            predictions[method][held_out] = FITS[method](p[train], y[train]).apply(p[held_out])
    return predictions, ""


def cross_fitted(p: np.ndarray, y: np.ndarray, folds: np.ndarray, method: str) -> np.ndarray:
    """``p`` calibrated by ``method``, each fold's images by a map fitted on the other folds (what
    a held-out image would get: the honest 'after' of a reliability diagram); ``p`` itself where
    the method is 'none' or the folds leave nothing to fit."""
    p, y = _checked(p, y)
    if method == "none" or _fit_problem(p, y):
        return p
    predictions, reason = _cross_fitted(p, y, _fold_ids(folds, y))
    return p if reason else predictions[method]


def choose_calibration(
    p: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray | None = None,
    score: str = "brier",
) -> tuple[Calibrator, pd.DataFrame]:
    """The calibration of ``p`` (labels ``y``: 1 for a non-empty mask) with the best cross-fitted
    ``score`` ("brier" or "log_loss"), refitted on every image, and the comparison table.

    ``folds``: each image's fold id (the OOF folds); None: stratified folds with a fixed seed.
    Near-ties go to the simpler method: the chosen one is the first of none, temperature,
    isotonic whose mean loss is within one paired standard error of the lowest. The table has
    one row per method: method, brier, log_loss, ece (all cross-fitted; "none" fits nothing),
    delta and delta_se (its score minus the lowest, with the paired standard error), chosen and
    reason. Degenerate inputs (too few images, one class, constant p, one fold) give "none",
    a reason in the table and a logged warning; NaN in p or labels outside {0, 1} a ValueError.
    """
    if score not in SCORES:
        raise ValueError(f"score: unknown {score!r}; expected one of {SCORES}")
    p, y = _checked(p, y)
    folds = _fold_ids(folds, y)
    reason = _fit_problem(p, y)
    predictions: dict[str, np.ndarray] = {}
    if not reason:
        predictions, reason = _cross_fitted(p, y, folds)
    if reason:
        log.warning("calibration: none (%s)", reason)
        unscored = dict.fromkeys(("brier", "log_loss", "ece"), float("nan"))
        rows = [
            {
                "method": method,
                **(_scores(p, y) if method == "none" else unscored),
                "delta": float("nan"),
                "delta_se": float("nan"),
                "chosen": method == "none",
                "reason": reason,
            }
            for method in METHODS
        ]
        return Calibrator(), pd.DataFrame(rows)

    losses = {method: _image_losses(q, y, score) for method, q in predictions.items()}
    best = min(METHODS, key=lambda method: losses[method].mean())
    rows = []
    for method in METHODS:
        difference = losses[method] - losses[best]
        rows.append(
            {
                "method": method,
                **_scores(predictions[method], y),
                "delta": float(difference.mean()),
                "delta_se": float(difference.std(ddof=1) / math.sqrt(difference.size)),
            }
        )
    chosen = next(row["method"] for row in rows if row["delta"] <= row["delta_se"])
    for row in rows:
        row["chosen"] = row["method"] == chosen
        row["reason"] = "lowest cross-fitted " + score if row["method"] == best else ""
        if row["method"] == chosen and chosen != best:
            row["reason"] = f"within one standard error of {best}'s {score}, and simpler"
    calibrator = FITS[chosen](p, y)
    log.info(
        "calibration: %s by cross-fitted %s over %d folds", chosen, score, np.unique(folds).size
    )
    return calibrator, pd.DataFrame(rows)
