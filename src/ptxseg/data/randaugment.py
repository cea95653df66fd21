"""RandAugment (Cubuk et al. 2020) for grey chest radiographs and their masks, from albumentations.

Each call draws ``n`` operations uniformly, with replacement and in the drawn order, from the fixed
list `OPERATIONS` and applies each at the one global magnitude ``m`` (0 to 30, mapped linearly
onto the operation's range: level = m / 30). Signed operations take the magnitude's sign at random
(+ or - with equal chance), as the paper's reference code does. The ranges (the value at m = 30):

=============  =========  =========================================================================
operation      kind       value at magnitude m (level = m / 30)
=============  =========  =========================================================================
identity       intensity  none: the image as it is
autocontrast   intensity  none: intensities stretched to 0..255 (``A.AutoContrast``)
equalise       intensity  none: histogram equalisation (``A.Equalize``)
contrast       intensity  factor 1 +- 0.9 level around the image mean (PIL's ImageEnhance.Contrast)
brightness     intensity  factor 1 +- 0.9 level on every intensity (PIL's ImageEnhance.Brightness)
sharpness      intensity  sharpened image blended in with weight 0.9 level (``A.Sharpen``)
posterise      intensity  8 - round(4 level) bits kept (8 bits: unchanged, 4 bits at m = 30)
solarise       intensity  intensities at or above 255 (1 - level) inverted (m = 0: none)
rotate         geometric  +- 30 level degrees
shear_x        geometric  +- 16.7 level degrees (atan 0.3: the paper's shear factor 0.3)
shear_y        geometric  +- 16.7 level degrees
translate_x    geometric  +- 0.3 level of the width (the paper's 100 px of 331)
translate_y    geometric  +- 0.3 level of the height
=============  =========  =========================================================================

Geometric operations are albumentations dual transforms (``A.Affine``): the mask moves with the
image, warped with nearest-neighbour interpolation so it stays binary, and what enters from outside
is 0 in both. Intensity operations are image-only transforms: the mask is left untouched.

Randomness comes only from albumentations' own generators (``py_random``), which the enclosing
``Compose.set_random_seed`` seeds here and in every operation: the dataset's per-epoch reseed
(`ptxseg.data.datasets.RepackedImages.reseed`) makes a rerun draw the same operations and values.

In the config, like any other albumentations entry (``__class_fullname__`` is this class's module
path, as albumentations serialises a class outside its own package)::

    augment: {transform: {__class_fullname__: Compose, transforms: [
        {__class_fullname__: HorizontalFlip, p: 0.5},
        {__class_fullname__: ptxseg.data.randaugment.RandAugment, n: 2, m: 9}]}}
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2

MAX_MAGNITUDE = 30
SHEAR_DEGREES = math.degrees(math.atan(0.3))  # 16.7: the paper's shear factor 0.3 as an angle


def _affine(**kwargs: Any) -> A.Affine:
    return A.Affine(
        **kwargs,
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=0,
        p=1.0,
    )


def _fixed(value: float) -> tuple[float, float]:
    return (value, value)


def _contrast(factor: float) -> A.BasicTransform:
    # alpha * img + beta * mean with alpha = f, beta = 1 - f: mean + f (img - mean), PIL's Contrast.
    return A.RandomBrightnessContrast(
        brightness_limit=_fixed(1.0 - factor),
        contrast_limit=_fixed(factor - 1.0),
        brightness_by_max=False,
        p=1.0,
    )


def _brightness(factor: float) -> A.BasicTransform:
    return A.RandomBrightnessContrast(
        brightness_limit=_fixed(0.0), contrast_limit=_fixed(factor - 1.0), p=1.0
    )


def _posterise(level: float) -> A.BasicTransform:
    bits = 8 - round(4 * level)
    return A.NoOp(p=1.0) if bits >= 8 else A.Posterize(num_bits=(bits, bits), p=1.0)


def _solarise(level: float) -> A.BasicTransform:
    return A.NoOp(p=1.0) if level <= 0 else A.Solarize(threshold_range=_fixed(1.0 - level), p=1.0)


# name -> (geometric?, signed?, build(value)), value = the signed magnitude on the operation's scale
# (level for the unsigned ones).
OPERATIONS: dict[str, tuple[bool, bool, Callable[[float], A.BasicTransform]]] = {
    "identity": (False, False, lambda level: A.NoOp(p=1.0)),
    "autocontrast": (False, False, lambda level: A.AutoContrast(p=1.0)),
    "equalise": (False, False, lambda level: A.Equalize(p=1.0)),
    "contrast": (False, True, lambda v: _contrast(1.0 + 0.9 * v)),
    "brightness": (False, True, lambda v: _brightness(1.0 + 0.9 * v)),
    "sharpness": (
        False,
        False,
        lambda level: A.Sharpen(alpha=_fixed(0.9 * level), lightness=_fixed(1.0), p=1.0),
    ),
    "posterise": (False, False, _posterise),
    "solarise": (False, False, _solarise),
    "rotate": (True, True, lambda v: _affine(rotate=_fixed(30.0 * v))),
    "shear_x": (True, True, lambda v: _affine(shear={"x": _fixed(SHEAR_DEGREES * v), "y": 0})),
    "shear_y": (True, True, lambda v: _affine(shear={"x": 0, "y": _fixed(SHEAR_DEGREES * v)})),
    "translate_x": (
        True,
        True,
        lambda v: _affine(translate_percent={"x": _fixed(0.3 * v), "y": 0}),
    ),
    "translate_y": (
        True,
        True,
        lambda v: _affine(translate_percent={"x": 0, "y": _fixed(0.3 * v)}),
    ),
}
GEOMETRIC = tuple(name for name, (geometric, _, _) in OPERATIONS.items() if geometric)
INTENSITY = tuple(name for name, (geometric, _, _) in OPERATIONS.items() if not geometric)


def operation(name: str, m: int, sign: int = 1) -> A.BasicTransform:
    """One operation of `OPERATIONS` at magnitude ``m``, with the sign ``sign`` where it has one."""
    if name not in OPERATIONS:
        raise ValueError(f"unknown RandAugment operation {name!r} (known: {', '.join(OPERATIONS)})")
    _, signed, build = OPERATIONS[name]
    level = _level(m)
    return build(level * (sign if signed else 1))


def _level(m: int) -> float:
    if not 0 <= m <= MAX_MAGNITUDE:
        raise ValueError(f"RandAugment magnitude m must be in 0..{MAX_MAGNITUDE}, got {m}")
    return m / MAX_MAGNITUDE


def with_full_probability(spec: Any) -> Any:
    """A serialised pipeline with ``p: 1`` added to every RandAugment entry that has no ``p``
    (albumentations' ``from_dict`` would otherwise apply it to half the images only)."""
    if isinstance(spec, list):
        return [with_full_probability(item) for item in spec]
    if not isinstance(spec, dict):
        return spec
    filled = {key: with_full_probability(value) for key, value in spec.items()}
    if filled.get("__class_fullname__") == RandAugment.get_class_fullname():
        filled.setdefault("p", 1.0)
    return filled


class RandAugment(A.BaseCompose):
    """``n`` operations drawn uniformly from `OPERATIONS` per call, all at magnitude ``m`` (0..30).

    Applied with probability ``p`` (1: every image; `ptxseg.data.transforms.build_augment` reads a
    config entry without ``p`` as 1, where albumentations alone would take 0.5). Serialises as ``{__class_fullname__:
    ptxseg.data.randaugment.RandAugment, n, m, p}``: its operations follow from ``m``.
    """

    def __init__(self, n: int = 2, m: int = 9, p: float = 1.0, **kwargs: Any):
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"RandAugment n must be an integer >= 0, got {n!r}")
        _level(m)
        self.n, self.m = n, int(m)
        transforms, self._variants = [], []
        for name, (_, signed, _) in OPERATIONS.items():
            variants = []
            for sign in (1, -1) if signed else (1,):
                variants.append(len(transforms))
                transforms.append(operation(name, self.m, sign))
            self._variants.append((name, tuple(variants)))
        super().__init__(transforms, p, **kwargs)

    def draw(self) -> list[int]:
        """The indices into ``transforms`` of one call's operations (advances the generator)."""
        chosen = []
        for _ in range(self.n):
            _, variants = self._variants[self.py_random.randrange(len(self._variants))]
            chosen.append(variants[self.py_random.randrange(len(variants))])
        return chosen

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        if args:
            raise KeyError("You have to pass data to augmentations as named arguments")
        if self.replay_mode:
            raise NotImplementedError("RandAugment does not support ReplayCompose")
        if force_apply or self.py_random.random() < self.p:
            for index in self.draw():
                transform = self.transforms[index]
                data = transform(**data)
                self._track_transform_params(transform, data)
                data = self.check_data_post_transform(data)
        return data

    def to_dict_private(self) -> dict[str, Any]:
        return {
            "__class_fullname__": self.get_class_fullname(),
            "n": self.n,
            "m": self.m,
            "p": self.p,
        }

    def operation_names(self) -> list[str]:
        """The operations' names, in the order they are drawn from."""
        return [name for name, _ in self._variants]


def randaugment_policy(n: int, m: int, flip: bool = True) -> dict:
    """The serialised training pipeline of a RandAugment point (a recipe's ``augment`` value):
    a horizontal flip with p 0.5 (the paper keeps its baseline's flips and crops beneath
    RandAugment; a chest radiograph's flip is the one such baseline here), then RandAugment(n, m)
    on every image."""
    transforms = [A.HorizontalFlip(p=0.5)] if flip else []
    pipeline = A.Compose([*transforms, RandAugment(n=n, m=m)])
    return {"transform": A.to_dict(pipeline)["transform"]}
