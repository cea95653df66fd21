"""The registry of architectures: a name maps to a builder; a new architecture is one entry below.

Variants are options of an entry (``decoder_block="residual"``, ``encoder="efficientnet-b4"``),
passed through `build_model` to the builder, never subclasses. Every model that `build_model`
returns takes a grey (B, 1, H, W) batch (see `GreyInput`) and returns logits.

Two options every entry accepts, the recipe's regularisation (`REGULARISATION`): ``dropout_rate``
(dropout before the head; every builder takes it) and ``drop_path_rate`` (stochastic depth; only
the builders that can apply it take it, `drop_path_models`, and `build_model` refuses a rate for
the others). None, their default, builds the model exactly as without them.

Every segmenter also takes ``classification_head`` (False by default: the plain model, same
state dict keys and outputs): True adds one image-level logit from the encoder's deepest features
(smp's auxiliary head on every U-Net, its dropout ``dropout_rate``), and the model returns
``(mask_logits, image_logits (B, 1))``, split by `ptxseg.models.outputs.split_logits`. The
encoder of a built model, for freezing it, is `ptxseg.models.parts.encoder_of`.
"""

from __future__ import annotations

import difflib
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ptxseg.models import densenet, efficientnet, inceptionresnetv2, unet, xception
from ptxseg.models.encoders import DROP_PATH_ENCODERS, ENCODER_IMAGENET
from ptxseg.models.grey import GreyInput
from ptxseg.models.scaled_unet import model as scaled_unet
from ptxseg.models.weights import (
    ImagenetWeights,
    WeightsNotFoundError,
    find_imagenet_file,
    load_checkpoint_weights,
    load_imagenet_weights,
)

KINDS = ("classifier", "segmenter")
# Options of every entry, with their defaults (None: the architecture as it is).
REGULARISATION: Mapping[str, Any] = MappingProxyType({"drop_path_rate": None, "dropout_rate": None})


class UnknownModelError(ValueError):
    """A model name not in the registry; the message lists the valid names."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # "classifier": (B, num_classes); "segmenter": (B, num_classes, H, W), or with
    # classification_head=True the tuple (that, (B, 1)); see models.outputs
    kind: str
    builder: Callable[..., nn.Module]  # builder(num_classes, **options) -> 3-channel network
    min_size: int  # smallest square input side that works (batch 1, eval mode)
    size_multiple: int  # input sides must be multiples of this (32 for U-Nets, 1 for classifiers)
    imagenet: ImagenetWeights | None  # the ImageNet file with the default options
    # Where options change the ImageNet file (attention_unet's encoder): options -> file or None.
    imagenet_for: Callable[[Mapping[str, Any]], ImagenetWeights | None] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def builder_options(self) -> dict[str, Any]:
        """The options the builder itself accepts, with their defaults."""
        params = list(inspect.signature(self.builder).parameters.values())[1:]  # after num_classes
        return {p.name: p.default for p in params}

    @property
    def options(self) -> dict[str, Any]:
        """The options `build_model` accepts for this entry, with their defaults."""
        return {**self.builder_options, **REGULARISATION}

    @property
    def drop_path(self) -> bool:
        """Whether the builder applies ``drop_path_rate`` (stochastic depth)."""
        return "drop_path_rate" in self.builder_options

    def has_drop_path(self, options: Mapping[str, Any] | None = None) -> bool:
        """Whether this entry built with ``options`` applies a drop path rate: its builder takes
        one and, where it has an ``encoder`` option, that encoder has stochastic depth."""
        if not self.drop_path:
            return False
        encoder = {**self.builder_options, **(options or {})}.get("encoder")
        return encoder is None or encoder in DROP_PATH_ENCODERS

    def has_activation(self, options: Mapping[str, Any] | None = None) -> bool:
        """Whether this entry built with ``options`` lets its activation be chosen: its builder
        takes ``activation`` and, where it has a ``decoder_block`` option, not smp's decoder
        (conv-BN-ReLU only)."""
        if "activation" not in self.builder_options:
            return False
        return {**self.builder_options, **(options or {})}.get("decoder_block") != "smp"

    def imagenet_weights(self, options: Mapping[str, Any] | None = None) -> ImagenetWeights | None:
        if self.imagenet_for is not None:
            return self.imagenet_for(options or {})
        return self.imagenet

    def check_options(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            accepted = ", ".join(self.options) or "none"
            raise ValueError(
                f"model {self.name!r} does not accept option(s) {', '.join(unknown)}; "
                f"it accepts: {accepted}"
            )
        if options.get("drop_path_rate") is not None and not self.drop_path:
            raise ValueError(
                f"model {self.name!r} has no drop path (stochastic depth), so it cannot take "
                f"drop_path_rate={options['drop_path_rate']!r}; the models that can: "
                f"{', '.join(drop_path_models())}"
            )

    def builder_kwargs(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` less the regularisation keys the builder does not take (None by now)."""
        return {k: v for k, v in options.items() if k in self.builder_options}


