"""Regularisation shared by the architectures: rates, drop path schedules, head dropout, BatchNorm momentum.

The EfficientNet paper's training process (Tan & Le 2019, section 5.2) regularises with stochastic
depth (drop path), dropout before the head and a BatchNorm momentum of 0.99 (TensorFlow's
convention). Each is key-neutral: none adds a parameter or a buffer, so a checkpoint trained with
them loads into the model built without them (inference builds with the defaults).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def check_rate(name: str, rate: float | None) -> float | None:
    """``rate`` itself when None or a number in [0, 1); a ValueError otherwise."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1) or None, got {rate!r}")
    return float(rate)


def linear_drop_path_rates(rate: float, count: int) -> list[float]:
    """EfficientNet's rule: block ``i`` of ``count`` is dropped with probability ``rate * i / count``.

    As timm's and lukemelas' EfficientNets: the first block is never dropped, the last almost at
    ``rate``, the mean is about ``rate / 2``.
    """
    return [rate * i / count for i in range(count)]


class DropoutConv2d(nn.Conv2d):
    """A Conv2d applying ``dropout`` to its input: a convolution's own parameters and state-dict keys.

    Used to put dropout before a library's head convolution (smp's SegmentationHead has none)
    without renaming its keys, which wrapping the convolution in a Sequential would.
    """

    def __init__(self, *args: Any, dropout: float = 0.0, device: Any = None, **kwargs: Any):
        # `device` named: nn.utils.skip_init looks for it in the signature
        super().__init__(*args, device=device, **kwargs)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.dropout(x))


def with_input_dropout(conv: nn.Conv2d, rate: float) -> DropoutConv2d:
    """``conv``'s parameters (the same tensors) in a `DropoutConv2d` with channel dropout ``rate``.

    ``nn.Dropout2d`` (whole feature maps) rather than element-wise dropout: neighbouring pixels of a
    decoder's map are strongly correlated, so dropping single elements barely regularises
    (Tompson et al. 2015). Consumes no random numbers (the parameters are moved, not initialised).
    """
    new = nn.utils.skip_init(
        DropoutConv2d,
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
        dropout=rate,
    )
    new.weight = conv.weight
    new.bias = conv.bias
    return new


def head_dropout(rate: float | None) -> nn.Module:
    """Channel dropout before a segmentation head (see `with_input_dropout`); Identity for None or 0."""
    return nn.Dropout2d(rate) if rate else nn.Identity()


def set_batchnorm_momentum(model: nn.Module, tf_momentum: float | None) -> int:
    """Set ``momentum = 1 - tf_momentum`` on every BatchNorm layer of ``model``; the count set.

    ``tf_momentum`` is TensorFlow's convention (the share of the running statistics kept per step:
    the paper's 0.99 is torch's 0.01). None changes nothing and returns 0. Covers every subclass
    of torch's BatchNorm (1d/2d/3d, SyncBatchNorm, timm's BatchNormAct2d).
    """
    if tf_momentum is None:
        return 0
    if (
        isinstance(tf_momentum, bool)
        or not isinstance(tf_momentum, int | float)
        or not 0.0 < tf_momentum < 1.0
        or not math.isfinite(tf_momentum)
    ):
        raise ValueError(f"tf_momentum must be a number in (0, 1) or None, got {tf_momentum!r}")
    count = 0
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.momentum = 1.0 - float(tf_momentum)
            count += 1
    return count
