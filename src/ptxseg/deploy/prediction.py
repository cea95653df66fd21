"""One image's prediction, whichever backend (PyTorch or onnxruntime) made it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prediction:
    """The ensemble's answer for one image.

    ``mask``: bool, the input's size: the cascade's mask (the gate, then the triplet).
    ``probability_map``: float32 in [0, 1] at the input's size: the segmenters' blended map as the
    cascade reads it (stored to 1/255 at the segmenters' size, resized bilinearly), so ``mask`` is
    the pixels at or above the bottom threshold wherever the image passes the gate and the top test.
    ``float_probability_map``: float32 in [0, 1] at the input's size: the same blend from the
    models' float maps, without the cascade's uint8 steps (for a Parametric Map at full
    precision); None where a prediction was made without it. Not part of the comparison: backends
    agree on it to float rounding, not bit for bit.
    ``probability``: the gate's blended image-level probability (classifiers and segmenter heads as
    the ensemble weighs them); None for an ensemble without a gate.
    ``calibrated_probability``: ``probability`` through the ensemble's calibration where
    ensemble.json has one, else ``probability`` itself.
    ``uncertainty``: the spread of ``probability`` over the fold models and TTA passes: for each
    (fold, TTA pass) the gate's blend of its sources as that fold's models (kept members averaged)
    see the image under that one pass; the population standard deviation (ddof 0) of those
    n_folds x passes values, whose mean is ``probability``. None without a gate.
    ``image``: the decoded input (uint8 grey), for overlays; not part of the comparison.
    """

    image_id: str
    mask: np.ndarray
    probability_map: np.ndarray
    probability: float | None
    calibrated_probability: float | None
    uncertainty: float | None
    source: str | None = None
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    float_probability_map: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def found(self) -> bool:
        """Whether the mask holds any pixel (a pneumothorax was found)."""
        return bool(self.mask.any())
