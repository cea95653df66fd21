"""The cascade: from fold models' outputs to an image's mask, one implementation and one rounding
order for every path that draws a mask (the OOF search, the submission, `ptxseg predict` with
PyTorch or ONNX, the NIH pseudo-labels). No torch: the ONNX path imports it.

The order, each step a function below:

1. A member's map (its TTA passes averaged, in float) is stored as uint8, probability x 255
   rounded (`quantise_probabilities`): what a fold job writes and what predict computes per model.
2. A fold's map is the mean of its members' uint8 maps, rounded half up, in integers
   (`fold_map` of the running `MemberSum`): exact, so a job that adds the members one file at a
   time and one that adds them one batch at a time give the same bytes.
3. An architecture's map is the mean of its folds' maps in float32 (`architecture_map`); out of
   fold, the one fold that held the image out.
4. The blend over architectures (`blend_maps`), rounded to uint8 once.
5. An image-level source's probability (a classifier, a segmenter's head) is its members' mean per
   fold (`members_probability`), then its folds' mean (`folds_probability`), both float32; the
   gate blends the sources (`gate_probability`).
6. `binarise`: empty below the gate, empty unless ``min_area`` pixels reach ``top`` (counted at the
   map's size, where the thresholds were searched), else the map resized to the image and cut at
   ``bottom``.

Before this module, the four paths rounded at different steps: a fold job's running mean
re-quantised after every member, predict averaged floats, and a borderline image could flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np


def level(probability: float) -> int:
    """The uint8 level a probability threshold corresponds to (map >= level <=> p >= threshold)."""
    return int(np.clip(round(probability * 255), 0, 255))


def quantise_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities stored in a byte: a quarter of the memory of float32, resolution 1/255."""
    return np.rint(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)


def area_at(min_area_1024: float, size_h: int, size_w: int | None = None) -> float:
    """A minimum area given in pixels of a 1024 x 1024 image, at another map size."""
    return min_area_1024 * size_h * (size_w or size_h) / (1024 * 1024)


