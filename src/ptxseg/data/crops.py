"""Training on random square crops of the repacked image, biased towards the pneumothorax.

SIIM-ACR's 4th place trained on 512 crops of the 1024 image and predicted on the full image. The
config's ``crop: {size, positive_share}`` (``$defs.crop`` in the schema) asks for the same: each
training image is cropped to ``size`` x ``size`` before the augmentation; ``positive_share`` of the
crops of a positive image are placed to contain part of its region, the others (and every crop of
an empty image) fall uniformly anywhere. Prediction is unchanged: the whole image.

Everything is albumentations' own (version 2.0):

- ``A.CropNonEmptyMaskIfExists`` picks a pixel of the mask uniformly and places the crop around it
  uniformly (clipped to the image), so the crop always holds part of the region; on an empty mask it
  is a uniform crop.
- ``A.RandomCrop`` places the crop uniformly anywhere (every top-left corner equally likely).
- ``A.OneOf`` chooses between the two with weights their ``p`` normalised to sum 1 (share and
  1 - share). The shares 0 and 1 are built as the single crop, so no zero-weight child is ever
  drawn against.

Both crops move the image and its mask with the same window, so they stay aligned.

Seeding. ``Compose.set_random_seed`` in albumentations 2.0 gives every transform of a pipeline its
own generators *seeded with the same number*, so transforms drawing the same kind of number move in
lockstep after a reseed (two flips with p = 0.5 are then applied together on every image, and a
crop's corner is tied to the flip). The pipeline `with_crop` returns shares one pair of generators
(numpy, python) between all its transforms, seeded from the one seed: the draws are independent of
each other, and a seed still fixes them all (``RepackedImages.reseed``).
"""

from __future__ import annotations

import numbers
import os

os.environ.setdefault(
    "NO_ALBUMENTATIONS_UPDATE", "1"
)  # albumentations otherwise calls home at import

import albumentations as A

__all__ = ["CroppedAugment", "check_crop", "crop_transform", "plain", "with_crop"]

DEFAULT_POSITIVE_SHARE = 0.5  # the schema's default for crop.positive_share


def _size(size: object, where: str) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(
            f"config key {where + '.size'!r}: a crop side in pixels >= 1, got {size!r}"
        )
    return int(size)


def _share(share: object, where: str) -> float:
    if (
        isinstance(share, bool)
        or not isinstance(share, numbers.Real)
        or not 0.0 <= float(share) <= 1.0
    ):
        raise ValueError(
            f"config key {where + '.positive_share'!r}: a share in [0, 1], got {share!r}"
        )
    return float(share)


def crop_transform(
    size: int, positive_share: float = DEFAULT_POSITIVE_SHARE
) -> A.BasicTransform | A.BaseCompose:
    """A ``size`` x ``size`` crop that holds part of the mask's region with probability
    ``positive_share`` (when the mask has one) and falls uniformly anywhere otherwise.

    Needs the mask among the inputs (``crop(image=..., mask=...)``) unless the share is 0.
    """
    size, share = _size(size, "crop"), _share(positive_share, "crop")
    if share >= 1.0:
        return A.CropNonEmptyMaskIfExists(height=size, width=size, p=1.0)
    if share <= 0.0:
        return A.RandomCrop(height=size, width=size, p=1.0)
    # OneOf draws one child with its p as weight (normalised to sum 1) and applies it forced.
    return A.OneOf(
        [
            A.CropNonEmptyMaskIfExists(height=size, width=size, p=share),
            A.RandomCrop(height=size, width=size, p=1.0 - share),
        ],
        p=1.0,
    )


class CroppedAugment(A.Compose):
    """The crop, then the augmentation; its transforms share one pair of generators (see the
    module's note on seeding), which ``set_random_seed`` seeds."""

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        self.set_random_state(self.random_generator, self.py_random)


def with_crop(augment, crop: dict | None, where: str = "crop"):
    """The training transform: ``augment`` (an albumentations transform or None) preceded by the
    crop ``crop`` asks for (``{"size": int | None, "positive_share": float}``), or ``augment``
    itself when there is no crop (``crop`` None or its size None).

    The result's ``set_random_seed`` also reseeds ``augment``'s transforms, which then draw from the
    pipeline's shared generators. ``where``: the config key of ``crop``, for error messages.
    """
    if not crop or crop.get("size") is None:
        return augment
    cropping = crop_transform(
        _size(crop["size"], where),
        _share(crop.get("positive_share", DEFAULT_POSITIVE_SHARE), where),
    )
    return CroppedAugment([cropping] if augment is None else [cropping, augment], p=1.0)


def plain(crop: dict | None) -> dict | None:
    """The same crop placed uniformly anywhere (``positive_share`` 0): for images without a mask
    (the mean teacher's unlabelled NIH images), which the region-biased crop cannot place."""
    if not crop or crop.get("size") is None:
        return crop
    return {**crop, "positive_share": 0.0}


def check_crop(crop: dict | None, image_size: int, where: str = "crop") -> None:
    """Fail before training when the crop cannot be cut from the ``image_size`` images it is to
    train on (a side larger than the image's); no crop (None, or size None) always passes."""
    if not crop or crop.get("size") is None:
        return
    size = _size(crop["size"], where)
    _share(crop.get("positive_share", DEFAULT_POSITIVE_SHARE), where)
    if size > image_size:
        raise ValueError(
            f"config key {where + '.size'!r}: a crop of {size} x {size} px is larger than the "
            f"{image_size} x {image_size} px images it would be cut from; use a size <= {image_size} "
            "or null (no crop)"
        )
