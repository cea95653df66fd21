"""Inception-ResNet-v2 classifier (Cadene's pretrainedmodels)."""

from __future__ import annotations

from torch import nn

from ptxseg.models.heads import PooledClassifier, resolve_dropout
from ptxseg.models.weights import ImagenetWeights

IMAGENET = ImagenetWeights(
    file_name="inceptionresnetv2-520b38e4.pth",
    url="http://data.lip6.fr/cadene/pretrainedmodels/inceptionresnetv2-520b38e4.pth",
    submodule="backbone",
    source="pretrainedmodels inceptionresnetv2 'imagenet'",
    # The file's head has 1001 logits (class 0 is "background"); it is dropped anyway.
    head=("last_linear.",),
)

# The stem's unpadded convolutions and poolings need 75 px; below that a map reaches zero size.
# (The library's fixed 8x8 `avgpool_1a` would need 299 px: it is replaced, see below.)
MIN_SIZE = 75


def build_inceptionresnetv2(
    num_classes: int, dropout: float = 0.0, dropout_rate: float | None = None
) -> nn.Module:
    from pretrainedmodels.models.inceptionresnetv2 import InceptionResNetV2

    backbone = InceptionResNetV2(num_classes=1001)
    num_features = backbone.last_linear.in_features
    # Not used by PooledClassifier (whose pooling is adaptive, and whose dropout is an option
    # rather than the library's fixed 0.5 in `logits`), but made input-size-free and head-free
    # here too, so the backbone's own forward works at any size >= MIN_SIZE.
    backbone.avgpool_1a = nn.AdaptiveAvgPool2d(1)
    backbone.last_linear = nn.Identity()
    # `features` ends with conv2d_7b, a conv-BN-ReLU: no extra activation.
    return PooledClassifier(
        backbone, "features", num_features, num_classes, resolve_dropout(dropout, dropout_rate)
    )
