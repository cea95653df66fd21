"""Training crops: image and mask stay aligned, sizes, the share of crops on the region, seeds."""

import os
import pickle

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
import pytest

from ptxseg.data.crops import CroppedAugment, check_crop, crop_transform, with_crop
from ptxseg.data.datasets import RepackedImages
from ptxseg.data.transforms import build_augment

SIDE = 256  # the image
CROP = 64
# The small region of the share test: rows and columns 100..105 (6 x 6 pixels).
REGION = (slice(100, 106), slice(150, 156))
DRAWS = 4000  # cheap: a crop of a 256 image takes about 10 us
# Binomial spread of a fraction over 4000 draws: at most 0.008. The seeds are fixed, so the bound
# (5 spreads) cannot flake; measured deviations from the expected fractions are at most 0.014.
SHARE_TOLERANCE = 0.04


def _noise(side: int = SIDE, seed: int = 0) -> np.ndarray:
    """Random grey values: any window of 8 x 8 or more occurs at one place only."""
    return np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)


def _disk(side: int = SIDE) -> np.ndarray:
    y, x = np.mgrid[:side, :side]
    return (((y - 0.3 * side) ** 2 + (x - 0.6 * side) ** 2 < (0.15 * side) ** 2) * 255).astype(
        np.uint8
    )


def _small_region() -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), np.uint8)
    mask[REGION] = 255
    return mask


def _locate(image: np.ndarray, crop: np.ndarray) -> tuple[int, int] | None:
    """(top, left) of the window of ``image`` that ``crop`` is exactly, or None."""
    scores = cv2.matchTemplate(image.astype(np.float32), crop.astype(np.float32), cv2.TM_SQDIFF)
    top, left = (int(v) for v in np.unravel_index(int(np.argmin(scores)), scores.shape))
    h, w = crop.shape
    return (top, left) if np.array_equal(image[top : top + h, left : left + w], crop) else None


