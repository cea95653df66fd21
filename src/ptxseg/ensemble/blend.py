"""Blending weights over architectures, searched on out-of-fold predictions.

A grid over the probability simplex (weights >= 0 summing to 1, in steps of ``step``) includes
every single architecture (the corners), so the chosen blend never scores below the best single
architecture on the OOF images. With a handful of architectures the grid is small (4 at 0.1: 286
points), and an exhaustive search is exact where a local optimiser could stop on a plateau of
the step-shaped competition metric.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np


def simplex_grid(n: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors of length ``n`` on the simplex with the given step, corners first."""
    if n < 1:
        raise ValueError("need at least one member to blend")
    units = round(1 / step)
    if abs(units * step - 1) > 1e-9:
        raise ValueError(f"weight step {step} must divide 1")
    points = [c for c in itertools.product(range(units + 1), repeat=n) if sum(c) == units]
    grid = np.array(points, dtype=np.float64) / units
    corners = (grid == 1).any(axis=1)
    return np.concatenate([grid[corners][::-1], grid[~corners]])


def weighted_mean(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of same-shaped arrays in float32 (uint8 maps stay in their 0-255 scale)."""
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        raise ValueError("weights must not all be zero")
    out = np.zeros(np.shape(arrays[0]), dtype=np.float32)
    for array, weight in zip(arrays, weights, strict=True):
        if weight:
            out += np.float32(weight / total) * np.asarray(array, dtype=np.float32)
    return out


def blend_uint8(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    return np.rint(weighted_mean(arrays, weights)).astype(np.uint8)


def search_weights(
    n: int, score: Callable[[np.ndarray], float], step: float = 0.1
) -> tuple[np.ndarray, float, list]:
    """The simplex point with the highest ``score`` (ties go to the earlier point, corners first).

    Returns (weights, best score, every (weights, score) tried).
    """
    tried = []
    best_weights, best_score = None, -np.inf
    for weights in simplex_grid(n, step):
        value = float(score(weights))
        tried.append((weights.tolist(), value))
        if value > best_score + 1e-12:
            best_weights, best_score = weights, value
    return best_weights, best_score, tried
