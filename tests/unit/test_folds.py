"""SIIM folds: stratified on pneumothorax, grouped by patient (the NIH patient where the content
match knows it), reproducible."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pandas as pd
import pytest

from ptxseg.data.folds import (
    FoldError,
    assign_folds,
    fold_summary,
    make_folds,
    patient_groups,
    write_folds,
)


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


def reanonymised_index(n_patients=40, seed=0):
    """SIIM as released: every image its own PatientID. Behind it, NIH patients with 1 to 4
    images each (follow-ups); returns the index and the NIH/SIIM overlap table."""
    rng = np.random.default_rng(seed)
    rows, overlap = [], []
    for patient in range(n_patients):
        for image in range(int(rng.integers(1, 5))):
            image_id = f"1.2.{patient}.{image}"
            rows.append(
                {
                    "image_id": image_id,
                    "split": "train",
                    "patient_id": f"uuid-{patient}-{image}",
                    "has_pneumothorax": int(rng.random() < 0.35),
                }
            )
            nih_image = f"{patient + 1:08d}_{image:03d}"
            overlap.append((nih_image, str(patient + 1), image_id, "train", 0.001))
    rows.append({"image_id": "t", "split": "test", "patient_id": "q", "has_pneumothorax": pd.NA})
    overlap.append(("99999999_000", "1", "t", "test", 0.002))  # a test image of patient 1
    columns = ["nih_image_id", "nih_patient_id", "siim_image_id", "siim_split", "distance"]
    return pd.DataFrame(rows), pd.DataFrame(overlap, columns=columns).astype(str)


def test_no_nih_patient_in_two_folds_though_siim_patient_ids_differ():
    index, overlap = reanonymised_index()
    folds = make_folds(index, n_folds=5, group_by="patient", seed=1, overlap=overlap)
    nih = folds.merge(overlap, left_on="image_id", right_on="siim_image_id")
    assert len(nih) == len(folds) and (folds["group_source"] == "nih").all()
    assert (nih["group_patient"] == nih["nih_patient_id"]).all()
    assert (nih.groupby("nih_patient_id")["fold"].nunique() == 1).all()
    assert (folds["group"] == "nih:" + folds["group_patient"]).all()
    assert set(folds["fold"]) == set(range(5))
    # The planted data has follow-ups that the SIIM PatientIDs alone would split.
    siim_only = make_folds(index, n_folds=5, group_by="patient", seed=1)
    assert (siim_only["group_source"] == "siim").all()
    split = siim_only.merge(overlap, left_on="image_id", right_on="siim_image_id")
    assert (split.groupby("nih_patient_id")["fold"].nunique() > 1).any()


def test_unmatched_images_keep_their_siim_patient_and_links_chain():
    train = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d", "e", "f"],
            "patient_id": ["s1", "s1", "s2", "s3", "", "s4"],
        }
    )
    columns = ["nih_image_id", "nih_patient_id", "siim_image_id", "siim_split", "distance"]
    overlap = pd.DataFrame(
        [
            ("n1", "7", "a", "train", "0.002"),  # a: NIH patient 7, and SIIM patient s1 with b
            ("n2", "8", "c", "train", "0.001"),  # c matches two NIH images of two patients:
            ("n3", "7", "c", "train", "0.003"),  # the closer one is its patient, both link it
        ],
        columns=columns,
    )
    groups = patient_groups(train, overlap).set_index(train["image_id"])
    assert groups["group_source"].to_dict() == dict(
        a="nih", b="siim", c="nih", d="siim", e="siim", f="siim"
    )
    assert groups["group_patient"].to_dict() == dict(a="7", b="s1", c="8", d="s3", e="e", f="s4")
    # a-b through s1, a-c through NIH 7: one group, named by its smallest NIH patient.
    assert groups["group"].to_dict() == {
        "a": "nih:7",
        "b": "nih:7",
        "c": "nih:7",
        "d": "siim:s3",
        "e": "siim:e",
        "f": "siim:s4",
    }


def test_an_overlap_naming_unknown_train_images_is_out_of_date():
    index, overlap = reanonymised_index(n_patients=10)
    stale = pd.concat([overlap, overlap.iloc[[0]].assign(siim_image_id="gone")])
    with pytest.raises(FoldError, match="1 SIIM train image.*'gone'.*exclude_siim_from_nih"):
        make_folds(index, n_folds=2, group_by="patient", seed=1, overlap=stale)


def test_grouping_by_image_ignores_the_overlap():
    index, overlap = reanonymised_index()
    folds = make_folds(index, n_folds=5, group_by="image", seed=1, overlap=overlap)
    assert (folds["group"] == folds["image_id"]).all()
    assert (folds["group_source"] == "image").all()


def test_the_summary_counts_the_images_that_share_a_patient(tmp_path):
    index, overlap = reanonymised_index(n_patients=30)
    index.to_csv(tmp_path / "index.csv", index=False)
    overlap.to_csv(tmp_path / "overlap.csv", index=False)
    folds = write_folds(
        tmp_path / "index.csv",
        tmp_path / "folds.csv",
        n_folds=3,
        group_by="patient",
        seed=1,
        overlap_path=tmp_path / "overlap.csv",
        summary_path=tmp_path / "summary.json",
    )
    written = pd.read_csv(tmp_path / "folds.csv", dtype=str)
    assert list(written.columns) == [
        "image_id",
        "fold",
        "has_pneumothorax",
        "group",
        "group_patient",
        "group_source",
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    per_patient = overlap[overlap["siim_split"] == "train"].groupby("nih_patient_id").size()
    assert summary == fold_summary(folds, "patient")
    assert summary["images"] == len(per_patient.index.repeat(per_patient))
    assert summary["images_sharing_a_group"] == per_patient[per_patient > 1].sum()
    assert summary["images_sharing_a_nih_patient"] == summary["images_sharing_a_group"] > 0
    assert summary["groups"] == summary["nih_patients"] == len(per_patient)
    assert summary["images_grouped_by_nih_patient"] == summary["images"]
    assert sum(summary["images_per_fold"].values()) == summary["images"]
