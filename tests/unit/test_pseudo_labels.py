"""Selection of NIH pseudo-labels: confidence bands, the positive share, the cap, no SIIM image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptxseg.data.pseudo_labels import (
    KEPT_EMPTY,
    KEPT_POSITIVE,
    OVER_CAP,
    OVER_RATIO,
    UNCERTAIN,
    Bands,
    pixel_confidence,
    select,
)


def _candidates(n=200, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    probability = rng.random(n)
    return pd.DataFrame(
        {
            "image_id": [f"{k:08d}_000.png" for k in range(n)],
            "probability": probability,
            "confidence": rng.uniform(0.9, 1.0, n),
            "mask_pixels": np.where(probability > 0.5, rng.integers(0, 500, n), 0),
        }
    )


def test_pixel_confidence_is_the_mean_distance_from_a_coin_flip():
    maps = np.stack([np.full((4, 4), 255), np.full((4, 4), 0), np.full((4, 4), 128)])
    assert pixel_confidence(maps.astype(np.uint8)) == pytest.approx([1.0, 1.0, 128 / 255], abs=1e-6)


def test_only_confident_images_in_their_bands_are_kept():
    table = select(_candidates(), Bands(0.9, 0.05, 0.95, 0.5))
    positive, empty = table[table["kept"] == KEPT_POSITIVE], table[table["kept"] == KEPT_EMPTY]
    assert len(positive) and len(empty)
    assert (positive["probability"] >= 0.9).all() and (positive["mask_pixels"] > 0).all()
    assert (empty["probability"] <= 0.05).all()
    assert (table.loc[table["kept"] != "", "confidence"] >= 0.95).all()
    left = table[table["kept"] == ""]
    assert set(left["why"]) <= {UNCERTAIN, OVER_RATIO, OVER_CAP}
    # A positive-looking image whose pseudo-mask is empty is not a positive pseudo-label.
    empty_mask = (table["probability"] >= 0.9) & (table["mask_pixels"] == 0)
    assert (table.loc[empty_mask, "kept"] != KEPT_POSITIVE).all()


@pytest.mark.parametrize("share", [0.25, 0.5, 0.75])
def test_the_kept_ratio_and_the_cap_hold(share):
    candidates = _candidates(2000, seed=1)
    loose = Bands(0.6, 0.4, 0.9, share)
    table = select(candidates, loose)
    n_pos, n_empty = (table["kept"] == KEPT_POSITIVE).sum(), (table["kept"] == KEPT_EMPTY).sum()
    assert n_pos / (n_pos + n_empty) == pytest.approx(share, abs=0.01)
    capped = select(candidates, Bands(0.6, 0.4, 0.9, share, max_images=100))
    kept = capped[capped["kept"] != ""]
    assert len(kept) == 100
    assert (kept["kept"] == KEPT_POSITIVE).mean() == pytest.approx(share, abs=0.01)
    assert (capped["why"] == OVER_CAP).sum() == (n_pos + n_empty) - 100
    # The most confident are kept: every kept positive is at least as sure as every left one.
    pos = capped[capped["probability"] >= 0.6]
    pos = pos[(pos["confidence"] >= 0.9) & (pos["mask_pixels"] > 0)]
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
        select(_candidates().drop(columns="confidence"), Bands())
