"""Xception classifier (Cadene's pretrainedmodels)."""

from __future__ import annotations

from torch import nn

from ptxseg.models.heads import PooledClassifier, resolve_dropout
from ptxseg.models.weights import ImagenetWeights, StateDict


def fix_pointwise(state: StateDict) -> StateDict:
    # Cadene's earlier Xception export (xception-b5690688.pth) stored the separable convolutions'
    # 1x1 'pointwise' weights as 2-D matrices; those loaders unsqueeze them. A no-op for the
    # current file, whose weights are already 4-D.
    return {
        k: v[:, :, None, None] if k.endswith("pointwise.weight") and v.ndim == 2 else v
        for k, v in state.items()
    }


IMAGENET = ImagenetWeights(
    file_name="xception-43020ad28.pth",
    url="http://data.lip6.fr/cadene/pretrainedmodels/xception-43020ad28.pth",
    submodule="backbone",
    source="pretrainedmodels xception 'imagenet'",
    # The file predates the library's fc -> last_linear rename; accept either name.
    head=("fc.", "last_linear."),
    fix_keys=fix_pointwise,
    mirrors=(
        "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-cadene/"
        "xception-43020ad28.pth",
    ),
)

# Unpadded 3x3 stem convolutions (stride 2, then 1): 7 px is the least that leaves a 1x1 map.
MIN_SIZE = 7


def build_xception(
    num_classes: int, dropout: float = 0.0, dropout_rate: float | None = None
) -> nn.Module:
    from pretrainedmodels.models.xception import Xception

    backbone = Xception(num_classes=1000)
    num_features = backbone.fc.in_features
    del backbone.fc  # the library's xception() renames it to last_linear; we drop it
    backbone.last_linear = nn.Identity()  # keeps the backbone's own forward usable
    # `features` ends with bn4; the library's `logits` applies the ReLU, so do we.
    return PooledClassifier(
        backbone,
        "features",
        num_features,
        num_classes,
        resolve_dropout(dropout, dropout_rate),
        relu=True,
    )