_ENTRIES = (
    # classifiers: one linear head of num_classes logits after adaptive average pooling
    ModelSpec(
        name="inceptionresnetv2",
        kind="classifier",
        builder=inceptionresnetv2.build_inceptionresnetv2,
        min_size=inceptionresnetv2.MIN_SIZE,
        size_multiple=1,
        imagenet=inceptionresnetv2.IMAGENET,
    ),
    ModelSpec(
        name="xception",
        kind="classifier",
        builder=xception.build_xception,
        min_size=xception.MIN_SIZE,
        size_multiple=1,
        imagenet=xception.IMAGENET,
    ),
    ModelSpec(
        name="densenet169",
        kind="classifier",
        builder=densenet.build_densenet169,
        min_size=densenet.MIN_SIZE,
        size_multiple=1,
        imagenet=densenet.IMAGENET,
    ),
    ModelSpec(
        name="efficientnet_b4",
        kind="classifier",
        builder=efficientnet.build_efficientnet_b4,
        min_size=efficientnet.MIN_SIZE,
        size_multiple=1,
        imagenet=efficientnet.IMAGENET,
    ),
    # segmenters: logits at input resolution; input sides multiples of 32
    ModelSpec(
        name="unet_resnet34",
        kind="segmenter",
        builder=unet.build_unet_resnet34,
        min_size=unet.MIN_SIZE,
        size_multiple=unet.SIZE_MULTIPLE,
        imagenet=ENCODER_IMAGENET["resnet34"],
    ),
    ModelSpec(
        name="unet_efficientnet_b4",
        kind="segmenter",
        builder=unet.build_unet_efficientnet_b4,
        min_size=unet.MIN_SIZE,
        size_multiple=unet.SIZE_MULTIPLE,
        imagenet=ENCODER_IMAGENET["efficientnet-b4"],
    ),
    ModelSpec(
        name="attention_unet",
        kind="segmenter",
        builder=unet.build_attention_unet,
        min_size=unet.MIN_SIZE,
        size_multiple=unet.SIZE_MULTIPLE,
        imagenet=ENCODER_IMAGENET["resnet34"],  # the default encoder's; see imagenet_for
        imagenet_for=unet.attention_unet_imagenet,
    ),
    # compound-scaled U-Nets (scaled_unet/): free multipliers, and B1/B2 from a searched (alpha,
    # beta); trained from scratch, their input side comes from scaled_unet.compound.compound
    ModelSpec(
        name="scaled_unet",
        kind="segmenter",
        builder=scaled_unet.build_scaled_unet,
        min_size=scaled_unet.MIN_SIZE,
        size_multiple=scaled_unet.SIZE_MULTIPLE,
        imagenet=None,
    ),
    ModelSpec(
        name="scaled_unet_b1",
        kind="segmenter",
        builder=scaled_unet.build_scaled_unet_b1,
        min_size=scaled_unet.MIN_SIZE,
        size_multiple=scaled_unet.SIZE_MULTIPLE,
        imagenet=None,
    ),
    ModelSpec(
        name="scaled_unet_b2",
        kind="segmenter",
        builder=scaled_unet.build_scaled_unet_b2,
        min_size=scaled_unet.MIN_SIZE,
        size_multiple=scaled_unet.SIZE_MULTIPLE,
        imagenet=None,
    ),
)

