"""A U-Net family scaled by EfficientNet's compound rule (Tan & Le 2019): B0 and its scaled-up kin.

Three multipliers set a member: depth ``d`` (residual blocks per stage, ``ceil(base * d)``),
width ``w`` (channels per stage, ``round_filters(base * w)``: the nearest multiple of 8, never
below 8 or more than 10% under) and resolution (the input side the caller trains on,
`compound.scaled_resolution`). The compound members are ``d = alpha**phi`` and
``w = beta**phi``: `build_scaled_unet_b1` and `build_scaled_unet_b2`.

Layout (output stride 32, so input sides must be multiples of 32, as for the other U-Nets):

- stem: 3x3 convolution, stride 2 (as EfficientNet's and ResNet's stems): no stage works at
  full resolution, where activations would cost the most memory for the least context;
- encoder: five stages at strides 2, 4, 8, 16, 32; each stage after the first opens with a
  strided 3x3 conv-BN-ReLU that widens the channels, then repeats identical residual blocks
  (conv3x3-BN-ReLU-conv3x3-BN + identity, ReLU; the last BatchNorm starts at zero, so every
  block starts as the identity and a deeper member is not harder to train);
- decoder, mirroring the encoder: per stage, upsample (nearest) to the skip's size, concatenate
  the skip, a 1x1 conv-BN-ReLU back to the stage's width, then as many residual blocks as the
  encoder stage has;
- head: 1x1 convolution to ``num_classes`` at stride 2, upsampled bilinearly to the input size;
- with ``classification_head=True``, also one image-level logit from the deepest encoder stage
  (smp's auxiliary head, `heads.image_head`, as on the other U-Nets): forward then returns
  ``(mask_logits, image_logits (B, 1))``. The encoder (stem and stages) is `encoder_part`.

Options from EfficientNet: ``activation="silu"`` (swish) instead of ReLU everywhere;
``drop_path_rate`` (stochastic depth on every residual block's branch, see `ScaledUNet`) and
``dropout_rate`` (channel dropout before the head). Both are parameter-free: the state-dict keys
do not change, and with None (the default) the network is exactly the plain one.

B0's base (`compound.BASE_WIDTHS`, `compound.BASE_DEPTHS`): widths (16, 32, 64, 128, 256) and
depths (1, 2, 2, 6, 5), EfficientNet-B0's stage repeats summed by output stride. Channels double
as the side halves, so a block costs the same FLOPs in every stage and the FLOPs are spread by
depth; most blocks are where the activations are small (strides 16 and 32) and where a block adds
the context a pneumothorax, a thin rim along the chest wall, needs to be told from skin folds.
Plain residual blocks rather than MBConv: depthwise convolutions are slow on CPU for their FLOPs,
and the pipeline must train on a laptop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ptxseg.models.heads import image_head
from ptxseg.models.layers import check_rate, head_dropout, linear_drop_path_rates
from ptxseg.models.scaled_unet.compound import (
    ALPHA,
    BASE_DEPTHS,
    BASE_WIDTHS,
    BETA,
    compound_multipliers,
    scaled_depths,
    scaled_widths,
)

STEM_STRIDE = 2
OUTPUT_STRIDE = STEM_STRIDE * 2 ** (len(BASE_WIDTHS) - 1)  # 32
SIZE_MULTIPLE = OUTPUT_STRIDE
MIN_SIZE = OUTPUT_STRIDE  # one pixel at the deepest stage
ACTIVATIONS = ("relu", "silu")


def activation_layer(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "silu":
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, activation: str = "relu"
) -> nn.Sequential:
    """conv-BN-activation (ReLU unless ``activation`` says otherwise)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        activation_layer(activation),
    )


class ResidualBlock(nn.Module):
    """ResNet's basic block at constant width: act(x + drop_path(bn(conv(act(bn(conv(x))))))).

    ``drop_path_rate`` > 0: in training the residual branch of a sample is dropped (the block is
    the identity for it) with that probability, and kept branches are scaled by 1 / (1 - rate)
    (timm's DropPath); in eval the block is the plain one.
    """

    def __init__(self, channels: int, activation: str = "relu", drop_path_rate: float = 0.0):
        super().__init__()
        self.conv1 = conv_bn_relu(channels, channels, 3, activation=activation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn2.weight)  # the block starts as the identity (Goyal et al. 2017)
        self.act = activation_layer(activation)
        self.drop_path: nn.Module = nn.Identity()
        if drop_path_rate > 0:
            from timm.layers import DropPath

            self.drop_path = DropPath(drop_path_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.drop_path(self.bn2(self.conv2(self.conv1(x)))))


