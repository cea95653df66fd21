"""The synthetic chest radiograph renderer: determinism, pneumothorax masks, and what they mark."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from ptxseg.data import nih
from ptxseg.data.phantom import FINDINGS, RenderedChest, render_chest

EIGHT = np.ones((3, 3), bool)  # 8-connectivity


def _render(seed: int, size: int = 256, **kwargs) -> RenderedChest:
    return render_chest(np.random.default_rng(seed), size, **kwargs)


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), _disk(radius)) > 0


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), _disk(radius)) > 0


def test_findings_are_the_14_nih_labels_in_order():
    assert FINDINGS == nih.FINDINGS and len(FINDINGS) == 14
    assert (
        FINDINGS[0] == "Atelectasis" and FINDINGS[7] == "Pneumothorax" and FINDINGS[-1] == "Hernia"
    )


@pytest.mark.parametrize("size", [64, 256, 1024])
def test_image_is_square_uint8_of_the_requested_size(size):
    chest = _render(3, size, pneumothorax_regions=1)
    assert chest.image.shape == (size, size)
    assert chest.image.dtype == np.uint8
    assert chest.lung_fields.shape == (size, size) and chest.lung_fields.dtype == bool
    for mask in chest.pneumothorax:
        assert mask.shape == (size, size) and mask.dtype == bool
    # A radiograph, not a flat field: black air around the body, lungs darker than the rest.
    img = chest.image
    assert img.min() < 40 and int(img.max()) - int(img.min()) > 120
    body = ~chest.lung_fields & (img > 60)
    assert img[chest.lung_fields].mean() + 30 < img[body].mean()


def test_same_generator_state_gives_the_same_image_bit_for_bit():
    rng = np.random.default_rng(42)
    rng.random(3)  # any state, not just a fresh seed
    twin = np.random.default_rng()
    twin.bit_generator.state = rng.bit_generator.state
    kwargs = dict(pneumothorax_regions=2, findings=["Effusion", "Nodule", "Fibrosis"])
    a, b = render_chest(rng, 256, **kwargs), render_chest(twin, 256, **kwargs)
    assert np.array_equal(a.image, b.image)
    assert len(a.pneumothorax) == len(b.pneumothorax) == 2
    for ma, mb in zip(a.pneumothorax, b.pneumothorax, strict=True):
        assert np.array_equal(ma, mb)
    # The generator is advanced identically, so the next image matches too.
    assert np.array_equal(render_chest(rng, 64).image, render_chest(twin, 64).image)


def test_different_seeds_give_different_images():
    images = [_render(seed, 128).image for seed in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.mean(images[i] != images[j]) > 0.5


def test_consecutive_calls_on_one_generator_differ():
    rng = np.random.default_rng(0)
    assert not np.array_equal(render_chest(rng, 128).image, render_chest(rng, 128).image)


def test_the_global_numpy_random_state_is_not_used():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    _render(1, 128, pneumothorax_regions=2, findings=FINDINGS)
    assert np.array_equal(np.random.get_state()[1], before)


def test_anatomy_scales_with_the_image_size():
    small, large = _render(9, 64), _render(9, 1024)
    assert abs(small.lung_fields.mean() - large.lung_fields.mean()) < 0.02
    down = cv2.resize(large.lung_fields.astype(np.uint8), (64, 64), interpolation=cv2.INTER_AREA)
    assert np.mean((down > 0) == small.lung_fields) > 0.95


@pytest.mark.parametrize("size", [64, 256])
def test_lung_fields_are_two_lungs_one_each_side(size):
    for seed in range(6):
        chest = _render(seed, size)
        labels, count = ndimage.label(chest.lung_fields, structure=EIGHT)
        assert count == 2
        cx = [np.nonzero(labels == k)[1].mean() for k in (1, 2)]
        assert min(cx) < size / 2 < max(cx)
        areas = ndimage.sum(chest.lung_fields, labels, [1, 2])
        # The patient's right lung (image left) is the larger one.
        assert areas[int(np.argmin(cx))] > areas[int(np.argmax(cx))]


@pytest.mark.parametrize("findings", [(), ("Effusion", "Mass", "Cardiomegaly")])
def test_no_pneumothorax_gives_an_empty_list(findings):
    for seed in range(3):
        assert _render(seed, 128, findings=findings).pneumothorax == []


@pytest.mark.parametrize("size", [64, 100, 256])
@pytest.mark.parametrize("regions", [1, 2])
def test_pneumothorax_masks_are_nonempty_connected_disjoint_and_inside_the_lungs(size, regions):
    for seed in range(12):
        chest = _render(seed, size, pneumothorax_regions=regions)
        assert len(chest.pneumothorax) == regions
        union = np.zeros((size, size), bool)
        for mask in chest.pneumothorax:
            assert mask.any()
            assert ndimage.label(mask, structure=EIGHT)[1] == 1
            assert not (mask & ~chest.lung_fields).any()
            assert not (mask & union).any()
            union |= mask
        # Separate regions, not two halves of one blob.
        assert ndimage.label(union, structure=EIGHT)[1] == regions


def test_a_pneumothorax_finding_alone_means_one_region():
    chest = _render(5, 128, findings=["Pneumothorax"])
    assert len(chest.pneumothorax) == 1
    assert len(_render(5, 128, pneumothorax_regions=2, findings=["Pneumothorax"]).pneumothorax) == 2


def test_two_regions_come_in_both_lungs_and_in_one_lung():
    both = one = 0
    for seed in range(16):
        a, b = _render(seed, 128, pneumothorax_regions=2).pneumothorax
        same_side = (np.nonzero(a)[1].mean() < 64) == (np.nonzero(b)[1].mean() < 64)
        one += same_side
        both += not same_side
    assert both > 0 and one > 0


def test_pneumothorax_sizes_range_from_slivers_to_large_crescents():
    areas = [
        mask.sum()
        for seed in range(30)
        for mask in _render(seed, 512, pneumothorax_regions=1).pneumothorax
    ]
    # Sizes follow the real SIIM positives (at 1024: 5th percentile ~1,400 px, median ~8,800,
    # 95th ~48,000); at 512 a quarter of that: slivers of a few hundred pixels to large crescents.
    assert min(areas) < 350 and max(areas) > 3000
    assert 1200 < np.median(areas) < 4000


def test_the_pneumothorax_changes_exactly_its_region_and_the_pleural_line():
    """Same seed with and without: the masks are the rendered region, not an approximation."""
    for seed in range(6):
        plain = _render(seed, 512).image.astype(int)
        chest = _render(seed, 512, pneumothorax_regions=2)
        union = np.logical_or.reduce(chest.pneumothorax)
        changed = chest.image.astype(int) != plain
        # Outside the masks only the visceral pleural line, which hugs their inner border.
        assert not (changed & ~_dilate(union, 3)).any()
        # Inside, every pixel is darkened (a few can round to the same grey level).
        assert changed[union].mean() > 0.9
        assert (chest.image.astype(int) - plain)[union].mean() < -3


def _ptx_vs_neighbour(size: int, seeds=range(30)):
    """Per image with a usable region: (texture ratio, mean difference, pleural-line contrast)."""
    r = max(2, size // 128)
    rows = []
    for seed in seeds:
        chest = _render(seed, size, pneumothorax_regions=1)
        (mask,) = chest.pneumothorax
        img = chest.image.astype(np.float32)
        inner = _erode(mask, r)  # away from the pleural line and the chest wall
        # Comparable lung next to it: a band just beyond the pleural line.
        near = _dilate(mask, 6 * r) & chest.lung_fields & ~_dilate(mask, 2 * r)
        if inner.sum() < 50 or near.sum() < 50:
            continue
        fine = img - cv2.GaussianBlur(img, (0, 0), 2.0)  # fine-scale texture
        line = _dilate(mask, 1) & ~mask & chest.lung_fields  # the visceral pleura
        just_outside = mask & _dilate(line, 2)  # the pneumothorax right next to it
        rows.append(
            (
                fine[inner].std() / fine[near].std(),
                img[inner].mean() - img[near].mean(),
                img[line].mean() - img[just_outside].mean(),
            )
        )
    assert len(rows) >= 12
    return np.array(rows)


@pytest.fixture(scope="module")
def neighbour_stats():
    return _ptx_vs_neighbour(512)


def test_pneumothorax_lacks_the_fine_texture_of_lung_markings(neighbour_stats):
    ratio = neighbour_stats[:, 0]
    assert np.median(ratio) < 0.92
    assert np.mean(ratio < 1) >= 0.85


def test_pneumothorax_is_darker_than_the_neighbouring_lung(neighbour_stats):
    diff = neighbour_stats[:, 1]
    assert np.median(diff) < -5
    assert np.mean(diff < 0) >= 0.75


def test_pleural_line_is_brighter_than_the_pneumothorax_next_to_it(neighbour_stats):
    assert (neighbour_stats[:, 2] > 5).all()


def test_pleural_line_is_visible_but_subtle():
    """Brighter than the lung it borders, but only by a few noise levels: not a drawn contour."""
    for seed in range(4):
        chest = _render(seed, 1024, pneumothorax_regions=1)
        (mask,) = chest.pneumothorax
        img = chest.image.astype(np.float32)
        line = _dilate(mask, 1) & ~mask & chest.lung_fields
        lung_side = _dilate(mask, 8) & ~_dilate(mask, 3) & chest.lung_fields
        contrast = img[line].mean() - img[lung_side].mean()
        assert 2 < contrast < 40


@pytest.mark.parametrize("finding", FINDINGS)
def test_each_finding_changes_the_image(finding):
    for seed in (0, 1):
        plain = _render(seed, 256).image.astype(int)
        ill = _render(seed, 256, findings=[finding]).image.astype(int)
        assert (np.abs(ill - plain) > 8).sum() > 30, finding


def test_findings_look_like_their_names():
    seed = 2
    plain = _render(seed, 256)
    lung = plain.lung_fields

    def lung_mean(chest):
        return chest.image[lung].mean()

    big_heart = _render(seed, 256, findings=["Cardiomegaly"])
    assert big_heart.lung_fields.sum() < 0.93 * lung.sum()
    emphysema = _render(seed, 256, findings=["Emphysema"])
    assert emphysema.lung_fields.sum() > 1.05 * lung.sum()
    assert emphysema.image[lung & emphysema.lung_fields].mean() < lung_mean(plain)
    for opacity in ("Consolidation", "Pneumonia", "Edema", "Infiltration", "Effusion", "Mass"):
        assert lung_mean(_render(seed, 256, findings=[opacity])) > lung_mean(plain) + 1, opacity
    # Findings combine: both a big heart and fluid.
    both = _render(seed, 256, findings=["Cardiomegaly", "Effusion"])
    assert both.lung_fields.sum() < 0.93 * lung.sum()
    assert both.image[lung].mean() > big_heart.image[lung].mean()


def test_unknown_finding_raises_naming_it():
    with pytest.raises(ValueError, match="Pneumonitis"):
        _render(0, 64, findings=["Mass", "Pneumonitis"])


@pytest.mark.parametrize("regions", [-1, 3])
def test_bad_region_count_raises(regions):
    with pytest.raises(ValueError):
        _render(0, 64, pneumothorax_regions=regions)
