"""Losses from segmentation-models-pytorch, chosen by name from the config.

``bce`` and ``focal`` serve classifiers (binary or the 14 NIH labels) and segmenters; the others
only segmenters:

- ``bce_dice`` (the segmenters' default): ``bce_weight`` * BCE + ``dice_weight`` * Dice;
- ``lovasz``: smp's Lovasz hinge (``per_image``, as Berman's reference, or over the whole batch);
- ``symmetric_lovasz``: the Lovasz hinge on the mask and on its complement, averaged
  (:class:`SymmetricLovaszLoss`, SIIM-ACR's 3rd place);
- ``combined``: a :class:`WeightedSum` of the terms of ``weights`` (``bce``, ``dice``, ``focal``,
  ``lovasz``, ``symmetric_lovasz``) whose weight is > 0, e.g. {bce: 1, dice: 1, focal: 1}
  (SIIM-ACR's 1st place); a term left out or 0 is not computed.

A segmenter with a classification head returns (mask logits, image logits);
:class:`ImageHeadLoss` adds BCE on the image logits against "the target mask has a positive
pixel" to the pixel loss, and :func:`segmenter_loss` builds a segmenter's loss from the config,
wrapped in it when the head has a weight.
"""

from __future__ import annotations

from collections.abc import Mapping

import segmentation_models_pytorch as smp
import torch
from torch import nn

from ptxseg.models.outputs import Output, split_logits

LOSSES = ("bce", "bce_dice", "focal", "lovasz", "symmetric_lovasz", "combined")
COMBINED_TERMS = ("bce", "dice", "focal", "lovasz", "symmetric_lovasz")


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


class SymmetricLovaszLoss(nn.Module):
    """0.5 * (Lovasz hinge(logits, target) + Lovasz hinge(-logits, 1 - target)).

    The binary Lovasz hinge rewards the positive pixels only; scoring the complement too (the
    background as the class) makes it symmetric, as SIIM-ACR's 3rd place trained its U-Nets.
    """

    def __init__(self, per_image: bool = True) -> None:
        super().__init__()
        self.lovasz = smp.losses.LovaszLoss("binary", per_image=per_image)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.lovasz(logits, target) + self.lovasz(-logits, 1 - target))


class ImageHeadLoss(nn.Module):
    """The pixel loss on the mask logits, plus ``weight`` * BCE on the image logits if any.

    The image label is whether the target mask (of the input as trained, e.g. a crop) has a
    positive pixel, (B, 1) float. A plain tensor output gets the pixel loss alone.
    """

    def __init__(self, pixel_loss: nn.Module, weight: float) -> None:
        super().__init__()
        self.pixel_loss = pixel_loss
        self.weight = float(weight)
        self.image_loss = nn.BCEWithLogitsLoss()

    def forward(self, output: Output, target: torch.Tensor) -> torch.Tensor:
        mask, image = split_logits(output)
        loss = self.pixel_loss(mask, target)
        if image is None:
            return loss
        label = (target.flatten(1) > 0).any(dim=1, keepdim=True).to(image.dtype)
        return loss + self.weight * self.image_loss(image, label)


def _combined(
    weights: Mapping[str, float] | None, focal_gamma: float, per_image: bool
) -> WeightedSum:
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(COMBINED_TERMS))
    if unknown:
        raise ValueError(
            f"loss.weights has unknown terms {unknown}; valid: {', '.join(COMBINED_TERMS)}"
        )
    negative = sorted(k for k, w in weights.items() if w < 0)
    if negative:
        raise ValueError(f"loss.weights must be >= 0; negative: {negative}")
    factories = {
        "bce": nn.BCEWithLogitsLoss,
        "dice": lambda: smp.losses.DiceLoss("binary"),
        "focal": lambda: smp.losses.FocalLoss("binary", gamma=focal_gamma),
        "lovasz": lambda: smp.losses.LovaszLoss("binary", per_image=per_image),
        "symmetric_lovasz": lambda: SymmetricLovaszLoss(per_image=per_image),
    }
    terms = [t for t in COMBINED_TERMS if weights.get(t, 0) > 0]
    if not terms:
        raise ValueError(
            "loss 'combined' needs at least one term with weight > 0 in loss.weights "
            f"({', '.join(COMBINED_TERMS)}); got {weights or '{}'}"
        )
    return WeightedSum([factories[t]() for t in terms], [float(weights[t]) for t in terms])


def build_loss(
    name: str,
    kind: str,
    bce_weight: float = 1.0,
    dice_weight: float = 1.0,
    focal_gamma: float = 2.0,
    per_image: bool = True,
    weights: Mapping[str, float] | None = None,
) -> nn.Module:
    """A loss on logits; ``kind`` is 'segmenter', 'classifier' (one logit) or 'multilabel' (NIH).

    ``weights`` (the terms of ``combined``) is ignored by the other losses.
    """
    mode = "multilabel" if kind == "multilabel" else "binary"
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "focal":
        return smp.losses.FocalLoss(mode, gamma=focal_gamma)
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid: {', '.join(LOSSES)}")
    if kind != "segmenter":
        raise ValueError(f"loss {name!r} is for segmenters; classifiers take 'bce' or 'focal'")
    if name == "bce_dice":
        return WeightedSum(
            [nn.BCEWithLogitsLoss(), smp.losses.DiceLoss("binary")], [bce_weight, dice_weight]
        )
    if name == "lovasz":
        return smp.losses.LovaszLoss("binary", per_image=per_image)
    if name == "symmetric_lovasz":
        return SymmetricLovaszLoss(per_image=per_image)
    return _combined(weights, focal_gamma, per_image)


def segmenter_loss(loss: Mapping, head_weight: float | None) -> nn.Module:
    """A segmenter's loss from the config's loss dict; with an image head when ``head_weight`` is set."""
    pixel = build_loss(kind="segmenter", **loss)
    return pixel if head_weight is None else ImageHeadLoss(pixel, head_weight)
