"""PyTorch datasets over the repacked PNGs: grey images, masks or labels, augmented and normalised."""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from ptxseg.data.repack import resize_image, resize_mask
from ptxseg.data.transforms import scale_intensities


def _read(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FileNotFoundError(f"{path}: missing or unreadable image")
    return image


class RepackedImages(Dataset):
    """Images (and masks, or label vectors) of one split, in a fixed order.

    Items are dicts: ``image`` (1, H, W) float32, ``target`` ((1, H, W) mask or (K,) labels)
    and ``index`` (the position in this dataset, to map predictions back to image ids).
    """

    def __init__(
        self,
        image_ids: Sequence[str],
        images: Sequence[str | os.PathLike],
        *,
        mean: float,
        std: float,
        masks: Sequence[str | os.PathLike] | None = None,
        labels: np.ndarray | None = None,
        augment=None,
        resize: int | None = None,
    ) -> None:
        """``resize``: a side to resize images and masks to on reading (when a model's input size,
        e.g. a compound-scaled resolution, is not one of the repacked sizes)."""
        if masks is not None and labels is not None:
            raise ValueError("a dataset has masks or labels, not both")
        self.image_ids = list(image_ids)
        self.images = [str(p) for p in images]
        self.masks = [str(p) for p in masks] if masks is not None else None
        self.labels = (
            None
            if labels is None
            else np.asarray(labels, dtype=np.float32).reshape(len(self.images), -1)
        )
        self.mean, self.std = float(mean), float(std)
        self.augment = augment
        self.resize = resize

    def __len__(self) -> int:
        return len(self.images)

    def reseed(self, seed: int) -> None:
        """Seed the augmentation's own generators (albumentations ignores the global ones).

        albumentations 2's ``set_random_seed`` seeds every transform's generators with the same
        number, so transforms that draw alike move in lockstep (a flip at p=0.5 and an affine at
        p=0.5 always fired together); handing the pipeline's one pair of generators to every
        transform makes their draws follow each other instead, still reproducible from ``seed``.
        """
        if self.augment is not None:
            self.augment.set_random_seed(int(seed) % 2**32)
            if hasattr(self.augment, "set_random_state"):
                self.augment.set_random_state(self.augment.random_generator, self.augment.py_random)

    def _image(self, index: int) -> np.ndarray:
        image = _read(self.images[index])
        return image if self.resize is None else resize_image(image, self.resize)

    def _mask(self, index: int) -> np.ndarray:
        mask = _read(self.masks[index])
        return mask if self.resize is None else resize_mask(mask > 127, self.resize)

    def __getitem__(self, index: int) -> dict:
        image = self._image(index)
        mask = self._mask(index) if self.masks is not None else None
        if self.augment is not None:
            result = (
                self.augment(image=image, mask=mask)
                if mask is not None
                else self.augment(image=image)
            )
            image, mask = result["image"], result.get("mask")
        item = {
            "image": torch.from_numpy(scale_intensities(image, self.mean, self.std)[None]),
            "index": index,
        }
        if mask is not None:
            item["target"] = torch.from_numpy((mask > 127).astype(np.float32)[None])
        elif self.labels is not None:
            item["target"] = torch.from_numpy(self.labels[index])
        return item

    def truth_mask(self, index: int) -> np.ndarray:
        """The unaugmented mask of one image as a bool array (for scoring predictions)."""
        if self.masks is None:
            raise ValueError("this dataset has no masks")
        return self._mask(index) > 127


class Joined(ConcatDataset):
    """Training sets one after the other (the fold's SIIM images, then pseudo-labelled NIH
    images), reseeded together. Items keep the ``index`` of their own set; the loop reads only
    images and targets from training batches."""

    def reseed(self, seed: int) -> None:
        for part in self.datasets:
            part.reseed(seed)


def worker_init(worker_id: int) -> None:
    """DataLoader workers: seed augmentation from the per-worker seed torch derives from the loader."""
    info = torch.utils.data.get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(info.seed)
    elif info is not None and hasattr(getattr(info.dataset, "dataset", None), "reseed"):
        info.dataset.dataset.reseed(info.seed)
