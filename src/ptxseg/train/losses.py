"""Losses from segmentation-models-pytorch, chosen by name from the config.

``bce`` and ``focal`` serve classifiers (binary or the 14 NIH labels) and segmenters;
``bce_dice`` (the segmenters' default) and ``lovasz`` (Lovasz hinge) only segmenters.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
from torch import nn

LOSSES = ("bce", "bce_dice", "focal", "lovasz")


class WeightedSum(nn.Module):
    """Sum of losses with weights, e.g. BCE + Dice."""

    def __init__(self, losses: list[nn.Module], weights: list[float]) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.weights = weights

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(
            w * loss(logits, target) for w, loss in zip(self.weights, self.losses, strict=True)
        )


def build_loss(
    name: str,
    kind: str,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    focal_gamma: float = 2.0,
    per_image: bool = False,
) -> nn.Module:
    """A loss on logits; ``kind`` is 'segmenter', 'classifier' (one logit) or 'multilabel' (NIH)."""
    mode = "multilabel" if kind == "multilabel" else "binary"
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "focal":
        return smp.losses.FocalLoss(mode, gamma=focal_gamma)
    if kind != "segmenter":
        raise ValueError(f"loss {name!r} is for segmenters; classifiers take 'bce' or 'focal'")
    if name == "bce_dice":
        return WeightedSum(
            [nn.BCEWithLogitsLoss(), smp.losses.DiceLoss("binary")], [bce_weight, dice_weight]
        )
    if name == "lovasz":
        return smp.losses.LovaszLoss("binary", per_image=per_image)
    raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