def _window(image: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """(top, left) of the window of ``image`` that ``crop`` is, asserting it is one."""
    corner = _locate(image, crop)
    assert corner is not None, "not a window of the image"
    return corner


def _analytic_hit_fraction(crop: int = CROP) -> float:
    """Chance that a uniform crop (every corner 0..SIDE - crop equally likely) overlaps REGION."""
    fraction = 1.0
    for span in REGION:
        first, last = span.start, span.stop - 1
        corners = range(SIDE - crop + 1)
        fraction *= sum(c <= last and c + crop - 1 >= first for c in corners) / len(corners)
    return fraction


def _hit_fraction(share: float, seed: int = 0) -> float:
    transform = with_crop(None, {"size": CROP, "positive_share": share})
    transform.set_random_seed(seed)
    image, mask = _noise(), _small_region()
    hits = [transform(image=image, mask=mask)["mask"].any() for _ in range(DRAWS)]
    return float(np.mean(hits))


def _flip_augment(p: float) -> A.Compose:
    return build_augment(A.to_dict(A.Compose([A.HorizontalFlip(p=p)])))


# --- alignment and sizes -------------------------------------------------------------------------


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_crops_keep_image_and_mask_aligned(share):
    image, mask = _noise(), _disk()
    transform = with_crop(None, {"size": CROP, "positive_share": share})
    transform.set_random_seed(1)
    for _ in range(50):
        out = transform(image=image, mask=mask)
        top, left = _window(image, out["image"])
        assert np.array_equal(out["mask"], mask[top : top + CROP, left : left + CROP])
    # An image equal to its mask: after the crop its bright pixels are exactly the mask's.
    for _ in range(50):
        out = transform(image=mask, mask=mask)
        assert np.array_equal(out["image"], out["mask"])


@pytest.mark.parametrize("size", [32, 64, 160, SIDE])
@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_crops_have_the_configured_size(size, share):
    transform = with_crop(None, {"size": size, "positive_share": share})
    transform.set_random_seed(2)
    for mask in (_disk(), np.zeros((SIDE, SIDE), np.uint8)):
        out = transform(image=_noise(), mask=mask)
        assert out["image"].shape == (size, size) and out["mask"].shape == (size, size)
        assert out["image"].dtype == np.uint8 and out["mask"].dtype == np.uint8
        assert set(np.unique(out["mask"])) <= {0, 255}


def test_the_edge_shares_are_single_crops_and_the_others_weighted_by_share():
    assert isinstance(crop_transform(CROP, 0.0), A.RandomCrop)
    assert isinstance(crop_transform(CROP, 1.0), A.CropNonEmptyMaskIfExists)
    mixed = crop_transform(CROP, 0.3)
    assert isinstance(mixed, A.OneOf) and mixed.p == 1.0
    assert [type(t) for t in mixed.transforms] == [A.CropNonEmptyMaskIfExists, A.RandomCrop]
    assert mixed.transforms_ps == pytest.approx([0.3, 0.7])


# --- the share of crops on the region ------------------------------------------------------------


def test_uniform_crops_hit_the_region_as_often_as_its_geometry_says():
    measured = _hit_fraction(0.0)
    assert measured == pytest.approx(_analytic_hit_fraction(), abs=SHARE_TOLERANCE)
    assert 0.05 < measured < 0.3  # the region is small: the share tests below can tell shares apart


def test_every_crop_hits_the_region_at_share_one():
    assert _hit_fraction(1.0) == 1.0


@pytest.mark.parametrize("share", [0.25, 0.5, 0.75])
def test_crops_hit_the_region_at_the_configured_share(share):
    uniform = _hit_fraction(0.0, seed=10)
    expected = share + (1.0 - share) * uniform
    assert _hit_fraction(share, seed=11) == pytest.approx(expected, abs=SHARE_TOLERANCE)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_crops_of_an_empty_mask_fall_anywhere(share):
    image, empty = _noise(), np.zeros((SIDE, SIDE), np.uint8)
    transform = with_crop(None, {"size": CROP, "positive_share": share})
    transform.set_random_seed(3)
    corners = []
    for _ in range(200):
        out = transform(image=image, mask=empty)
        assert not out["mask"].any() and out["image"].shape == (CROP, CROP)
        corners.append(_window(image, out["image"]))
    tops, lefts = np.array(corners).T
    assert len(set(corners)) > 150  # spread, not a fixed place
    # Uniform over 0..192: mean 96, spread of the mean over 200 draws about 4.
    assert abs(tops.mean() - (SIDE - CROP) / 2) < 16 and abs(lefts.mean() - (SIDE - CROP) / 2) < 16


# --- seeds ---------------------------------------------------------------------------------------


def _draws(transform, seed: int, n: int = 30) -> list[tuple[np.ndarray, np.ndarray]]:
    transform.set_random_seed(seed)
    image, mask = _noise(), _disk()
    return [
        (out["image"], out["mask"]) for out in (transform(image=image, mask=mask) for _ in range(n))
    ]


def test_the_same_seed_gives_the_same_crops():
    transform = with_crop(_flip_augment(0.5), {"size": CROP, "positive_share": 0.5})
    first, again, other = _draws(transform, 7), _draws(transform, 7), _draws(transform, 8)
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for a, b in zip(first, again, strict=True)
    )
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # A fresh pipeline built from the same config, same seed: the same crops too.
    fresh = with_crop(_flip_augment(0.5), {"size": CROP, "positive_share": 0.5})
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(first, _draws(fresh, 7), strict=True))


def test_the_transforms_draw_independently_after_a_reseed():
    """albumentations' set_random_seed seeds every transform with the same number (two flips with
    p = 0.5 would then flip together on every image); the cropped pipeline shares one stream."""
    augment = build_augment(A.to_dict(A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])))
    transform = with_crop(augment, {"size": SIDE, "positive_share": 0.5})  # the whole image
    transform.set_random_seed(4)
    image = _noise()
    together = 0
    for _ in range(200):
        out = transform(image=image, mask=_disk())["image"]
        horizontal = np.array_equal(out, image[:, ::-1]) or np.array_equal(out, image[::-1, ::-1])
        vertical = np.array_equal(out, image[::-1]) or np.array_equal(out, image[::-1, ::-1])
        together += horizontal == vertical
    assert 60 < together < 140  # independent: about half (100 +- 7)


