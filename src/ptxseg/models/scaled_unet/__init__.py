"""The compound-scaled U-Net (EfficientNet's rule applied to a U-Net): B0, B1, B2 and free multipliers.

- `compound`: the rounding rules, the compound maths and the search grid (`candidates`); plain
  Python, importable without torch (the Snakefile enumerates the grid's jobs at DAG build);
- `model`: the network (`ScaledUNet`, `build_scaled_unet`, `build_scaled_unet_b1`, `..._b2`).

The network's names load on first use (PEP 562), so importing the rules never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = [
    "BASE_DEPTHS",
    "BASE_WIDTHS",
    "MIN_SIZE",
    "OUTPUT_STRIDE",
    "SIZE_MULTIPLE",
    "DecoderStage",
    "ResidualBlock",
    "ScaledUNet",
    "build_scaled_unet",
    "build_scaled_unet_b1",
    "build_scaled_unet_b2",
    "scaled_depths",
    "scaled_widths",
]

if TYPE_CHECKING:
    from ptxseg.models.scaled_unet.model import (
        BASE_DEPTHS,
        BASE_WIDTHS,
        MIN_SIZE,
        OUTPUT_STRIDE,
        SIZE_MULTIPLE,
        DecoderStage,
        ResidualBlock,
        ScaledUNet,
        build_scaled_unet,
        build_scaled_unet_b1,
        build_scaled_unet_b2,
        scaled_depths,
        scaled_widths,
    )


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'ptxseg.models.scaled_unet' has no attribute {name!r}")
    value = getattr(importlib.import_module("ptxseg.models.scaled_unet.model"), name)
    globals()[name] = value  # later lookups skip this function
    return value
