"""Intensity scaling of a model's input, without torch or albumentations (the ONNX path reads it)."""

from __future__ import annotations

import numpy as np


def scale_intensities(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 grey -> float32 with the data set's mean and std (intensities scaled to [0, 1] first)."""
    return ((image.astype(np.float32) / 255.0) - mean) / std
