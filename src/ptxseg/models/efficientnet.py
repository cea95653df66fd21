"""EfficientNet-B4 classifier (timm)."""

from __future__ import annotations

from torch import nn

from ptxseg.models.heads import PooledClassifier
from ptxseg.models.weights import ImagenetWeights

IMAGENET = ImagenetWeights(
    file_name="efficientnet_b4_ra2_320-7eb33cd5.pth",
    url=(
        "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
        "efficientnet_b4_ra2_320-7eb33cd5.pth"
    ),
    submodule="backbone",
    source="timm efficientnet_b4.ra2_in1k",
    head=("classifier.",),
)

# 'Same' padding everywhere: any side works (maps shrink to 1x1, never to zero).
MIN_SIZE = 1


def build_efficientnet_b4(num_classes: int, dropout: float = 0.0) -> nn.Module:
    import timm

    # num_classes=0: timm builds no classifier, so the backbone holds no head parameters.
    backbone = timm.create_model("efficientnet_b4", pretrained=False, num_classes=0)
    # forward_features ends with conv_head + bn2 (a BatchNormAct2d: activation included).
    return PooledClassifier(
        backbone, "forward_features", backbone.num_features, num_classes, dropout
    )