MODELS: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in _ENTRIES})


def model_names(kind: str | None = None) -> list[str]:
    """Registered names, sorted; only those of ``kind`` when given."""
    return sorted(n for n, s in MODELS.items() if kind is None or s.kind == kind)


def drop_path_models() -> list[str]:
    """Registered names whose builder applies ``drop_path_rate``, sorted."""
    return sorted(n for n, s in MODELS.items() if s.drop_path)


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}; valid: {', '.join(model_names())}{hint}"
        ) from None


def imagenet_weight_file(
    weights: ImagenetWeights | str, weights_dir: str | os.PathLike | None = None, model: str = ""
) -> Path:
    """The path of the ImageNet file in the search folders; `WeightsNotFoundError` when absent.

    ``weights`` is an `ImagenetWeights` or a registered model name (its default options). Only
    looks at the file system (`weights.find_imagenet_file`): no download, no retry.
    """
    if isinstance(weights, str):
        model, found = weights, get_spec(weights).imagenet_weights()
        if found is None:
            raise ValueError(f"no ImageNet weight file is known for model {model!r}")
        weights = found
    return find_imagenet_file(weights, weights_dir, model=model)


def build_model(
    name: str,
    num_classes: int = 1,
    weights: str | os.PathLike | None = "none",
    weights_dir: str | os.PathLike | None = None,
    **options: Any,
) -> nn.Module:
    """Build ``name`` behind the grey-input wrapper, with ``weights`` "none", "imagenet" or a path.

    Weight files are located before anything is built, so a missing one fails at once.
    """
    spec = get_spec(name)
    spec.check_options(options)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    weights = "none" if weights is None else weights
    imagenet, imagenet_path, checkpoint = None, None, None
    if weights == "imagenet":
        imagenet = spec.imagenet_weights(options)
        if imagenet is None:
            raise ValueError(f"no ImageNet weight file is known for model {name!r} with {options}")
        imagenet_path = find_imagenet_file(imagenet, weights_dir, model=name)
    elif weights != "none":
        checkpoint = Path(weights)
        if not checkpoint.is_file():
            raise WeightsNotFoundError(
                f"checkpoint {str(checkpoint)!r} for model {name!r} not found; weights must be "
                f"'none', 'imagenet' or the path of a .pt/.pth checkpoint"
            )
    net = spec.builder(num_classes, **spec.builder_kwargs(options))
    model = GreyInput(net, name=name, kind=spec.kind, size_multiple=spec.size_multiple)
    if imagenet is not None and imagenet_path is not None:
        load_imagenet_weights(model.net, imagenet, imagenet_path)
    elif checkpoint is not None:
        load_checkpoint_weights(model, checkpoint)
    return model


def build_shell(name: str, num_classes: int = 1, **options: Any) -> nn.Module:
    """``name`` built on torch's meta device: no memory, no initialisation, tensors to be
    assigned (`weights.fit_state`, `weights.assign_state`). Built for real where the builder
    computes a buffer outside the state dict, which no checkpoint can give.

    `build_model` with a checkpoint's path builds the model, initialises every weight at random,
    then copies the file's tensors over them (and lets a head of another shape keep its fresh
    one, to seed a model from another task). A shell takes a checkpoint's tensors themselves
    instead: a tenth of the time, and no second copy of the weights."""
    spec = get_spec(name)
    spec.check_options(options)
    kwargs = spec.builder_kwargs(options)
    with torch.device("meta"):
        model = GreyInput(
            spec.builder(num_classes, **kwargs),
            name=name,
            kind=spec.kind,
            size_multiple=spec.size_multiple,
        )
    held = set(model.state_dict())
    outside = [n for n, _ in (*model.named_parameters(), *model.named_buffers()) if n not in held]
    if outside:
        model = GreyInput(
            spec.builder(num_classes, **kwargs),
            name=name,
            kind=spec.kind,
            size_multiple=spec.size_multiple,
        )
    return model
