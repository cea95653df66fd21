"""Scores the way the competition computes them: each mask drawn at its image's own size (1024 x
1024 for SIIM) against the mask decoded from the label file, not against a resized copy.

Searches may run on smaller maps; the scores the pipeline reports as results come from here, so
that a blend at 512 px and a scaling candidate at 300 px are measured with the same ruler.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ptxseg.data.siim import labels_by_image, read_index
from ptxseg.io import maps, rle
from ptxseg.scoring.cascade import Cascade, binarise


class NativeTruth:
    """True masks at each train image's own size, decoded from the label file on request."""

    def __init__(self, rle_csv: str | os.PathLike, index_csv: str | os.PathLike) -> None:
        self.rles = labels_by_image(rle_csv)
        index = read_index(index_csv)
        self.shapes = {
            r.image_id: (int(r.rows), int(r.columns))
            for r in index[index["split"] == "train"].itertuples()
        }
        self.source = truth_name(rle_csv)

    def shape(self, image_id: str) -> tuple[int, int]:
        return self.shapes[image_id]

    def mask(self, image_id: str) -> np.ndarray:
        return rle.decode_union(self.rles[image_id], self.shapes[image_id])


def truth_name(rle_csv: str | os.PathLike) -> str:
    """What scores against ``rle_csv`` name as their truth: the label file the download came with,
    as the index recorded beside its label file (``.json``), with the size its masks came at
    where a PNG set's masks are not the competition's 1024 px labels; else the file's name."""
    origin = Path(rle_csv).with_suffix(".json")
    if origin.is_file():
        return str(json.loads(origin.read_text(encoding="utf-8"))["truth"])
    return Path(rle_csv).name


def native_outcomes(
    stack: np.ndarray,
    image_ids: list[str],
    truth: NativeTruth,
    cascade: Cascade,
    classifier: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per image of a chunk of maps: true and predicted pixels and the Dice at its own size."""
    dice, truth_pixels, predicted_pixels = [], [], []
    for k, image_id in enumerate(image_ids):
        true = truth.mask(image_id)
        predicted = binarise(
            stack[k],
            cascade,
            None if classifier is None else float(classifier[k]),
            out_shape=truth.shape(image_id),
        )
        true_count, predicted_count = np.count_nonzero(true), np.count_nonzero(predicted)
        total = true_count + predicted_count
        overlap = np.count_nonzero(true & predicted) if total else 0
        dice.append(1.0 if total == 0 else 2.0 * overlap / total)
        truth_pixels.append(true_count)
        predicted_pixels.append(predicted_count)
    return {
        "dice_native": np.array(dice, dtype=np.float64),
        "truth_pixels_native": np.array(truth_pixels, dtype=np.int64),
        "predicted_pixels_native": np.array(predicted_pixels, dtype=np.int64),
    }


def native_score(
    maps_path: str | os.PathLike,
    image_ids: list[str],
    truth: NativeTruth,
    cascade: Cascade,
    chunk: int = 32,
) -> float:
    """The competition score of one map file (rows in the order of ``image_ids``) at ``cascade``."""
    dice = []
    with maps.MapFile(maps_path) as stored:
        if len(stored) != len(image_ids):
            raise ValueError(f"{maps_path}: {len(stored)} maps for {len(image_ids)} image ids")
        for start, stack in stored.chunks(chunk):
            part = native_outcomes(stack, image_ids[start : start + len(stack)], truth, cascade)
            dice.append(part["dice_native"])
    return float(np.concatenate(dice).mean())
