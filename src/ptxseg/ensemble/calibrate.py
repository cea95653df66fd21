"""The gate's calibration, fitted where its OOF probability is made (the ensemble search).

The cascade's image-level probability is a weighted blend of classifiers and segmenter heads; a
blend chosen for its AUC need not be calibrated. `calibrate_gate` chooses none, temperature or
isotonic scaling by a proper score cross-fitted over the OOF folds (``scoring.calibration``),
and reports the expected calibration error before and after: the 'after' is cross-fitted too
(each fold's images by a map fitted on the other folds), so it is what a new image would see,
not the fit's own in-sample error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ptxseg.contracts.scores import Kind, Level, Metric, ScoredAt, ScoreRow
from ptxseg.scoring.calibration import (
    FITS,
    Calibrator,
    choose_calibration,
    cross_fitted,
    expected_calibration_error,
)


@dataclass(frozen=True)
class GateCalibration:
    calibrator: Calibrator
    choice: pd.DataFrame  # one row per method, cross-fitted scores, the chosen one marked
    calibrated_oof: np.ndarray  # each OOF image's calibrated probability, cross-fitted
    rows: list[ScoreRow]  # ECE and Brier score of the gate before and after


def calibrate_gate(
    probability: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray,
    method: str = "auto",
    score: str = "brier",
) -> GateCalibration:
    """Choose (``method`` 'auto') or fit the calibration of the gate's OOF ``probability``
    against ``labels`` (1: a non-empty mask), cross-fitted over ``folds``."""
    labels = np.asarray(labels, dtype=np.int64)
    calibrator, choice = choose_calibration(probability, labels, folds, score)
    if method != "auto":
        choice["chosen"] = choice["method"] == method
        calibrator = FITS[method](probability, labels)
    after = cross_fitted(probability, labels, folds, calibrator.method)
    rows = []
    for level, p in ((Level.UNCALIBRATED, probability), (Level.CALIBRATED, after)):
        member = calibrator.method if level == Level.CALIBRATED else None
        for metric, score in (
            (Metric.ECE, expected_calibration_error(p, labels)),
            (Metric.BRIER, float(np.mean((p - labels) ** 2))),
        ):
            at = ScoredAt.image_level()
            rows.append(ScoreRow(Kind.GATE, level, metric, at, len(p), score, member=member))
    return GateCalibration(calibrator, choice, after, rows)
