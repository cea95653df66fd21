"""The cross-fitted headline: each fold's choices are the search's own on the other folds, and the
fold's images are scored at their own size by them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_ensemble import AREAS, BOTTOMS, NATIVE, TOPS, search, synthetic_oof, write_oof

from ptxseg.ensemble.nested import bootstrap_interval
from ptxseg.ensemble.oof import Grid
from ptxseg.scoring.cascade import binarise
from ptxseg.train.metrics import competition_score


def test_each_folds_choice_is_the_search_on_the_other_folds(tmp_path):
    truth, good, noise = synthetic_oof(n=40, seed=3)
    labels = truth.any((1, 2))
    rng = np.random.default_rng(5)
    classifier = {
        "coin": rng.random(40),
        "seer": np.clip(np.where(labels, 0.65, 0.35) + rng.normal(0, 0.15, 40), 0, 1),
    }
    segmenters, classifiers = write_oof(
        tmp_path, truth, {"noise_net": noise, "good_net": good}, classifier
    )
    grid = Grid(gates=(0.0, 0.5), tops=tuple(TOPS), min_areas=tuple(AREAS), bottoms=tuple(BOTTOMS))
    result = search(tmp_path, segmenters, classifiers, grid, chunk=64)
    nested = {f.fold: f for f in result.searched.oof.nested_folds}
    images = pd.read_csv(tmp_path / "i.csv", dtype={"image_id": str})
    labels_64 = truth.repeat(2, axis=1).repeat(2, axis=2)
    for held_out in (0, 1):
        other = 1 - held_out
        alone = tmp_path / f"without{held_out}"
        alone.mkdir()
        for name in ("repack", "train-rle.csv", "siim_index.csv"):
            (alone / name).symlink_to(tmp_path / name)
        only = search(
            alone,
            {a: {other: folds[other]} for a, folds in segmenters.items()},
            {a: {other: files[other]} for a, files in classifiers.items()},
            grid,
            chunk=64,
        )
        choice = nested[held_out]
        assert choice.gate_weights == only.gate_weights
        assert choice.segmenter_weights == only.segmenter_weights
        assert choice.cascade == only.cascade
        # The held-out fold's images, scored by that choice at their own size.
        fold = images[images["fold"] == held_out]
        cascade = choice.cascade
        weights = choice.segmenter_weights
        maps = {"noise_net": noise, "good_net": good}
        gate = choice.gate_weights
        for row in fold.itertuples():
            k = int(row.image_id.split(".")[-1])
            blended = np.rint(
                sum(weights[a] * maps[a][k].astype(np.float32) for a in weights)
                / sum(weights.values())
            ).astype(np.uint8)
            probability = sum(gate[a] * classifier[a][k] for a in gate) / sum(gate.values())
            predicted = binarise(blended, cascade, probability, out_shape=(NATIVE, NATIVE))
            expected = competition_score(predicted[None], labels_64[k][None])
            assert row.dice_native_nested == pytest.approx(expected, abs=1e-9)
        assert choice.score == pytest.approx(fold["dice_native_nested"].mean())


def test_the_interval_is_a_percentile_bootstrap_of_the_mean():
    values = np.r_[np.ones(30), np.zeros(10)]
    low, high = bootstrap_interval(values, seed=1)
    assert low < 0.75 < high and low > 0.55 and high < 0.9
    assert bootstrap_interval(values, seed=1) == (low, high)  # seeded: a rerun gives the same
    assert bootstrap_interval(np.ones(5)) == (1.0, 1.0)
