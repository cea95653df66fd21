"""Augmentation pipelines, kept in the config in albumentations' own serialised form.

``albumentations.to_dict`` / ``from_dict`` is the library's format, so a pipeline built in Python
can be pasted into the config and vice versa; no home-made augmentation language.
"""

from __future__ import annotations

import os

os.environ.setdefault(
    "NO_ALBUMENTATIONS_UPDATE", "1"
)  # albumentations otherwise calls home at import

import albumentations as A

from ptxseg.data.intensity import scale_intensities  # torch-free; importable from here too

# Registers RandAugment with albumentations' deserialiser, so a config can name it like any other
# transform: {__class_fullname__: ptxseg.data.randaugment.RandAugment, n: 2, m: 9}.
from ptxseg.data.randaugment import RandAugment, with_full_probability

__all__ = ["DEFAULT_AUGMENT", "AugmentError", "RandAugment", "build_augment", "scale_intensities"]


class AugmentError(ValueError):
    """An augmentation spec albumentations cannot build; the message names the config key."""


def build_augment(spec: dict | None, where: str = "augment") -> A.Compose | None:
    """A Compose from its serialised dict (``{"transform": {...}}``), or None for no augmentation."""
    if not spec:
        return None
    try:
        spec = with_full_probability(spec if "transform" in spec else {"transform": spec})
        pipeline = A.from_dict(spec)
    except Exception as error:
        raise AugmentError(
            f"config key {where!r}: albumentations cannot build it ({error})"
        ) from error
    if not isinstance(pipeline, A.Compose):
        pipeline = A.Compose([pipeline])
    return pipeline


# A modest default for chest radiographs: small shifts, scales, rotations, flips and contrast.
DEFAULT_AUGMENT = A.to_dict(
    A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(
                scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=(-10, 10), p=0.5
            ),
            A.RandomBrightnessContrast(brightness_limit=0.1, contrast_limit=0.1, p=0.5),
        ]
    )
)
