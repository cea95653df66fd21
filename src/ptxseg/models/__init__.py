"""Model registry: classifiers and U-Net segmenters for grey chest radiographs.

``build_model(name, num_classes, weights=...)`` returns a network taking (B, 1, H, W) and giving
logits. Architecture libraries (timm, smp, pretrainedmodels) are imported only when a model is
built, and nothing here touches the network.

The names below load on first use (PEP 562): the Snakefile imports ``ptxseg.models.catalog`` at
every DAG build, and importing the registry there would cost a torch import (seconds) per run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "MODELS": "registry",
    "ModelSpec": "registry",
    "UnknownModelError": "registry",
    "build_model": "registry",
    "build_shell": "registry",
    "get_spec": "registry",
    "model_names": "registry",
    "drop_path_models": "registry",
    "set_batchnorm_momentum": "layers",
    "CheckpointError": "weights",
    "ImagenetWeights": "weights",
    "WeightsNotFoundError": "weights",
    "imagenet_weight_file": "registry",
    "load_checkpoint_weights": "weights",
    "encoder_of": "parts",
    "freeze": "parts",
}

__all__ = [
    "MODELS",
    "CheckpointError",
    "ImagenetWeights",
    "ModelSpec",
    "UnknownModelError",
    "WeightsNotFoundError",
    "build_model",
    "build_shell",
    "drop_path_models",
    "encoder_of",
    "freeze",
    "get_spec",
    "imagenet_weight_file",
    "load_checkpoint_weights",
    "model_names",
    "set_batchnorm_momentum",
]

if TYPE_CHECKING:
    from ptxseg.models.layers import set_batchnorm_momentum
    from ptxseg.models.parts import encoder_of, freeze
    from ptxseg.models.registry import (
        MODELS,
        ModelSpec,
        UnknownModelError,
        build_model,
        build_shell,
        drop_path_models,
        get_spec,
        imagenet_weight_file,
        model_names,
    )
    from ptxseg.models.weights import (
        CheckpointError,
        ImagenetWeights,
        WeightsNotFoundError,
        load_checkpoint_weights,
    )


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ptxseg.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ptxseg.models.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip this function
    return value
