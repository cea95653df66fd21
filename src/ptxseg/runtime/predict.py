"""Batched prediction with test-time augmentation, streamed so memory stays flat in the image count.

TTA is flips times scales (``train.tta``: flip names and numbers): every flip of the batch at every
scale of its side (rounded to the model's size multiple), each prediction flipped and resized back
to the input size before the average. The scale TTA of SIIM-ACR's 6th-7th places (768/1024 from a
1024 model) is this with scales 0.75 and 1.0.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ptxseg.data.datasets import worker_init
from ptxseg.models.outputs import split_logits
from ptxseg.runtime.precision import autocast
from ptxseg.runtime.tta import TTA_MODES, passes_for, scaled_side, trained_scales, tta_passes
from ptxseg.scoring.cascade import quantise_probabilities

# Defined in torch-free modules (the ONNX prediction path reads them); importable from here too.
__all__ = [
    "TTA_MODES",
    "Predicted",
    "mark_trained",
    "model_passes",
    "ordered_batches",
    "predict_batches",
    "quantise_probabilities",
    "scaled_side",
    "tta_outputs",
    "tta_passes",
    "tta_predict",
]


class Predicted(NamedTuple):
    """One batch of predictions: dataset indices, probabilities (classifier (B, K), segmenter maps
    (B, H, W)) and, for a segmenter with a classification head, its image probabilities (B,)."""

    indices: np.ndarray
    probabilities: np.ndarray
    head: np.ndarray | None = None


def _resized(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(tensor.shape[-2:]) == size:
        return tensor
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def _flip(tensor: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "hflip":
        return tensor.flip(-1)
    if mode == "vflip":
        return tensor.flip(-2)
    return tensor


def ordered_batches(
    dataset: Dataset, batch_size: int, num_workers: int, device: torch.device
) -> DataLoader:
    """The dataset's batches in order, as every evaluation and prediction reads them."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        worker_init_fn=worker_init,
        pin_memory=device.type == "cuda",
    )


def mark_trained(model: torch.nn.Module, meta: dict) -> torch.nn.Module:
    """Record on ``model`` the scales it was trained at (its meta's size and stages), which
    decide its TTA passes (`model_passes`)."""
    model.trained_scales = trained_scales(meta)
    return model


def model_passes(
    model: torch.nn.Module, passes: Sequence[tuple[str, float]]
) -> list[tuple[str, float]]:
    """The TTA passes ``model`` takes of ``passes`` (`ptxseg.runtime.tta.passes_for` with the
    scales `mark_trained` recorded; all of them for a model that records none)."""
    return passes_for(passes, getattr(model, "trained_scales", None))


@torch.no_grad()
def predict_batches(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int,
    tta: Sequence[str | float] = ("none",),
    num_workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
) -> Iterator[Predicted]:
    """Yield each batch's `Predicted`, averaged over the TTA passes (flips times scales).

    Classifier probabilities are (B, K); segmenter maps (B, H, W) for one class, flipped and
    resized back to the input's size; a segmenter head's image probabilities (B,).
    """
    passes = tta_passes(tta)
    model.eval()
    for batch in ordered_batches(dataset, batch_size, num_workers, device):
        images = batch["image"].to(device, non_blocking=True)
        probabilities, head = tta_predict(model, images, passes, device, amp, channels_last)
        yield Predicted(
            batch["index"].numpy(),
            probabilities.cpu().numpy(),
            None if head is None else head.cpu().numpy(),
        )


@torch.no_grad()
def tta_outputs(
    model: torch.nn.Module,
    images: torch.Tensor,
    passes: list[tuple[str, float]],
    device: torch.device | None = None,
    amp: bool = False,
    channels_last: bool = False,
    stack_flips: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Each TTA pass the model takes (`model_passes`), its probabilities (classifier (B, K), segmenter maps (B, H, W) flipped and
    resized back to the input's size) and the head's (B,) or None, pass by pass.

    ``stack_flips``: the flips of one scale go through the model as one batch (an exported graph
    then holds the model once per scale, not once per pass); equal to the passes one by one up
    to float rounding.
    """
    passes = model_passes(model, passes)
    multiple = int(getattr(model, "size_multiple", 1))
    size = tuple(images.shape[-2:])
    for scale, group in itertools.groupby(passes, key=lambda p: p[1]):
        flips = [flip for flip, _ in group]
        side = tuple(scaled_side(s, scale, multiple) for s in size)
        for chunk in [flips] if stack_flips else [[flip] for flip in flips]:
            inputs = _resized(torch.cat([_flip(images, flip) for flip in chunk]), side)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast(device or images.device, amp):
                logits, head = split_logits(model(inputs))
            probabilities = torch.sigmoid(logits.float())
            if probabilities.ndim == 4:
                probabilities = _resized(probabilities, size)
            heads = None if head is None else torch.sigmoid(head.float())[:, 0]
            for k, flip in enumerate(chunk):  # the chunk's flips are stacked on the batch axis
                part = probabilities.unflatten(0, (len(chunk), -1))[k]
                if part.ndim == 4:
                    part = _flip(part, flip)[:, 0]
                yield part, None if heads is None else heads.unflatten(0, (len(chunk), -1))[k]


@torch.no_grad()
def tta_predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    passes: list[tuple[str, float]],
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch's probabilities averaged over the TTA ``passes`` (`tta_passes`) the model takes
    (`model_passes`): classifier
    (B, K), segmenter maps (B, H, W) flipped and resized back; the head's (B,) or None."""
    total, head_total, count = None, None, len(model_passes(model, passes))
    for probabilities, head in tta_outputs(model, images, passes, device, amp, channels_last):
        total = probabilities if total is None else total + probabilities
        if head is not None:
            head_total = head if head_total is None else head_total + head
    return total / count, None if head_total is None else head_total / count
