"""Grey radiographs into 3-channel architectures: the one place where channels are adapted."""

from __future__ import annotations

import torch
from torch import nn

from ptxseg.models.outputs import Output


class GreyInput(nn.Module):
    """Repeat a grey (B, 1, H, W) batch to 3 channels before ``net``.

    Repeating the input instead of summing the stem's filters over channels leaves every
    architecture, and so its ImageNet weights, unchanged: one rule for all of them. The inner
    network is ``.net``, so state dict keys are ``net.<the architecture's own keys>``. Its output
    passes through as it is: a tensor, or a segmenter's (mask, image) logits tuple.

    It also enforces the entry's ``size_multiple`` for every architecture alike (smp checks it
    for some encoders only; efficientnet's 'same' padding would silently misalign the skips).
    """

    def __init__(self, net: nn.Module, name: str = "", kind: str = "", size_multiple: int = 1):
        super().__init__()
        self.net = net
        self.name = name  # plain attributes: not in the state dict
        self.kind = kind
        self.size_multiple = size_multiple

    def forward(self, x: torch.Tensor) -> Output:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected a grey batch (B, 1, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.size_multiple or w % self.size_multiple:
            # RuntimeError, as smp's own models raise for the same mistake
            raise RuntimeError(
                f"{self.name or 'model'}: input height {h} and width {w} must be multiples of "
                f"{self.size_multiple}"
            )
        return self.net(x.expand(-1, 3, -1, -1))
