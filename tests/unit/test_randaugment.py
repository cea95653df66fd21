"""RandAugment for image and mask: geometry moves both, intensity only the image, seeds repeat."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import numpy as np
import pytest

from ptxseg.data.randaugment import GEOMETRIC, INTENSITY, OPERATIONS, RandAugment, operation
from ptxseg.data.transforms import build_augment

THRESHOLD = 128
# Linear interpolation of the image against nearest of the mask: they may disagree on the pixels
# next to the threshold's boundary only. Bound: 3% of the pixels (measured: at most 0.5%).
EDGE_TOLERANCE = 0.03


def _image(size: int = 64) -> np.ndarray:
    """A smooth grey image (blobs), so the threshold's boundary is short."""
    y, x = np.mgrid[:size, :size] / size
    blobs = np.exp(-((x - 0.35) ** 2 + (y - 0.4) ** 2) / 0.02) + 0.8 * np.exp(
        -((x - 0.7) ** 2 + (y - 0.65) ** 2) / 0.01
    )
    return np.clip(255 * blobs / blobs.max(), 0, 255).astype(np.uint8)


def _mask(image: np.ndarray) -> np.ndarray:
    return ((image > THRESHOLD) * 255).astype(np.uint8)


@pytest.mark.parametrize("name", GEOMETRIC)
@pytest.mark.parametrize("m", [10, 30])
@pytest.mark.parametrize("sign", [1, -1])
def test_geometric_operations_move_the_mask_with_the_image(name, m, sign):
    image = _image()
    out = A.Compose([operation(name, m, sign)])(image=image, mask=_mask(image))
    assert out["image"].shape == image.shape and out["mask"].shape == image.shape
    assert set(np.unique(out["mask"])) <= {0, 255}  # nearest interpolation: still binary
    assert not np.array_equal(out["mask"], _mask(image))  # it did move
    disagree = np.mean(_mask(out["image"]) != out["mask"])
    assert disagree <= EDGE_TOLERANCE, f"{name} m={m}: {disagree:.3%} of pixels disagree"


@pytest.mark.parametrize("name", INTENSITY)
def test_intensity_operations_leave_the_mask_alone(name):
    image = _image()
    mask = _mask(image)
    out = A.Compose([operation(name, 20, -1)])(image=image, mask=mask.copy())
    assert np.array_equal(out["mask"], mask)
    assert out["image"].dtype == np.uint8 and out["image"].shape == image.shape


def test_every_operation_is_geometric_or_intensity():
    assert set(GEOMETRIC) | set(INTENSITY) == set(OPERATIONS)
    assert set(GEOMETRIC) == {"rotate", "shear_x", "shear_y", "translate_x", "translate_y"}


def test_the_same_seed_draws_the_same_operations():
    image = _image()
    pipeline = A.Compose([RandAugment(n=3, m=15)])

    def run(seed):
        pipeline.set_random_seed(seed)
        return [pipeline(image=image, mask=_mask(image)) for _ in range(8)]

    first, again, other = run(11), run(11), run(12)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
    assert any(
        not np.array_equal(a["image"], b["image"]) for a, b in zip(first, other, strict=True)
    )


def test_draws_are_uniform_over_the_operations():
    augment = RandAugment(n=1, m=5)
    augment.set_random_seed(0)
    names = augment.operation_names()
    counts = dict.fromkeys(names, 0)
    for _ in range(2600):
        index = augment.draw()[0]
        counts[next(n for n, v in augment._variants if index in v)] += 1
    assert min(counts.values()) > 0.6 * 2600 / len(names)


def test_n_zero_is_the_identity():
    image = _image()
    out = A.Compose([RandAugment(n=0, m=30)])(image=image, mask=_mask(image))
    assert np.array_equal(out["image"], image) and np.array_equal(out["mask"], _mask(image))


def test_magnitude_zero_leaves_geometry_alone():
    image = _image()
    for name in GEOMETRIC:
        out = A.Compose([operation(name, 0)])(image=image, mask=_mask(image))
        assert np.array_equal(out["mask"], _mask(image)), name


def test_out_of_range_arguments_fail():
    with pytest.raises(ValueError, match="0..30"):
        RandAugment(n=1, m=31)
    with pytest.raises(ValueError, match="n must be"):
        RandAugment(n=-1, m=5)


def test_config_entry_round_trips_through_build_augment():
    spec = {
        "transform": {
            "__class_fullname__": "Compose",
            "transforms": [
                {"__class_fullname__": "HorizontalFlip", "p": 0.5},
                {"__class_fullname__": RandAugment.get_class_fullname(), "n": 2, "m": 9},
            ],
        }
    }
    assert RandAugment.get_class_fullname() == "ptxseg.data.randaugment.RandAugment"
    pipeline = build_augment(spec)
    augment = pipeline.transforms[1]
    assert isinstance(augment, RandAugment)
    assert (augment.n, augment.m, augment.p) == (2, 9, 1.0)  # no p in the config: every image
    entry = A.to_dict(pipeline)["transform"]["transforms"][1]
    assert entry == {
        "__class_fullname__": "ptxseg.data.randaugment.RandAugment",
        "n": 2,
        "m": 9,
        "p": 1.0,
    }
    again = build_augment(A.to_dict(pipeline))
    image = _image()
    pipeline.set_random_seed(5)
    again.set_random_seed(5)
    a, b = pipeline(image=image, mask=_mask(image)), again(image=image, mask=_mask(image))
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])


def test_dataset_reseed_repeats_the_draws(tmp_path):
    import cv2

    from ptxseg.data.datasets import RepackedImages

    image = _image()
    cv2.imwrite(str(tmp_path / "i.png"), image)
    cv2.imwrite(str(tmp_path / "m.png"), _mask(image))
    data = RepackedImages(
        ["a"],
        [tmp_path / "i.png"],
        mean=0.5,
        std=0.25,
        masks=[tmp_path / "m.png"],
        augment=build_augment(
            {
                "__class_fullname__": "Compose",
                "transforms": [
                    {"__class_fullname__": "ptxseg.data.randaugment.RandAugment", "n": 2, "m": 20}
                ],
            }
        ),
    )

    def epoch(seed):
        data.reseed(seed)
        return [data[0] for _ in range(6)]

    for a, b in zip(epoch(3), epoch(3), strict=True):
        assert (a["image"] == b["image"]).all() and (a["target"] == b["target"]).all()
