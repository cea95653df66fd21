"""Batched prediction with test-time augmentation, streamed so memory stays flat in the image count.

TTA is flips times scales (``train.tta``: flip names and numbers): every flip of the batch at every
scale of its side (rounded to the model's size multiple), each prediction flipped and resized back
to the input size before the average. The scale TTA of SIIM-ACR's 6th-7th places (768/1024 from a
1024 model) is this with scales 0.75 and 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from ptxseg.data.datasets import worker_init
from ptxseg.models.outputs import split_logits
from ptxseg.runtime.precision import autocast

TTA_MODES = ("none", "hflip", "vflip")


class Predicted(NamedTuple):
    """One batch of predictions: dataset indices, probabilities (classifier (B, K), segmenter maps
    (B, H, W)) and, for a segmenter with a classification head, its image probabilities (B,)."""

    indices: np.ndarray
    probabilities: np.ndarray
    head: np.ndarray | None = None


def tta_passes(tta: Sequence[str | float]) -> list[tuple[str, float]]:
    """(flip, scale) of every TTA pass: the listed flips times the listed scales (1.0 if none)."""
    flips = [t for t in tta if isinstance(t, str)]
    scales = [float(t) for t in tta if not isinstance(t, str)]
    unknown = sorted(set(flips) - set(TTA_MODES))
    bad_scales = [s for s in scales if not 0 < s <= 4]
    if unknown or bad_scales or not tta:
        raise ValueError(
            f"train.tta: unknown TTA mode(s) {unknown or bad_scales or 'none given'}; valid: "
            f"{', '.join(TTA_MODES)} and scales in (0, 4]"
        )
    return [(flip, scale) for scale in (scales or [1.0]) for flip in (flips or ["none"])]


def scaled_side(side: int, scale: float, multiple: int) -> int:
    """``side`` times ``scale``, rounded to the nearest multiple of ``multiple`` (at least one)."""
    return max(multiple, math.floor(side * scale / multiple + 0.5) * multiple)


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
def tta_predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    passes: list[tuple[str, float]],
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch's probabilities averaged over the TTA ``passes`` (`tta_passes`): classifier
    (B, K), segmenter maps (B, H, W) flipped and resized back; the head's (B,) or None."""
    multiple = int(getattr(model, "size_multiple", 1))
    size = tuple(images.shape[-2:])
    total, head_total = None, None
    for flip, scale in passes:
        side = tuple(scaled_side(s, scale, multiple) for s in size)
        inputs = _resized(_flip(images, flip), side)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits, head = split_logits(model(inputs))
        probabilities = torch.sigmoid(logits.float())
        if probabilities.ndim == 4:
            probabilities = _flip(_resized(probabilities, size), flip)[:, 0]
        total = probabilities if total is None else total + probabilities
        if head is not None:
            p = torch.sigmoid(head.float())[:, 0]
            head_total = p if head_total is None else head_total + p
    return total / len(passes), None if head_total is None else head_total / len(passes)


def quantise_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities stored in a byte: a quarter of the memory of float32, resolution 1/255."""
    return np.rint(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)
