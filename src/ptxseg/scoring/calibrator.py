"""A fitted calibration of the gate's probability (none, temperature or isotonic): applied with
NumPy alone, read from and written to ensemble.json (`to_dict`, `from_dict`). Fitting it, with
SciPy and scikit-learn, is `ptxseg.scoring.calibration`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("none", "temperature", "isotonic")  # simplest first: the order that breaks near-ties
# Probabilities are clipped to [EPS, 1 - EPS] before the logit, so 0 and 1 map to finite values.
EPS = 1e-6
_KEYS = {
    "none": {"method"},
    "temperature": {"method", "temperature"},
    "isotonic": {"method", "x_thresholds", "y_thresholds"},
}


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map; ``apply`` needs NumPy only.

    ``temperature``: sigmoid(logit(p) / T), p clipped to [EPS, 1 - EPS] first (T > 1 softens
    overconfident probabilities). ``isotonic``: piecewise-linear interpolation through the fitted
    thresholds, constant beyond the first and last (as scikit-learn's ``out_of_bounds="clip"``).
    """

    method: str = "none"
    temperature: float | None = None
    x_thresholds: tuple[float, ...] = ()
    y_thresholds: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"method: unknown calibration {self.method!r}; expected one of {METHODS}"
            )
        if self.method == "temperature":
            t = self.temperature
            if t is None or not math.isfinite(t) or t <= 0:
                raise ValueError(f"temperature: must be a finite number > 0, got {t!r}")
        elif self.temperature is not None:
            raise ValueError(f"temperature: given for method {self.method!r}, which has none")
        if self.method == "isotonic":
            _check_thresholds(self.x_thresholds, self.y_thresholds)
        elif self.x_thresholds or self.y_thresholds:
            raise ValueError(f"x_thresholds: given for method {self.method!r}, which has none")

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Calibrated probabilities, float64, of ``p``'s shape (NaN stays NaN)."""
        p = np.asarray(p, dtype=np.float64)
        if self.method == "temperature":
            return sigmoid(logit(p) / self.temperature)
        if self.method == "isotonic":
            return np.interp(p, self.x_thresholds, self.y_thresholds)
        return p.copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the method and its parameters only (plain floats and lists)."""
        if self.method == "temperature":
            return {"method": "temperature", "temperature": float(self.temperature)}
        if self.method == "isotonic":
            return {
                "method": "isotonic",
                "x_thresholds": [float(x) for x in self.x_thresholds],
                "y_thresholds": [float(y) for y in self.y_thresholds],
            }
        return {"method": "none"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        """The inverse of ``to_dict``; a ValueError naming the key on a bad dict."""
        if not isinstance(d, dict):
            raise ValueError(f"calibration: expected a dict, got {type(d).__name__}")
        if "method" not in d:
            raise ValueError("method: missing from the calibration dict")
        method = d["method"]
        if method not in METHODS:
            raise ValueError(f"method: unknown calibration {method!r}; expected one of {METHODS}")
        expected = _KEYS[method]
        missing = sorted(expected - set(d))
        if missing:
            raise ValueError(f"{missing[0]}: missing from the calibration dict (method {method!r})")
        unexpected = sorted(set(d) - expected, key=str)
        if unexpected:
            raise ValueError(f"{unexpected[0]}: unexpected key for method {method!r}")
        if method == "temperature":
            return cls(method, temperature=_number(d["temperature"], "temperature"))
        if method == "isotonic":
            return cls(
                method,
                x_thresholds=_numbers(d["x_thresholds"], "x_thresholds"),
                y_thresholds=_numbers(d["y_thresholds"], "y_thresholds"),
            )
        return cls(method)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    return float(value)


def _numbers(values: Any, key: str) -> tuple[float, ...]:
    if not isinstance(values, list | tuple):
        raise ValueError(f"{key}: expected a list of numbers, got {type(values).__name__}")
    return tuple(_number(v, key) for v in values)


def _check_thresholds(x: tuple[float, ...], y: tuple[float, ...]) -> None:
    if len(x) == 0:
        raise ValueError("x_thresholds: empty (an isotonic map needs at least one point)")
    if len(x) != len(y):
        raise ValueError(f"y_thresholds: {len(y)} values for {len(x)} x_thresholds")
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    for key, values in (("x_thresholds", xs), ("y_thresholds", ys)):
        if not np.isfinite(values).all():
            raise ValueError(f"{key}: not all finite")
    if np.any(np.diff(xs) <= 0):
        raise ValueError("x_thresholds: not strictly increasing")
    if np.any(np.diff(ys) < 0):
        raise ValueError("y_thresholds: not monotone (non-decreasing)")
    if ys[0] < 0 or ys[-1] > 1:
        raise ValueError("y_thresholds: outside [0, 1]")


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)) of p clipped to [EPS, 1 - EPS] (NumPy only: the prediction path)."""
    q = np.clip(p, EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z) without overflow for large |z| (NumPy only: the prediction path)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
