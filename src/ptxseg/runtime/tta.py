"""The TTA passes and their sizes, without torch: the ONNX prediction path reads them too.

TTA is flips times scales (``train.tta``: flip names and numbers); `ptxseg.runtime.predict` runs
the passes with PyTorch, `ptxseg.deploy` inside each exported ONNX graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