def weighted_mean(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of same-shaped arrays in float32 (uint8 maps stay in their 0-255 scale),
    summed in the given order."""
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    if total <= 0:
        raise ValueError("weights must not all be zero")
    out = np.zeros(np.shape(arrays[0]), dtype=np.float32)
    term = np.empty_like(out)
    for array, weight in zip(arrays, weights, strict=True):
        if weight:
            # Each term in float32 into one buffer: the same products as converting the array
            # first, without two temporaries an array (the OOF search's largest cost: half).
            np.multiply(array, np.float32(weight / total), out=term, dtype=np.float32)
            out += term
    return out


class MemberSum:
    """The running integer sum of a fold's members' uint8 maps (step 2), one member at a time.

    ``out`` may be a preallocated array of zeros (a new memmap of the test set); uint16 holds the
    sum of up to 257 members.
    """

    def __init__(self, shape: tuple[int, ...] | None = None, out: np.ndarray | None = None):
        self.total = np.zeros(shape, dtype=np.uint16) if out is None else out
        if self.total.dtype != np.uint16:
            raise ValueError(f"a member sum is uint16, not {self.total.dtype}")
        self.count = 0

    def add(self, member_map: np.ndarray, rows=slice(None)) -> None:
        """Add one member's uint8 map (of ``rows`` of the total); call `next_member` after each."""
        self.total[rows] += np.asarray(member_map, dtype=np.uint8)

    def next_member(self) -> None:
        self.count += 1
        if self.count > 257:
            raise ValueError("a uint16 member sum holds at most 257 members")

    def mean(self, rows=slice(None)) -> np.ndarray:
        return fold_map(self.total[rows], self.count)


def fold_map(member_total: np.ndarray, count: int) -> np.ndarray:
    """The members' mean uint8 map from their integer sum, rounded half up (step 2)."""
    if count < 1:
        raise ValueError("a fold map needs at least one member")
    # Every possible sum's rounded mean in a table, looked up: the same numbers as dividing each
    # pixel's sum, in half the time (the OOF search averages every kept member's maps).
    sums = np.arange(255 * count + 1, dtype=np.uint32)
    return ((sums * 2 + count) // (2 * count)).astype(np.uint8)[np.asarray(member_total)]


def members_map(member_maps: Sequence[np.ndarray]) -> np.ndarray:
    """A fold's uint8 map from its members' uint8 maps, held together (step 2)."""
    wide = np.uint16 if len(member_maps) <= 257 else np.uint32  # 257 x 255 fits in uint16
    total = np.zeros(np.shape(member_maps[0]), dtype=wide)
    for member in member_maps:
        total += np.asarray(member, dtype=np.uint8)
    return fold_map(total, len(member_maps))


def architecture_map(fold_maps: Sequence[np.ndarray]) -> np.ndarray:
    """An architecture's map: its folds' uint8 maps averaged in float32 (step 3)."""
    return weighted_mean(fold_maps, [1.0] * len(fold_maps))


def blend_maps(architecture_maps: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The segmenters' blend, rounded to uint8 once (step 4)."""
    return np.rint(weighted_mean(architecture_maps, weights)).astype(np.uint8)


class ProbabilitySum:
    """The running float32 sum of a fold's members' image probabilities (step 5), one member at a
    time, in the members' order."""

    def __init__(self, n: int) -> None:
        self.total = np.zeros(n, dtype=np.float32)
        self.count = 0

    def add(self, probabilities: np.ndarray, rows=slice(None)) -> None:
        """Add one member's probabilities (of ``rows``); call `next_member` after each member."""
        self.total[rows] += np.asarray(probabilities, dtype=np.float32)

    def next_member(self) -> None:
        self.count += 1

    def mean(self) -> np.ndarray:
        if self.count < 1:
            raise ValueError("a probability mean needs at least one member")
        return self.total / np.float32(self.count)


def members_probability(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """An image-level source's probability of one fold from its members' held together (step 5)."""
    running = ProbabilitySum(len(probabilities[0]))
    for p in probabilities:
        running.add(p)
        running.next_member()
    return running.mean()


def folds_probability(by_fold: np.ndarray) -> np.ndarray:
    """An image-level source's probability from its folds' (images, folds), in float32 (step 5).

    Read back from a CSV, the float32 values a fold job wrote come back exactly (pandas writes a
    float32's shortest decimal, which casts back to the same float32).
    """
    by_fold = np.asarray(by_fold, dtype=np.float32)
    return members_probability([by_fold[:, k] for k in range(by_fold.shape[1])])


def gate_probability(sources: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """The gate's blend of its sources' probabilities (step 5)."""
    return weighted_mean(sources, weights)


@dataclass(frozen=True)
class Cascade:
    """Thresholds as probabilities; ``min_area`` in pixels of a 1024 x 1024 image."""

    gate: float = 0.0
    top: float = 0.5
    min_area: float = 0.0
    bottom: float = 0.5

    def as_dict(self) -> dict:
        return asdict(self)


def reaches_top(probability_map: np.ndarray, cascade: Cascade) -> bool:
    """At least ``min_area`` pixels (scaled to the map's size), and at least one, at the top threshold."""
    count = int(np.count_nonzero(probability_map >= level(cascade.top)))
    return count >= max(area_at(cascade.min_area, *probability_map.shape[:2]), 1)


def binarise(
    probability_map: np.ndarray,
    cascade: Cascade,
    classifier_probability: float | None = None,
    out_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """The cascade's mask for one image (step 6): decided at the map's size, drawn at ``out_shape``.

    The emptiness test counts pixels at the map's own size (where the thresholds were searched);
    the mask itself is the map resized (bilinear) to ``out_shape`` and cut at the bottom threshold.
    """
    shape = out_shape or probability_map.shape
    if classifier_probability is not None and classifier_probability < cascade.gate:
        return np.zeros(shape, dtype=bool)
    if not reaches_top(probability_map, cascade):
        return np.zeros(shape, dtype=bool)
    resized = probability_map
    if tuple(shape) != probability_map.shape:
        resized = cv2.resize(probability_map, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return resized >= level(cascade.bottom)
