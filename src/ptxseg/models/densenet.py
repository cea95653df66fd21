"""DenseNet-169 classifier (torchvision)."""

from __future__ import annotations

import re

from torch import nn

from ptxseg.models.heads import PooledClassifier, resolve_dropout
from ptxseg.models.weights import ImagenetWeights, StateDict

# torchvision's old DenseNet files name layer parts 'norm.1', 'conv.2', ...; '.' is no longer
# allowed in module names, so torchvision renames them to 'norm1', 'conv2' while loading. Its helper
# (densenet._load_state_dict) downloads the file itself, hence this copy of its rule.
_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def fix_old_keys(state: StateDict) -> StateDict:
    fixed = {}
    for key, value in state.items():
        match = _OLD_KEY.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    return fixed


IMAGENET = ImagenetWeights(
    file_name="densenet169-b2777c0a.pth",
    url="https://download.pytorch.org/models/densenet169-b2777c0a.pth",
    submodule="backbone",
    source="torchvision DenseNet169_Weights.IMAGENET1K_V1",
    head=("classifier.",),
    fix_keys=fix_old_keys,
)

# A 7x7/2 stem, a 3x3/2 max pool and three 2x2 average-pooling transitions: 29 px is the least
# that keeps every map at least 1x1.
MIN_SIZE = 29


def build_densenet169(
    num_classes: int, dropout: float = 0.0, dropout_rate: float | None = None
) -> nn.Module:
    from torchvision.models import densenet169

    backbone = densenet169(weights=None)
    num_features = backbone.classifier.in_features
    backbone.classifier = nn.Identity()  # the head lives in PooledClassifier
    # `features` ends with norm5; torchvision applies the final ReLU in forward(), so do we.
    return PooledClassifier(
        backbone,
        "features",
        num_features,
        num_classes,
        resolve_dropout(dropout, dropout_rate),
        relu=True,
    )
