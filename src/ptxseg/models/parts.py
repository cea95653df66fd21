"""The parts of a built model that training treats apart: its encoder, and freezing a part.

`encoder_of` finds the encoder of any segmenter `build_model` returns (through `GreyInput`'s
``.net``): smp's Unet and the hand-written `EncoderUNet` keep theirs as ``.encoder``; the scaled
U-Net's is its stem and stages (`ScaledUNet.encoder_part`). `freeze` stops a part from learning,
for the first epochs of a stage with ``freeze_encoder_epochs``.

Typical use, once per epoch (``model.train()`` puts every layer back in training mode, frozen
ones included, so `freeze` comes after it)::

    encoder = encoder_of(model)
    for epoch in range(epochs):
        model.train()
        freeze(encoder, epoch < freeze_encoder_epochs)
        ...
"""

from __future__ import annotations

from torch import nn

from ptxseg.models.grey import GreyInput


def _unwrapped(model: nn.Module) -> tuple[nn.Module, str]:
    """The architecture inside the grey-input wrapper (and torch.compile's), and a name for it."""
    name = ""
    while True:
        if isinstance(model, GreyInput):
            name = name or model.name
            model = model.net
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's wrapper
            model = model._orig_mod
        else:
            return model, name or type(model).__name__


def encoder_of(model: nn.Module) -> nn.Module:
    """The encoder of a built segmenter: the module whose parameters `freeze` should stop.

    smp's models and `EncoderUNet`: their ``.encoder``. `ScaledUNet`: `ScaledUNet.encoder_part`,
    a container of its stem and encoder stages made on each call; it is not a child of the model,
    so the model's state dict keys do not change, and its parameters are the model's own tensors.
    A model without an encoder (a classifier) is a ValueError naming the model.
    """
    net, name = _unwrapped(model)
    part = getattr(net, "encoder_part", None)
    encoder = part() if callable(part) else getattr(net, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise ValueError(
            f"model {name!r} ({type(net).__name__}) has no encoder: encoder_of applies to the "
            "segmenters (U-Nets), not to classifiers"
        )
    return encoder


def freeze(module: nn.Module, frozen: bool = True) -> None:
    """Freeze ``module`` (True) or let it learn again (False).

    Frozen: ``requires_grad`` False on its parameters (the optimizer skips them, as their
    gradient stays None) and every layer of it in eval mode, so its BatchNorm running statistics
    do not move and its dropout and drop path are off. ``frozen=False`` is the inverse:
    ``requires_grad`` True and training mode.

    ``model.train()`` sets every layer back to training mode, frozen or not: call `freeze` after
    ``model.train()`` at the start of each epoch, or the frozen BatchNorm statistics drift again.
    Call ``freeze(module, False)`` in training too (it puts the module in training mode).
    """
    frozen = bool(frozen)
    for parameter in module.parameters():
        parameter.requires_grad_(not frozen)
    module.train(not frozen)
