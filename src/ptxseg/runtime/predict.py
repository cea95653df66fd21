"""Batched prediction with test-time augmentation, streamed so memory stays flat in the image count."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ptxseg.data.datasets import worker_init
from ptxseg.runtime.precision import autocast

TTA_MODES = ("none", "hflip", "vflip")


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
    tta: Sequence[str] = ("none",),
    num_workers: int = 0,
    amp: bool = False,
    channels_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (dataset indices, probabilities) per batch, averaged over the TTA modes.

    Classifier probabilities are (B, K); segmenter maps (B, H, W) for one class, flipped back.
    """
    unknown = set(tta) - set(TTA_MODES)
    if unknown or not tta:
        raise ValueError(f"unknown TTA mode(s) {sorted(unknown)}; valid: {', '.join(TTA_MODES)}")
    model.eval()
    for batch in ordered_batches(dataset, batch_size, num_workers, device):
        images = batch["image"].to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        total = None
        for mode in tta:
            with autocast(device, amp):
                logits = model(_flip(images, mode))
            probabilities = torch.sigmoid(logits.float())
            if probabilities.ndim == 4:
                probabilities = _flip(probabilities, mode)[:, 0]
            total = probabilities if total is None else total + probabilities
        yield batch["index"].numpy(), (total / len(tta)).cpu().numpy()


def quantise_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities stored in a byte: a quarter of the memory of float32, resolution 1/255."""
    return np.rint(np.clip(probabilities, 0.0, 1.0) * 255.0).astype(np.uint8)
