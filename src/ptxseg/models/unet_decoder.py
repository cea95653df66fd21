"""One hand-written U-Net decoder over an smp encoder, for the variants smp's own Unet cannot express.

smp's Unet decoder has only conv-BN-ReLU blocks and channel/spatial (scSE) attention. The
attention U-Net needs additive attention gates on the skips (Oktay et al. 2018), and the Kaggle
seed baseline's UEfficientNet uses residual blocks with LeakyReLU *before* BatchNorm. Both are
options of this one decoder (gates on/off, standard/residual blocks, activation, order), so the
variants are configurations, not classes. The layout mirrors smp's Unet: five blocks, each
upsampling (nearest) to the next encoder resolution and concatenating that skip; the last block
reaches the input resolution with no skip; a 3x3 convolution gives the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ptxseg.models.heads import image_head
from ptxseg.models.layers import check_rate, head_dropout

BLOCKS = ("standard", "residual")
ACTIVATIONS = ("relu", "leaky_relu", "silu")
LEAKY_SLOPE = 0.1  # the seed baseline's LeakyReLU(alpha=0.1)


def activation_layer(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    if name == "silu":  # EfficientNet's activation (swish)
        return nn.SiLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


class ConvUnit(nn.Sequential):
    """conv3x3 + BatchNorm + activation, in either order of the last two."""

    def __init__(self, in_channels: int, out_channels: int, activation: str, act_before_norm: bool):
        # A bias is redundant only when BatchNorm directly follows the convolution.
        conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=act_before_norm)
        norm, act = nn.BatchNorm2d(out_channels), activation_layer(activation)
        layers = (conv, act, norm) if act_before_norm else (conv, norm, act)
        super().__init__(*layers)


class AttentionGate(nn.Module):
    """Additive attention gate: skip * sigmoid(psi(ReLU(W_x skip + W_g g))).

    ``g`` is the coarser decoder feature; ``W_g g`` is computed at its resolution and resampled
    (bilinear) to the skip's, so the coefficients alpha keep the skip's full resolution.
    """

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int | None = None):
        super().__init__()
        inter = inter_channels or max(skip_channels // 2, 1)
        self.w_x = nn.Sequential(
            nn.Conv2d(skip_channels, inter, 1, bias=False), nn.BatchNorm2d(inter)
        )
        self.w_g = nn.Sequential(
            nn.Conv2d(gate_channels, inter, 1, bias=False), nn.BatchNorm2d(inter)
        )
        self.psi = nn.Sequential(nn.Conv2d(inter, 1, 1, bias=False), nn.BatchNorm2d(1))

    def coefficients(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """alpha in (0, 1), shape (B, 1, H_skip, W_skip)."""
        phi = F.interpolate(self.w_g(g), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(self.psi(F.relu(self.w_x(skip) + phi)))

    def forward(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return skip * self.coefficients(skip, g)


class IdentityGate(nn.Module):
    """A gate that passes the skip unchanged (for ablations: swap it in for an AttentionGate)."""

    def forward(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return skip


class DecoderBlock(nn.Module):
    """[gate the skip] -> upsample -> concatenate -> two ConvUnits [+ identity/1x1 shortcut]."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        block: str,
        attention: bool,
        activation: str,
        act_before_norm: bool,
    ):
        super().__init__()
        if block not in BLOCKS:
            raise ValueError(f"unknown decoder block {block!r}; valid: {', '.join(BLOCKS)}")
        joined = in_channels + skip_channels
        self.gate = (
            AttentionGate(skip_channels, in_channels) if attention and skip_channels else None
        )
        self.conv1 = ConvUnit(joined, out_channels, activation, act_before_norm)
        self.conv2 = ConvUnit(out_channels, out_channels, activation, act_before_norm)
        self.shortcut: nn.Module | None = None
        if block == "residual":
            self.shortcut = (
                nn.Identity()
                if joined == out_channels
                else nn.Sequential(
                    nn.Conv2d(joined, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
                )
            )

    def forward(
        self, x: torch.Tensor, size: Sequence[int], skip: torch.Tensor | None = None
    ) -> torch.Tensor:
        if skip is not None and self.gate is not None:
            skip = self.gate(skip, x)  # x, before upsampling, is the coarser gating signal
        x = F.interpolate(x, size=tuple(size), mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        y = self.conv2(self.conv1(x))
        return y if self.shortcut is None else y + self.shortcut(x)


class UNetDecoder(nn.Module):
    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        block: str = "standard",
        attention: bool = False,
        activation: str = "relu",
        act_before_norm: bool = False,
    ):
        super().__init__()
        # encoder_channels[0] is the input itself (smp convention), never used as a skip.
        deep_first = list(encoder_channels[1:])[::-1]
        if len(decoder_channels) != len(deep_first):
            raise ValueError(
                f"decoder_channels needs {len(deep_first)} entries (one per encoder stage), "
                f"got {tuple(decoder_channels)}"
            )
        in_channels = [deep_first[0], *decoder_channels[:-1]]
        skip_channels = [*deep_first[1:], 0]
        self.blocks = nn.ModuleList(
            DecoderBlock(i, s, o, block, attention, activation, act_before_norm)
            for i, s, o in zip(in_channels, skip_channels, decoder_channels, strict=True)
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        sizes = [f.shape[-2:] for f in features][::-1]  # deepest first, input size last
        deep_first = list(features[1:])[::-1]
        x, skips = deep_first[0], deep_first[1:]
        for i, block in enumerate(self.blocks):
            x = block(x, sizes[i + 1], skips[i] if i < len(skips) else None)
        return x


class EncoderUNet(nn.Module):
    """smp encoder + UNetDecoder + [dropout] + 3x3 logits convolution; output at input resolution.

    ``dropout_rate``: channel dropout (`layers.head_dropout`) on the decoder's output, before the
    head; None or 0: none. Parameter-free, so the state-dict keys are the same either way.

    ``classification_head``: also an image-level logit from the encoder's deepest feature map
    (`heads.image_head`, smp's auxiliary head, named ``classification_head`` as in smp's models;
    dropout ``dropout_rate``); forward then returns ``(mask_logits, image_logits (B, 1))``.
    False adds no module, so the keys and outputs are the plain model's.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        block: str = "standard",
        attention: bool = False,
        activation: str = "relu",
        act_before_norm: bool = False,
        dropout_rate: float | None = None,
        classification_head: bool = False,
    ):
        super().__init__()
        dropout_rate = check_rate("dropout_rate", dropout_rate)
        self.encoder = encoder  # named as in smp.Unet, so ImageNet files load the same way
        self.decoder = UNetDecoder(
            encoder.out_channels, decoder_channels, block, attention, activation, act_before_norm
        )
        self.dropout = head_dropout(dropout_rate)
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)
        self.output_stride = getattr(encoder, "output_stride", 32)
        # built last, so the other layers draw the same initial weights as without it
        self.classification_head: nn.Module | None = (
            image_head(encoder.out_channels[-1], dropout_rate) if classification_head else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        if h % self.output_stride or w % self.output_stride:
            # RuntimeError, as smp's own models raise for the same mistake
            raise RuntimeError(
                f"input height {h} and width {w} must be multiples of {self.output_stride}"
            )
        features = self.encoder(x)
        masks = self.head(self.dropout(self.decoder(features)))
        if self.classification_head is None:
            return masks
        return masks, self.classification_head(features[-1])
