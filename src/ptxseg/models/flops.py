"""What a network costs: forward FLOPs per image and parameters, counted on the built model.

The compound-scaling search (`ptxseg.models.scaled_unet.search`) screens its grid by them, and
they count any registered model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ptxseg.models.grey import GreyInput


def input_channels(model: nn.Module) -> int:
    """1 for the registry's grey-input wrapper; else the first convolution's input channels."""
    if isinstance(model, GreyInput):
        return 1
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


def flops_per_image(
    model: nn.Module, size: int | Sequence[int], channels: int | None = None
) -> int:
    """Forward FLOPs (2 per multiply-add) of one ``size`` x ``size`` image, in eval mode.

    ``channels`` defaults to what the model takes: 1 behind `GreyInput` (the registry's models),
    else its first convolution's input channels. Convolutions and matrix products are counted
    (torch's FlopCounterMode); normalisation, activations and resampling are not.
    """
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if channels is None:
        channels = input_channels(model)
    reference = next(model.parameters(), None)
    kwargs = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
    x = torch.zeros(1, channels, height, width, **kwargs)
    training = model.training
    model.eval()  # BatchNorm statistics stay as they are
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(training)
    return int(counter.get_total_flops())


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
