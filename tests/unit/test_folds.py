"""SIIM folds: stratified on pneumothorax, grouped by patient, reproducible."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pandas as pd
import pytest

from ptxseg.data.folds import FoldError, assign_folds, make_folds


@pytest.mark.realdata
def test_real_labels_each_image_its_own_group(real_data):
    with gzip.open(real_data / "labels" / "siim-train-rle.csv.gz", "rt", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        positive = {}
        for image_id, encoded in reader:
            positive[image_id] = positive.get(image_id, False) or encoded.strip() != "-1"
    ids = np.array(sorted(positive))
    labels = np.array([positive[i] for i in ids], dtype=int)
    assert len(ids) == 12047 and labels.sum() == 2669
    folds = assign_folds(labels, ids, n_folds=5, seed=2019)
    overall = labels.mean()
    for fold in range(5):
        held_out = folds == fold
        assert abs(labels[held_out].mean() - overall) < 0.01
        assert abs(held_out.sum() - len(ids) / 5) <= 2
    assert np.array_equal(folds, assign_folds(labels, ids, n_folds=5, seed=2019))


def synthetic_index(n_patients=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(n_patients):
        for image in range(int(rng.integers(1, 4))):
            rows.append(
                {
                    "image_id": f"{patient}.{image}",
                    "split": "train",
                    "patient_id": f"p{patient}",
                    "has_pneumothorax": int(rng.random() < 0.35),
                }
            )
    rows.append({"image_id": "t", "split": "test", "patient_id": "q", "has_pneumothorax": pd.NA})
    return pd.DataFrame(rows)


def test_no_patient_in_two_folds_and_test_rows_left_out():
    folds = make_folds(synthetic_index(), n_folds=5, group_by="patient", seed=1)
    assert "t" not in set(folds["image_id"])
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    assert set(folds["fold"]) == set(range(5))


def test_grouping_by_image_may_split_a_patient():
    folds = make_folds(synthetic_index(), n_folds=5, group_by="image", seed=1)
    assert (folds["group"] == folds["image_id"]).all()


def test_seed_changes_the_folds_reproducibly():
    index = synthetic_index()
    a = make_folds(index, 5, "patient", seed=1)
    assert a.equals(make_folds(index, 5, "patient", seed=1))
    assert not a["fold"].equals(make_folds(index, 5, "patient", seed=2)["fold"])


def test_more_folds_than_positive_groups_is_a_clear_error():
    labels = np.array([1, 1, 0, 0, 0, 0])
    with pytest.raises(FoldError, match="folds.n_folds is 3, but there are only 2 positive"):
        assign_folds(labels, np.arange(6), n_folds=3, seed=0)