def test_the_dataset_reseed_repeats_the_crops(tmp_path):
    image_paths, mask_paths = [], []
    for i in range(3):
        image_paths.append(str(tmp_path / f"image{i}.png"))
        mask_paths.append(str(tmp_path / f"mask{i}.png"))
        cv2.imwrite(image_paths[-1], _noise(seed=i))
        cv2.imwrite(mask_paths[-1], _disk() if i else np.zeros((SIDE, SIDE), np.uint8))
    dataset = RepackedImages(
        ["a", "b", "c"],
        image_paths,
        mean=0.5,
        std=0.25,
        masks=mask_paths,
        augment=with_crop(_flip_augment(0.5), {"size": CROP, "positive_share": 0.5}),
    )
    dataset = pickle.loads(pickle.dumps(dataset))  # as a DataLoader's worker receives it
    dataset.reseed(5)
    first = [dataset[i] for i in range(3)]
    dataset.reseed(5)
    again = [dataset[i] for i in range(3)]
    for a, b in zip(first, again, strict=True):
        assert a["image"].shape == (1, CROP, CROP) and a["target"].shape == (1, CROP, CROP)
        assert a["image"].equal(b["image"]) and a["target"].equal(b["target"])


# --- composition with the augmentation -----------------------------------------------------------


def test_the_crop_comes_before_a_flip_built_by_build_augment():
    image, mask = _noise(), _disk()
    transform = with_crop(_flip_augment(0.5), {"size": CROP, "positive_share": 1.0})
    assert isinstance(transform, CroppedAugment)
    assert isinstance(transform.transforms[0], A.CropNonEmptyMaskIfExists)
    transform.set_random_seed(6)
    flipped = 0
    for _ in range(100):
        out = transform(image=image, mask=mask)
        assert out["image"].shape == (CROP, CROP) and out["mask"].any()  # share 1: on the region
        mirrored = _locate(image, out["image"]) is None
        unflipped_image = out["image"][:, ::-1] if mirrored else out["image"]
        unflipped_mask = out["mask"][:, ::-1] if mirrored else out["mask"]
        top, left = _window(image, unflipped_image)
        assert np.array_equal(unflipped_mask, mask[top : top + CROP, left : left + CROP])
        flipped += mirrored
    assert 25 < flipped < 75  # the flip's p = 0.5 on the crops


def test_the_crop_alone_and_with_an_augment_that_is_a_single_transform():
    only_crop = with_crop(None, {"size": CROP, "positive_share": 0.5})
    assert isinstance(only_crop, CroppedAugment) and len(only_crop.transforms) == 1
    single = with_crop(A.HorizontalFlip(p=1.0), {"size": CROP})  # positive_share: its default
    single.set_random_seed(0)
    image, mask = _noise(), _disk()
    out = single(image=image, mask=mask)
    top, left = _window(image, out["image"][:, ::-1])
    assert np.array_equal(out["mask"][:, ::-1], mask[top : top + CROP, left : left + CROP])


# --- no crop, and crops that cannot be cut -------------------------------------------------------


def test_no_crop_returns_the_augment_unchanged():
    augment = _flip_augment(0.5)
    assert with_crop(augment, None) is augment
    assert with_crop(augment, {}) is augment
    assert with_crop(augment, {"size": None, "positive_share": 0.5}) is augment
    assert with_crop(None, None) is None


def test_a_crop_larger_than_the_image_fails_naming_the_key():
    with pytest.raises(ValueError, match=r"'crop\.size'.*512 x 512.*256 x 256"):
        check_crop({"size": 512, "positive_share": 0.5}, 256)
    with pytest.raises(ValueError, match=r"'segment\.recipe\.stages\[0\]\.crop\.size'"):
        check_crop({"size": 512}, 256, where="segment.recipe.stages[0].crop")
    check_crop({"size": 256, "positive_share": 0.5}, 256)  # the whole image: allowed
    check_crop({"size": 128, "positive_share": 0.5}, 256)
    check_crop({"size": None, "positive_share": 0.5}, 256)
    check_crop(None, 256)


@pytest.mark.parametrize(
    ("crop", "key"),
    [
        ({"size": 0}, "crop.size"),
        ({"size": 64.5}, "crop.size"),
        ({"size": True}, "crop.size"),
        ({"size": 64, "positive_share": 1.5}, "crop.positive_share"),
        ({"size": 64, "positive_share": -0.1}, "crop.positive_share"),
    ],
)
def test_bad_crops_fail_naming_the_key(crop, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        with_crop(None, crop)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        check_crop(crop, 256)
