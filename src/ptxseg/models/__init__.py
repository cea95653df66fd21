"""Model registry: classifiers and U-Net segmenters for grey chest radiographs.

``build_model(name, num_classes, weights=...)`` returns a network taking (B, 1, H, W) and giving
logits. Architecture libraries (timm, smp, pretrainedmodels) are imported only when a model is
built, and nothing here touches the network.
"""

from ptxseg.models.registry import (
    MODELS,
    ModelSpec,
    UnknownModelError,
    build_model,
    get_spec,
    model_names,
)
from ptxseg.models.weights import (
    CheckpointError,
    ImagenetWeights,
    WeightsNotFoundError,
    imagenet_weight_file,
    load_checkpoint_weights,
)

__all__ = [
    "MODELS",
    "CheckpointError",
    "ImagenetWeights",
    "ModelSpec",
    "UnknownModelError",
    "WeightsNotFoundError",
    "build_model",
    "get_spec",
    "imagenet_weight_file",
    "load_checkpoint_weights",
    "model_names",
]
