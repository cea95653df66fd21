"""The TTA passes and their sizes, without torch: the ONNX prediction path reads them too.

TTA is flips times scales (``train.tta``: flip names and numbers); `ptxseg.runtime.predict` runs
the passes with PyTorch, `ptxseg.deploy` inside each exported ONNX graph.

Which passes a model takes is decided here, once (`passes_for`), from the scales its training
covered (`trained_scales`): every flip, and only the scales within the span of its training
scales. A model trained at one size (every classifier, a segmenter without stages) takes the
flips at scale 1; a segmenter trained by progressive resizing 512 -> 1024 has seen the anatomy at
half and at full scale and takes the scale passes between (full.yaml's 0.75 and 1.0). SIIM-ACR's
6th-7th places predicted at 768 and 1024 with models trained at 1024 after lower sizes; a
network shown only one scale has no reason to work at another, and the crops of a stage keep the
image's scale, so they add none. Prediction (OOF, test set, pseudo-labels, ``ptxseg predict``, the
ONNX export) reads the scales from the model (`ptxseg.runtime.predict.model_passes`), which
training and loading record from the model file's meta (its size and stages).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

TTA_MODES = ("none", "hflip", "vflip")


def tta_passes(tta: Sequence[str | float]) -> list[tuple[str, float]]:
    """(flip, scale) of every TTA pass: the listed flips times the listed scales (1.0 if none)."""
    flips = [t for t in tta if isinstance(t, str)]
    scales = [float(t) for t in tta if not isinstance(t, str)]
    unknown = sorted(set(flips) - set(TTA_MODES))
    bad_scales = [s for s in scales if not 0 < s <= 4]
    if unknown or bad_scales or not tta:
        raise ValueError(
            f"train.tta: unknown TTA mode(s) {unknown or bad_scales or 'none given'}; valid: "
            f"{', '.join(TTA_MODES)} and scales in (0, 4]"
        )
    return [(flip, scale) for scale in (scales or [1.0]) for flip in (flips or ["none"])]


def scaled_side(side: int, scale: float, multiple: int) -> int:
    """``side`` times ``scale``, rounded to the nearest multiple of ``multiple`` (at least one)."""
    return max(multiple, math.floor(side * scale / multiple + 0.5) * multiple)


def trained_scales(meta: Mapping) -> tuple[float, ...]:
    """The scales a model was trained at, relative to the side it predicts at: each
    progressive-resizing stage's size over the model's ``size`` (a model file's meta: ``size``,
    ``stages``); (1.0,) for a model trained at one size."""
    size, stages = meta.get("size"), meta.get("stages") or []
    if not size or not stages:
        return (1.0,)
    return tuple(sorted({float(stage["size"]) / size for stage in stages} | {1.0}))


def passes_for(
    passes: Sequence[tuple[str, float]], scales: Sequence[float] | None
) -> list[tuple[str, float]]:
    """The passes a model trained at ``scales`` (`trained_scales`) takes: those whose scale lies
    within the span of its training scales; where none does, every flip at scale 1. ``scales``
    None (a model that records none): every pass."""
    passes = list(passes)
    if scales is None:
        return passes
    low, high = min(scales) - 1e-9, max(scales) + 1e-9
    kept = [p for p in passes if low <= p[1] <= high]
    return kept or [(flip, 1.0) for flip in dict.fromkeys(flip for flip, _ in passes)]
