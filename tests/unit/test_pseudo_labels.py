"""Selection of NIH pseudo-labels: the cascade a positive passes, confidence over its region (not
the background), no faint region in an empty image, the positive share, the cap, no SIIM image."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from ptxseg.data.pseudo_labels import (
    KEPT_EMPTY,
    KEPT_POSITIVE,
    NO_MASK,
    NOT_EMPTY,
    OVER_CAP,
    OVER_RATIO,
    UNCERTAIN,
    UNSURE_REGION,
    Bands,
    border_pixels,
    region_confidence,
    select,
)
from ptxseg.infer.pseudo_labels import measure


def _candidates(n=200, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    probability = rng.random(n)
    return pd.DataFrame(
        {
            "image_id": [f"{k:08d}_000.png" for k in range(n)],
            "probability": probability,
            "mask_pixels": np.where(probability > 0.5, rng.choice([0, 200, 400], n), 0),
            "region_confidence": rng.uniform(0.9, 1.0, n),
            "max_pixel": rng.uniform(0.0, 0.3, n),
        }
    )


def test_only_confident_images_in_their_bands_are_kept():
    bands = Bands(positive_min_probability=0.9, empty_max_probability=0.05, min_confidence=0.95)
    table = select(_candidates(), bands)
    positive, empty = table[table["kept"] == KEPT_POSITIVE], table[table["kept"] == KEPT_EMPTY]
    assert len(positive) and len(empty)
    assert (positive["probability"] >= 0.9).all() and (positive["mask_pixels"] > 0).all()
    assert (positive["region_confidence"] >= 0.95).all()
    assert (empty["probability"] <= 0.05).all() and (empty["max_pixel"] <= 0.2).all()
    left = table[table["kept"] == ""]
    assert set(left["why"]) <= {UNCERTAIN, NO_MASK, UNSURE_REGION, NOT_EMPTY, OVER_RATIO, OVER_CAP}
    # A positive-looking image the cascade drew no mask for is not a positive pseudo-label.
    no_mask = (table["probability"] >= 0.9) & (table["mask_pixels"] == 0)
    assert no_mask.any() and (table.loc[no_mask, "why"] == NO_MASK).all()
    # Each reason is given where it applies, whichever comes first.
    unsure = (table["probability"] >= 0.9) & (table["mask_pixels"] > 0)
    unsure &= table["region_confidence"] < 0.95
    assert unsure.any() and (table.loc[unsure, "why"] == UNSURE_REGION).all()
    faint = (table["probability"] <= 0.05) & (table["max_pixel"] > 0.2)
    assert faint.any() and (table.loc[faint, "why"] == NOT_EMPTY).all()
    between = (table["probability"] > 0.05) & (table["probability"] < 0.9)
    assert (table.loc[between, "why"] == UNCERTAIN).all()


# ----------------------------------------------------------------------------- maps
#
# Each map goes through the labelling's own measurement (the run's cascade, then the region's
# confidence and the map's highest pixel) and `select`, beside a clean empty image so that the
# positive share leaves room for one positive.

SIZE = 256  # min_area 2048 at 1024 is 128 pixels here; the ring is 4 pixels wide


def _judge(maps: dict[str, np.ndarray], probability: dict[str, float], bands=None):
    bands = bands or Bands()
    rows, masks = [], {}
    for image_id, probability_map in maps.items():
        masks[image_id], measures = measure(probability_map, probability[image_id], bands)
        rows.append({"image_id": image_id, **measures})
    table = select(pd.DataFrame(rows), bands).set_index("image_id")
    return table, masks


def _levels(*probabilities: float) -> list[int]:
    return [round(p * 255) for p in probabilities]


def _clean():
    return {"clean": np.zeros((SIZE, SIZE), np.uint8)}, {"clean": 0.01}


def _faint_map() -> np.ndarray:
    """3 % of the pixels at 0.55 on a background at 0.03: its mean max(p, 1 - p) is 0.956."""
    background, faint = _levels(0.03, 0.55)
    probability_map = np.full((SIZE, SIZE), background, np.uint8)
    probability_map[100:144, 100:145] = faint  # 1,980 pixels: 3.0 %
    return probability_map


def test_a_faint_region_on_a_sure_background_is_neither_a_positive_nor_an_empty_image():
    faint = _faint_map()
    p = faint.astype(np.float32) / 255
    assert np.maximum(p, 1 - p).mean() >= 0.95  # the whole map's mean passed the old bar
    maps, probability = _clean()
    maps |= {"as positive": faint, "as empty": faint}
    probability |= {"as positive": 0.95, "as empty": 0.01}
    table, masks = _judge(maps, probability)
    assert table.loc["as positive", "kept"] == "" and table.loc["as positive", "why"] == NO_MASK
    assert not masks["as positive"].any()  # 0.55 never reaches the top threshold 0.8
    assert table.loc["as empty", "kept"] == "" and table.loc["as empty", "why"] == NOT_EMPTY
    # A cascade loose enough to draw it: its region is as unsure as its pixels.
    loose = Bands(top=0.5, min_area=0)
    table, masks = _judge(maps, probability, loose)
    assert masks["as positive"].sum() == 1980
    assert table.loc["as positive", "region_confidence"] < 0.7  # 0.55 inside, 0.97 in the ring
    assert table.loc["as positive", "why"] == UNSURE_REGION


def test_a_one_pixel_speck_never_becomes_a_positive_mask():
    speck = np.zeros((SIZE, SIZE), np.uint8)
    speck[60, 70] = 253  # 0.99, the rest sure background
    maps, probability = _clean()
    table, masks = _judge(maps | {"speck": speck}, probability | {"speck": 0.99})
    assert table.loc["speck", "kept"] == "" and table.loc["speck", "why"] == NO_MASK
    assert table.loc["speck", "mask_pixels"] == 0 and not masks["speck"].any()
    assert table.loc["clean", "kept"] == ""  # without a positive, the share keeps no empty one


def _region(blur: float = 0) -> np.ndarray:
    inside, outside = _levels(0.98, 0.01)
    probability_map = np.full((SIZE, SIZE), outside, np.uint8)
    probability_map[60:120, 80:150] = inside  # 4,200 pixels
    if blur:
        probability_map = cv2.GaussianBlur(probability_map, (0, 0), blur)
    return probability_map


def test_a_sure_region_with_a_sharp_edge_is_a_positive_with_the_cascades_mask():
    maps, probability = _clean()
    table, masks = _judge(maps | {"region": _region()}, probability | {"region": 0.97})
    assert table.loc["region", "kept"] == KEPT_POSITIVE
    assert table.loc["clean", "kept"] == KEPT_EMPTY
    assert table.loc["region", "region_confidence"] >= 0.97
    expected = np.zeros((SIZE, SIZE), bool)
    expected[60:120, 80:150] = True
    np.testing.assert_array_equal(masks["region"], expected)
    # The same region fading slowly into the background: its edge is unsure, so is the label.
    blurred = {"region": _region(blur=8)}
    table, masks = _judge(maps | blurred, probability | {"region": 0.97})
    assert masks["region"].any() and table.loc["region", "why"] == UNSURE_REGION
    # Below the gate (the positive band), the cascade draws nothing.
    table, _ = _judge(maps | {"region": _region()}, probability | {"region": 0.85})
    assert table.loc["region", "why"] == UNCERTAIN and table.loc["region", "mask_pixels"] == 0


def test_region_confidence_covers_the_region_and_a_ring_around_it_only():
    assert (border_pixels(1024), border_pixels(256), border_pixels(64)) == (16, 4, 1)
    probability_map = np.zeros((64, 64), np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:30, 20:30] = True
    probability_map[mask] = 255
    assert region_confidence(probability_map, mask) == pytest.approx(1.0)
    # Unsure pixels in the ring (1 pixel at 64 px) count; unsure pixels beyond it do not.
    ring = probability_map.copy()
    ring[19, 20:30] = 128
    assert region_confidence(ring, mask) < 1.0
    far = probability_map.copy()
    far[50:60, 50:60] = 128
    assert region_confidence(far, mask) == pytest.approx(1.0)
    assert np.isnan(region_confidence(probability_map, np.zeros_like(mask)))


@pytest.mark.parametrize("share", [0.25, 0.5, 0.75])
def test_the_kept_ratio_and_the_cap_hold(share):
    candidates = _candidates(2000, seed=1)
    loose = dict(positive_min_probability=0.6, empty_max_probability=0.4, min_confidence=0.9)
    loose |= dict(empty_max_pixel=1.0, positive_share=share)
    table = select(candidates, Bands(**loose))
    n_pos, n_empty = (table["kept"] == KEPT_POSITIVE).sum(), (table["kept"] == KEPT_EMPTY).sum()
    assert n_pos / (n_pos + n_empty) == pytest.approx(share, abs=0.01)
    capped = select(candidates, Bands(**loose, max_images=100))
    kept = capped[capped["kept"] != ""]
    assert len(kept) == 100
    assert (kept["kept"] == KEPT_POSITIVE).mean() == pytest.approx(share, abs=0.01)
    assert (capped["why"] == OVER_CAP).sum() == (n_pos + n_empty) - 100
    # The most confident are kept: every kept positive is at least as sure as every left one.
    pos = capped[capped["probability"] >= 0.6]
    pos = pos[(pos["region_confidence"] >= 0.9) & (pos["mask_pixels"] > 0)]
    assert (
        pos.loc[pos["kept"] == KEPT_POSITIVE, "probability"].min()
        >= pos.loc[pos["kept"] == "", "probability"].max()
    )


def test_a_siim_image_is_never_a_pseudo_label():
    candidates = _candidates()
    with pytest.raises(ValueError, match="are SIIM images"):
        select(candidates, Bands(), siim_images=[candidates["image_id"].iloc[3]])


def test_bad_bands_are_refused():
    with pytest.raises(ValueError, match="empty band must lie below"):
        Bands(positive_min_probability=0.3, empty_max_probability=0.5)
    with pytest.raises(ValueError, match="positive_share"):
        Bands(positive_share=1.0)
    with pytest.raises(ValueError, match="lack column"):
        select(_candidates().drop(columns="max_pixel"), Bands())
