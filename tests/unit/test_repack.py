"""Repacking: normalisation, sizes, masks, statistics, and the same result on any worker count."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ptxseg.data import overlap, repack
from ptxseg.data.siim import write_index
from ptxseg.io import dicom, rle
from ptxseg.io.png import read_grey


@pytest.mark.parametrize("method", ["clahe", "equalize", "none"])
def test_normalise_fills_the_range(method):
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(100, 10, (128, 128)), 60, 140).astype(np.uint8)
    out = repack.normalise_histogram(image, repack.Normalisation(method))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    # Monotone per pixel for global methods: order of intensities is kept.
    if method != "clahe":
        order = np.argsort(image.ravel(), kind="stable")
        assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)


def test_equalize_flattens_the_histogram():
    rng = np.random.default_rng(1)
    image = np.clip(rng.normal(100, 10, (256, 256)), 0, 255).astype(np.uint8)
    out = repack.normalise_histogram(image, repack.Normalisation("equalize"))
    assert abs(out.mean() - 127.5) < 8 and out.std() > 60


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="'gamma'"):
        repack.Normalisation("gamma")


def test_constant_image_is_left_alone():
    flat = np.full((16, 16), 77, np.uint8)
    assert np.array_equal(repack.normalise_histogram(flat, repack.Normalisation("none")), flat)


def test_resize_mask_keeps_majority_coverage():
    mask = np.zeros((64, 64), bool)
    mask[:, :40] = True
    small = repack.resize_mask(mask, 16)
    assert set(np.unique(small)) <= {0, 255}
    assert small[:, :10].all() and not small[:, 10:].any()


def _tiny_siim(tmp_path, sizes_px=96):
    rng = np.random.default_rng(3)
    train, test = tmp_path / "train", tmp_path / "test"
    rows = ["ImageId, EncodedPixels"]
    masks = {}
    for k in range(6):
        image = rng.integers(40, 200, (sizes_px, sizes_px)).astype(np.uint8)
        image_id = f"1.{k}"
        folder = train if k < 5 else test
        dicom.write_dicom(
            folder / image_id / f"{image_id}.dcm",
            image,
            sop_instance_uid=image_id,
            study_instance_uid="1",
            series_instance_uid="2",
            patient_id=f"p{k}",
            patient_age=40,
            patient_sex="F",
            view_position="PA",
        )
        if k < 5:
            mask = np.zeros((sizes_px, sizes_px), bool)
            if k % 2:
                mask[10:50, 20:70] = True
            masks[image_id] = mask
            rows.append(f"{image_id},{rle.encode(mask)}")
    (tmp_path / "train-rle.csv").write_text("\n".join(rows) + "\n")
    write_index(
        train, test, tmp_path / "train-rle.csv", tmp_path / "index.csv", tmp_path / "rejects.csv"
    )
    return masks


def _run(tmp_path, out, workers, sizes=(32, 64), method="clahe"):
    return repack.repack_siim(
        tmp_path / "index.csv",
        tmp_path / "train-rle.csv",
        tmp_path / out,
        sizes,
        repack.Normalisation(method),
        tmp_path / out / "manifest.csv",
        tmp_path / out / "stats.json",
        workers=workers,
        fingerprints_path=tmp_path / out / "fingerprints.npy",
    )


def test_repack_siim_writes_every_size_with_masks_and_stats(tmp_path):
    masks = _tiny_siim(tmp_path)
    stats = _run(tmp_path, "one", workers=1)
    manifest = repack.read_manifest(tmp_path / "one" / "manifest.csv")
    assert len(manifest) == 6 * 2
    for row in manifest.itertuples():
        image = read_grey(tmp_path / "one" / row.image)
        assert image.shape == (row.size, row.size)
        if row.split == "train":
            mask = read_grey(tmp_path / "one" / row.mask) > 0
            expected = masks[row.image_id]
            assert abs(mask.mean() - expected.mean()) < 0.02
        else:
            assert row.mask == ""
    saved = json.loads((tmp_path / "one" / "stats.json").read_text())
    assert saved == stats and set(saved) == {"32", "64"}
    # Stats are over the train images only, at each size.
    images = [read_grey(tmp_path / "one" / "64" / "train" / f"1.{k}.png") / 255.0 for k in range(5)]
    assert saved["64"]["mean"] == pytest.approx(np.mean(images), abs=1e-5)
    assert saved["64"]["std"] == pytest.approx(np.std(images), abs=1e-5)
    assert saved["64"]["images"] == 5


def test_two_workers_write_the_same_files_as_one(tmp_path):
    _tiny_siim(tmp_path)
    one = _run(tmp_path, "one", workers=1)
    two = _run(tmp_path, "two", workers=2)
    assert one == two
    for path in [*(tmp_path / "one").rglob("*.png"), tmp_path / "one" / "fingerprints.npy"]:
        twin = tmp_path / "two" / path.relative_to(tmp_path / "one")
        assert path.read_bytes() == twin.read_bytes()


def test_fingerprints_are_of_the_decoded_image_whatever_the_settings(tmp_path):
    _tiny_siim(tmp_path)
    _run(tmp_path, "clahe", workers=1)
    _run(tmp_path, "plain", workers=1, sizes=(32,), method="none")
    index = pd.read_csv(tmp_path / "index.csv", dtype=str)
    table = overlap.read_fingerprints(tmp_path / "clahe" / "fingerprints.npy")
    assert table["image_id"].tolist() == index["image_id"].tolist()  # in index order
    assert table["split"].tolist() == index["split"].tolist()
    for row, entry in zip(index.itertuples(), table, strict=True):
        decoded = dicom.read_image(row.path)[0]  # before normalisation
        assert np.array_equal(entry["fingerprint"], overlap.fingerprint(decoded))
    other = tmp_path / "plain" / "fingerprints.npy"
    assert other.read_bytes() == (tmp_path / "clahe" / "fingerprints.npy").read_bytes()


def test_unreadable_dicom_names_the_file(tmp_path):
    _tiny_siim(tmp_path)
    victim = pd.read_csv(tmp_path / "index.csv", dtype=str).loc[0, "path"]
    with open(victim, "wb") as handle:  # replaced after indexing, e.g. by a failing disk
        handle.write(b"not a dicom")
    with pytest.raises(dicom.DicomError, match=victim):
        _run(tmp_path, "bad", workers=1)
