"""Stand-ins of the official ImageNet weight files: random values in each library's own file format
(its key names, its old layouts, torch's legacy serialisation where the official file has it).

The unit tests load them into the models; the full config's structure test trains from them, so
that ``weights: imagenet`` runs as shipped on a machine that cannot download the real files.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ptxseg.models import get_spec

# The 2017-18 files (torchvision DenseNet, Cadene's) are in torch's legacy, pre-zip format.
LEGACY = ("densenet169", "xception", "inceptionresnetv2")


def _densenet_reference():
    from torchvision.models import densenet169

    state = densenet169(weights=None).state_dict()
    # Write it the way the official (2017) file is: old 'norm.1'-style layer keys, and no
    # BatchNorm 'num_batches_tracked' buffers (which BatchNorm fills in when loading).
    old = {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
        for k, v in state.items()
        if not k.endswith("num_batches_tracked")
    }
    assert any(".norm.1." in k for k in old)
    return old, state


def _xception_reference():
    from pretrainedmodels.models.xception import Xception

    state = Xception(num_classes=1000).state_dict()
    # Cadene's earlier export stored pointwise weights as matrices: the key fix must restore them.
    old = {k: v[:, :, 0, 0] if k.endswith("pointwise.weight") else v for k, v in state.items()}
    return old, state


def _irv2_reference():
    from pretrainedmodels.models.inceptionresnetv2 import InceptionResNetV2

    state = InceptionResNetV2(num_classes=1001).state_dict()
    return state, state


def _timm_b4_reference():
    import timm

    state = timm.create_model("efficientnet_b4", pretrained=False).state_dict()
    assert state["classifier.weight"].shape == (1000, 1792)
    return state, state


def _resnet34_reference():
    from torchvision.models import resnet34

    state = resnet34(weights=None).state_dict()
    return state, state


def _lukemelas_b4_reference():
    from segmentation_models_pytorch.encoders._efficientnet import EfficientNet, get_model_params

    state = EfficientNet(*get_model_params("efficientnet-b4", None)).state_dict()
    assert state["_fc.weight"].shape == (1000, 1792)
    return state, state


REFERENCES = {
    "densenet169": _densenet_reference,
    "xception": _xception_reference,
    "inceptionresnetv2": _irv2_reference,
    "efficientnet_b4": _timm_b4_reference,
    "unet_resnet34": _resnet34_reference,
    "attention_unet": _resnet34_reference,
    "unet_efficientnet_b4": _lukemelas_b4_reference,
}


def write_stand_in(name: str, folder: str | Path, options: dict | None = None) -> Path:
    """The ImageNet file ``name`` (with ``options``) loads, written into ``folder``."""
    spec = get_spec(name)
    weights = spec.imagenet_weights(options or {})
    file_state, _ = REFERENCES[name]()
    path = Path(folder) / weights.file_name
    torch.save(file_state, path, _use_new_zipfile_serialization=name not in LEGACY)
    return path