class DecoderStage(nn.Module):
    """upsample -> concatenate the skip -> 1x1 conv-BN-act to the skip's width -> blocks."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        depth: int,
        activation: str = "relu",
        drop_path_rates: Sequence[float] | None = None,
    ):
        super().__init__()
        rates = [0.0] * depth if drop_path_rates is None else list(drop_path_rates)
        if len(rates) != depth:
            raise ValueError(f"need {depth} drop path rates, got {len(rates)}")
        self.fuse = conv_bn_relu(
            in_channels + skip_channels, skip_channels, 1, activation=activation
        )
        self.blocks = nn.Sequential(*(ResidualBlock(skip_channels, activation, r) for r in rates))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.blocks(self.fuse(torch.cat([x, skip], dim=1)))


class ScaledUNet(nn.Module):
    """The U-Net of explicit per-stage ``widths`` and ``depths`` (see the module docstring).

    ``drop_path_rate``: stochastic depth on the residual blocks, at a rate growing linearly with
    the block's index in the forward pass, encoder then decoder, ``rate * i / n`` over all ``n``
    blocks (`layers.linear_drop_path_rates`). EfficientNet's rule rather than a constant rate:
    the first blocks compute the low-level features that every later block and the skips reuse,
    so dropping them costs the most and regularises the least (Huang et al. 2016), and the same
    recipe value then means the same as in the EfficientNet encoders (timm, smp) of the other
    entries. ``dropout_rate``: channel dropout before the head convolution, and the dropout of the
    image-level head that ``classification_head`` adds (see the module docstring; False adds no
    module, so the keys and outputs are the plain model's).
    """

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = BASE_WIDTHS,
        depths: Sequence[int] = BASE_DEPTHS,
        in_channels: int = 3,
        activation: str = "relu",
        drop_path_rate: float | None = None,
        dropout_rate: float | None = None,
        classification_head: bool = False,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        drop_path_rate = check_rate("drop_path_rate", drop_path_rate) or 0.0
        dropout_rate = check_rate("dropout_rate", dropout_rate)
        widths, depths = tuple(int(c) for c in widths), tuple(int(n) for n in depths)
        if len(widths) != len(BASE_WIDTHS) or len(depths) != len(BASE_WIDTHS):
            raise ValueError(
                f"widths and depths need {len(BASE_WIDTHS)} stages each, got {widths}, {depths}"
            )
        if min(widths) < 1 or min(depths) < 1:
            raise ValueError(f"widths and depths must be positive, got {widths}, {depths}")
        self.widths, self.depths = widths, depths
        decoder_stages = list(reversed(range(len(widths) - 1)))
        rates = iter(
            linear_drop_path_rates(
                drop_path_rate, sum(depths) + sum(depths[s] for s in decoder_stages)
            )
        )
        act = activation
        self.stem = conv_bn_relu(in_channels, widths[0], 3, STEM_STRIDE, act)
        self.encoder = nn.ModuleList()
        for s, (channels, depth) in enumerate(zip(widths, depths, strict=True)):
            down = [conv_bn_relu(widths[s - 1], channels, 3, 2, act)] if s else []
            blocks = [ResidualBlock(channels, act, next(rates)) for _ in range(depth)]
            self.encoder.append(nn.Sequential(*down, *blocks))
        self.decoder = nn.ModuleList(
            DecoderStage(
                widths[s + 1], widths[s], depths[s], act, [next(rates) for _ in range(depths[s])]
            )
            for s in decoder_stages
        )
        self.dropout = head_dropout(dropout_rate)
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.head:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # built after the initialisation, so the other layers draw the same weights as without it
        self.classification_head: nn.Module | None = (
            image_head(widths[-1], dropout_rate) if classification_head else None
        )

    def encoder_part(self) -> nn.Module:
        """The encoder, stem and stages, as one module: a container made on each call and not a
        child of this model, so the state dict keys stay ``stem.*`` and ``encoder.*``."""
        return nn.ModuleDict({"stem": self.stem, "stages": self.encoder})

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        height, width = x.shape[-2:]
        if height % OUTPUT_STRIDE or width % OUTPUT_STRIDE:
            # RuntimeError, as smp's own models raise for the same mistake
            raise RuntimeError(
                f"input height {height} and width {width} must be multiples of {OUTPUT_STRIDE}"
            )
        x = self.stem(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()  # the deepest stage has no skip of its own
        image_logits = None if self.classification_head is None else self.classification_head(x)
        for stage in self.decoder:
            x = stage(x, skips.pop())
        logits = self.head(self.dropout(x))
        masks = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return masks if image_logits is None else (masks, image_logits)


def build_scaled_unet(
    num_classes: int,
    depth: float = 1.0,
    width: float = 1.0,
    activation: str = "relu",
    drop_path_rate: float | None = None,
    dropout_rate: float | None = None,
    classification_head: bool = False,
) -> nn.Module:
    """The scaled U-Net of free ``depth`` and ``width`` multipliers (1, 1: B0).

    A grid candidate (alpha, beta, gamma) at phi = 1 is ``depth=alpha, width=beta``, trained on
    ``compound.scaled_resolution(base_resolution, gamma)`` inputs. ``activation`` ("relu" or
    "silu"), ``drop_path_rate``, ``dropout_rate`` and ``classification_head``: see `ScaledUNet`.
    """
    return ScaledUNet(
        num_classes,
        scaled_widths(width),
        scaled_depths(depth),
        activation=activation,
        drop_path_rate=drop_path_rate,
        dropout_rate=dropout_rate,
        classification_head=classification_head,
    )


def _built_at_phi(phi: int):
    """The builder of B<phi>: depth alpha^phi, width beta^phi (train it on
    ``scaled_resolution(base, gamma, phi)`` inputs)."""

    def build(
        num_classes: int,
        alpha: float = ALPHA,
        beta: float = BETA,
        activation: str = "relu",
        drop_path_rate: float | None = None,
        dropout_rate: float | None = None,
        classification_head: bool = False,
    ) -> nn.Module:
        depth, width = compound_multipliers(alpha, beta, phi)
        return build_scaled_unet(
            num_classes, depth, width, activation, drop_path_rate, dropout_rate, classification_head
        )

    build.__name__ = build.__qualname__ = f"build_scaled_unet_b{phi}"
    build.__doc__ = f"B{phi}: depth alpha^{phi}, width beta^{phi} (inputs: scaled_resolution(base, gamma, {phi}))."
    return build


build_scaled_unet_b1 = _built_at_phi(1)
build_scaled_unet_b2 = _built_at_phi(2)
