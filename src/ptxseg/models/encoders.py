"""smp encoders for the U-Nets and the official ImageNet files that fit them.

smp 0.6 fetches encoder weights from the Hugging Face hub (``smp-hub/<encoder>.imagenet``). Its
ResNet encoders are torchvision's ResNets and its ``efficientnet-*`` encoders are lukemelas'
EfficientNet-PyTorch, each without the classifier, so the original .pth files of those projects
load into them directly: those are the files named here, found offline like every ImageNet file.
"""

from __future__ import annotations

from torch import nn

from ptxseg.models.weights import ImagenetWeights

_TORCHVISION = "https://download.pytorch.org/models/"
_LUKEMELAS = "https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/"


def _torchvision_resnet(file_name: str, name: str) -> ImagenetWeights:
    return ImagenetWeights(
        file_name=file_name,
        url=_TORCHVISION + file_name,
        submodule="encoder",
        source=f"torchvision {name} IMAGENET1K_V1, as used by smp's '{name}' encoder",
        head=("fc.",),
    )


def _lukemelas(file_name: str, name: str) -> ImagenetWeights:
    return ImagenetWeights(
        file_name=file_name,
        url=_LUKEMELAS + file_name,
        submodule="encoder",
        source=f"lukemelas EfficientNet-PyTorch, as used by smp's '{name}' encoder",
        head=("_fc.",),
    )


ENCODER_IMAGENET: dict[str, ImagenetWeights] = {
    "resnet18": _torchvision_resnet("resnet18-f37072fd.pth", "resnet18"),
    "resnet34": _torchvision_resnet("resnet34-b627a593.pth", "resnet34"),
    "resnet50": _torchvision_resnet("resnet50-0676ba61.pth", "resnet50"),
    "efficientnet-b0": _lukemelas("efficientnet-b0-355c32eb.pth", "efficientnet-b0"),
    "efficientnet-b1": _lukemelas("efficientnet-b1-f1951068.pth", "efficientnet-b1"),
    "efficientnet-b2": _lukemelas("efficientnet-b2-8bb594d6.pth", "efficientnet-b2"),
    "efficientnet-b3": _lukemelas("efficientnet-b3-5fb5a3c3.pth", "efficientnet-b3"),
    "efficientnet-b4": _lukemelas("efficientnet-b4-6ed6700e.pth", "efficientnet-b4"),
    "efficientnet-b5": _lukemelas("efficientnet-b5-b6417697.pth", "efficientnet-b5"),
    "efficientnet-b6": _lukemelas("efficientnet-b6-c76e70fd.pth", "efficientnet-b6"),
    "efficientnet-b7": _lukemelas("efficientnet-b7-dcc49843.pth", "efficientnet-b7"),
}


def build_encoder(name: str) -> nn.Module:
    """A randomly initialised smp encoder of depth 5 (weights are loaded later, from files)."""
    from segmentation_models_pytorch.encoders import get_encoder, get_encoder_names

    if not name.startswith("tu-") and name not in get_encoder_names():
        raise ValueError(f"unknown smp encoder {name!r}; valid: {', '.join(get_encoder_names())}")
    return get_encoder(name, in_channels=3, depth=5, weights=None)


# smp encoders with stochastic depth: lukemelas' EfficientNets ("efficientnet-b0".."-b7") drop
# block i of n with probability drop_connect_rate * i / n in training (EfficientNet's rule), at
# the library's 0.2 unless set. (smp's "timm-efficientnet-*" fix their rates when built: not here.)
DROP_PATH_ENCODERS = tuple(f"efficientnet-b{i}" for i in range(8))


def set_encoder_drop_path(encoder: nn.Module, name: str, rate: float | None) -> None:
    """Set the stochastic depth rate of smp encoder ``name``; None keeps the library's own (0.2).

    A ValueError for an encoder without stochastic depth, naming those that have it.
    """
    if rate is None:
        return
    if name not in DROP_PATH_ENCODERS:
        raise ValueError(
            f"encoder {name!r} has no drop path (stochastic depth); drop_path_rate needs one of: "
            f"{', '.join(DROP_PATH_ENCODERS)}"
        )
    if not hasattr(encoder, "_drop_connect_rate"):  # smp changed its EfficientNetEncoder
        raise RuntimeError(f"smp's {name!r} encoder no longer has _drop_connect_rate")
    # EfficientNetEncoder.forward reads it: drop_connect_prob = rate * i / len(blocks)
    encoder._drop_connect_rate = rate
