"""The U-Net segmenters: smp's Unet where it suffices, the hand-written decoder where not.

``classification_head=True`` (every builder) adds one image-level logit, "the image has a
pneumothorax", from the encoder's deepest features: smp's auxiliary head on smp's Unet, the same
head class on the hand-written decoder (`heads.image_head`), its dropout the recipe's
``dropout_rate``. The model then returns ``(mask_logits, image_logits)`` in train and eval mode
(see `ptxseg.models.outputs`); False builds exactly the plain model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ptxseg.models.encoders import ENCODER_IMAGENET, build_encoder, set_encoder_drop_path
from ptxseg.models.heads import image_head_params
from ptxseg.models.layers import check_rate, with_input_dropout
from ptxseg.models.unet_decoder import EncoderUNet
from ptxseg.models.weights import ImagenetWeights

DECODER_CHANNELS = (256, 128, 64, 32, 16)
MIN_SIZE = 32  # one pixel at the deepest (stride 32) stage; sides must be multiples of 32
SIZE_MULTIPLE = 32

# Defaults of the hand-written decoder blocks: (activation, act_before_norm).
_BLOCK_DEFAULTS = {"standard": ("relu", False), "residual": ("leaky_relu", True)}


def _smp_unet(
    encoder: str,
    num_classes: int,
    decoder_channels: Sequence[int],
    dropout_rate: float | None = None,
    drop_path_rate: float | None = None,
    classification_head: bool = False,
) -> nn.Module:
    import segmentation_models_pytorch as smp

    dropout_rate = check_rate("dropout_rate", dropout_rate)
    drop_path_rate = check_rate("drop_path_rate", drop_path_rate)
    model = smp.Unet(
        encoder,
        encoder_weights=None,
        classes=num_classes,
        decoder_channels=tuple(decoder_channels),
        # smp returns (masks, labels) with the head; None builds exactly the plain Unet
        aux_params=image_head_params(dropout_rate) if classification_head else None,
    )
    set_encoder_drop_path(model.encoder, encoder, drop_path_rate)
    if dropout_rate:
        # SegmentationHead is Sequential(conv, upsampling, activation), with no dropout of its own
        model.segmentation_head[0] = with_input_dropout(model.segmentation_head[0], dropout_rate)
    return model


def build_unet_resnet34(
    num_classes: int,
    decoder_channels: Sequence[int] = DECODER_CHANNELS,
    dropout_rate: float | None = None,
    classification_head: bool = False,
) -> nn.Module:
    """UResNet: smp's Unet on a ResNet-34 encoder (torchvision's ResNet: no drop path)."""
    return _smp_unet(
        "resnet34",
        num_classes,
        decoder_channels,
        dropout_rate,
        classification_head=classification_head,
    )


def build_unet_efficientnet_b4(
    num_classes: int,
    decoder_channels: Sequence[int] = DECODER_CHANNELS,
    decoder_block: str = "smp",
    activation: str | None = None,
    act_before_norm: bool | None = None,
    dropout_rate: float | None = None,
    drop_path_rate: float | None = None,
    classification_head: bool = False,
) -> nn.Module:
    """UEfficientNet: a U-Net on smp's efficientnet-b4 encoder.

    ``decoder_block="smp"`` is smp's own Unet; ``"residual"`` is the Kaggle seed baseline's decoder
    (residual blocks, LeakyReLU before BatchNorm by default); ``"standard"`` the hand-written
    decoder with plain blocks. ``activation`` ("relu", "leaky_relu", "silu") and
    ``act_before_norm`` apply to the hand-written ones (smp's decoder is conv-BN-ReLU only).
    ``drop_path_rate``: the encoder's stochastic depth (None: the library's 0.2);
    ``dropout_rate``: channel dropout before the head convolution (None: none), and the dropout
    of the image-level head where ``classification_head`` adds it.
    """
    if decoder_block == "smp":
        if activation is not None or act_before_norm is not None:
            raise ValueError(
                "activation and act_before_norm apply to decoder_block 'residual' or 'standard', "
                "not to smp's Unet decoder"
            )
        return _smp_unet(
            "efficientnet-b4",
            num_classes,
            decoder_channels,
            dropout_rate,
            drop_path_rate,
            classification_head,
        )
    if decoder_block not in _BLOCK_DEFAULTS:
        valid = ", ".join(["smp", *_BLOCK_DEFAULTS])
        raise ValueError(f"unknown decoder_block {decoder_block!r}; valid: {valid}")
    default_activation, default_order = _BLOCK_DEFAULTS[decoder_block]
    return _encoder_unet(
        "efficientnet-b4",
        num_classes,
        decoder_channels,
        block=decoder_block,
        attention=False,
        activation=default_activation if activation is None else activation,
        act_before_norm=default_order if act_before_norm is None else act_before_norm,
        dropout_rate=dropout_rate,
        drop_path_rate=drop_path_rate,
        classification_head=classification_head,
    )


def build_attention_unet(
    num_classes: int,
    encoder: str = "resnet34",
    decoder_channels: Sequence[int] = DECODER_CHANNELS,
    decoder_block: str = "standard",
    activation: str = "relu",
    act_before_norm: bool = False,
    dropout_rate: float | None = None,
    drop_path_rate: float | None = None,
    classification_head: bool = False,
) -> nn.Module:
    """Attention U-Net (Oktay et al. 2018): additive attention gates on every skip connection.

    Over an smp encoder (any name smp knows), so it can start from ImageNet encoder weights.
    ``drop_path_rate`` needs an encoder with stochastic depth (``efficientnet-b*``).
    """
    return _encoder_unet(
        encoder,
        num_classes,
        decoder_channels,
        block=decoder_block,
        attention=True,
        activation=activation,
        act_before_norm=act_before_norm,
        dropout_rate=dropout_rate,
        drop_path_rate=drop_path_rate,
        classification_head=classification_head,
    )


def _encoder_unet(
    encoder_name: str,
    num_classes: int,
    decoder_channels: Sequence[int],
    drop_path_rate: float | None,
    **decoder: Any,
) -> nn.Module:
    drop_path_rate = check_rate("drop_path_rate", drop_path_rate)
    encoder = build_encoder(encoder_name)
    set_encoder_drop_path(encoder, encoder_name, drop_path_rate)
    return EncoderUNet(encoder, num_classes, tuple(decoder_channels), **decoder)


def attention_unet_imagenet(options: Mapping[str, Any]) -> ImagenetWeights | None:
    """The ImageNet file of the chosen encoder (None where no file is known for it)."""
    return ENCODER_IMAGENET.get(options.get("encoder", "resnet34"))
