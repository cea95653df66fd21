"""Classification heads: the one shared by every classifier, and the segmenters' image-level head.

Both are global average pooling, dropout, linear. The segmenters' (``classification_head=True``)
is smp's own auxiliary head class, so smp's Unet and the hand-written U-Nets have the same one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_CLASSES = 1  # the segmenters' image-level logit: the image has a pneumothorax


class PooledClassifier(nn.Module):
    """``backbone.<feature_method>(x)`` -> optional ReLU -> adaptive average pool -> dropout -> linear.

    The libraries' own heads differ (fixed-size pooling, a built-in dropout of 0.5, 1000 or 1001
    logits); calling the backbone's feature method and owning the head here gives every classifier
    the same input-size freedom, dropout option and ``head`` keys. The backbone keeps its library
    layout (its ImageNet head removed), so the official ImageNet files load into it unchanged.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_method: str,
        num_features: int,
        num_classes: int,
        dropout: float = 0.0,
        relu: bool = False,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.feature_method = (
            feature_method  # name of the backbone method giving the last feature map
        )
        self.relu = relu  # the library applies its final activation in its (replaced) head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self.backbone, self.feature_method)(x)
        if self.relu:
            x = F.relu(x)
        return self.head(self.dropout(self.pool(x).flatten(1)))


def resolve_dropout(dropout: float, dropout_rate: float | None) -> float:
    """The head's dropout: the recipe's ``dropout_rate`` where given, else the ``dropout`` option.

    Both name the same dropout (the option predates the recipe key); giving two different values
    is refused rather than one silently winning.
    """
    if dropout_rate is None:
        return dropout
    if dropout not in (0.0, dropout_rate):
        raise ValueError(
            f"dropout={dropout} and dropout_rate={dropout_rate} both set the head's dropout; "
            "give one of them"
        )
    return dropout_rate


def image_head_params(dropout_rate: float | None) -> dict[str, Any]:
    """smp's ``aux_params`` of the image-level head: average pooling of the encoder's deepest map,
    dropout ``dropout_rate`` (None or 0: none), one linear logit, no activation."""
    return {
        "classes": IMAGE_CLASSES,
        "pooling": "avg",
        "dropout": dropout_rate or None,
        "activation": None,
    }


def image_head(in_channels: int, dropout_rate: float | None) -> nn.Module:
    """The head smp's Unet builds from `image_head_params`, for the hand-written U-Nets."""
    from segmentation_models_pytorch.base import ClassificationHead

    return ClassificationHead(in_channels=in_channels, **image_head_params(dropout_rate))
