"""EfficientNet-B4 classifier (timm)."""

from __future__ import annotations

from torch import nn

from ptxseg.models.heads import PooledClassifier, resolve_dropout
from ptxseg.models.layers import check_rate
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


def build_efficientnet_b4(
    num_classes: int,
    dropout: float = 0.0,
    dropout_rate: float | None = None,
    drop_path_rate: float | None = None,
) -> nn.Module:
    """timm's EfficientNet-B4 under `PooledClassifier`.

    ``drop_path_rate``: timm's stochastic depth, block ``i`` of 32 dropped with probability
    ``drop_path_rate * i / 32`` in training (EfficientNet's linear rule); None: timm's default,
    none. ``dropout_rate`` (or the older ``dropout`` option): dropout before the linear head.
    """
    import timm

    drop_path_rate = check_rate("drop_path_rate", drop_path_rate)
    extra = {} if drop_path_rate is None else {"drop_path_rate": drop_path_rate}
    # num_classes=0: timm builds no classifier, so the backbone holds no head parameters.
    backbone = timm.create_model("efficientnet_b4", pretrained=False, num_classes=0, **extra)
    # forward_features ends with conv_head + bn2 (a BatchNormAct2d: activation included).
    return PooledClassifier(
        backbone,
        "forward_features",
        backbone.num_features,
        num_classes,
        resolve_dropout(dropout, dropout_rate),
    )
