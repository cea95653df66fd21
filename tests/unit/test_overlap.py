"""The NIH/SIIM overlap: fingerprints, the two-step match, the demo's planted copies, real images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptxseg.data import nih, overlap, repack, siim
from ptxseg.data.demo import DemoSpec, write_nih_demo, write_siim_demo
from ptxseg.io import dicom
from ptxseg.io.png import read_grey


def _smooth_images(count: int, seed: int, size: int = 128) -> np.ndarray:
    """Distinct smooth grey images (blurred noise), like radiographs at fingerprint scale."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        noise = rng.normal(0, 1, (size // 8, size // 8)).astype(np.float32)
        smooth = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
        images.append(np.clip(128 + 40 * smooth, 0, 255).astype(np.uint8))
    return np.stack(images)


def test_fingerprint_is_the_area_mean_of_the_decoded_image():
    image = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    reduced = overlap.fingerprint(image)
    assert reduced.dtype == np.float16 and reduced.shape == (32, 32)
    means = image.astype(np.float64).reshape(32, 2, 32, 2).mean(axis=(1, 3))
    assert np.allclose(reduced, means, atol=0.13)  # float16 keeps a grey level to 1/8
    with pytest.raises(ValueError, match="2-D grey image"):
        overlap.fingerprint(np.zeros((8, 8, 3), np.uint8))


def test_distance_ignores_linear_grey_changes_but_not_a_shift():
    image = _smooth_images(1, seed=1, size=256)[0]
    brighter = np.clip(image.astype(np.float64) * 0.8 + 30, 0, 255).round().astype(np.uint8)
    shifted = np.roll(image, 4, axis=1)
    a, b, c = overlap.standardise(
        np.stack([overlap.fingerprint(i) for i in (image, brighter, shifted)])
    )
    assert np.linalg.norm(a) == pytest.approx(1.0)
    assert np.linalg.norm(a - b) < overlap.MATCH_DISTANCE / 3
    assert np.linalg.norm(a - c) > overlap.MATCH_DISTANCE


def test_match_finds_the_copies_and_nothing_else_in_any_chunking():
    images = _smooth_images(40, seed=2, size=256)
    prints = np.stack([overlap.fingerprint(i) for i in images])
    # References: noisy copies of images 5, 17 and 33 (17 twice) and four unrelated images.
    rng = np.random.default_rng(3)
    sources = [33, 5, 17, 17]
    copies = [
        np.clip(images[k] + rng.normal(0, 1, images[k].shape), 0, 255).round().astype(np.uint8)
        for k in sources
    ]
    reference = np.stack([overlap.fingerprint(i) for i in copies + list(_smooth_images(4, seed=4))])
    expected = sorted(zip(sources, range(len(sources)), strict=True))
    for chunk in (1, 7, 4096):
        rows, partners, distances = overlap.match(prints, reference, chunk=chunk)
        assert sorted(zip(rows.tolist(), partners.tolist(), strict=True)) == expected
        assert (distances <= overlap.MATCH_DISTANCE).all()
        assert list(rows) == sorted(rows)
    empty = overlap.match(prints[:0], reference)
    assert all(len(part) == 0 for part in empty)
    assert all(len(part) == 0 for part in overlap.match(prints, reference[:0]))


def test_fingerprint_files_round_trip_and_others_are_refused(tmp_path):
    table = overlap.fingerprint_table(
        ["a", "bb"], ["train", "test"], np.ones((2, 32, 32), np.float16)
    )
    overlap.write_fingerprints(tmp_path / "f.npy", table)
    back = overlap.read_fingerprints(tmp_path / "f.npy")
    assert back["image_id"].tolist() == ["a", "bb"] and back["split"].tolist() == ["train", "test"]
    np.save(tmp_path / "other.npy", np.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match=r"other\.npy: not a fingerprint file"):
        overlap.read_fingerprints(tmp_path / "other.npy")


SPEC = DemoSpec(
    siim_train=14,
    siim_test=5,
    positive_fraction=0.5,
    max_images_per_patient=2,
    image_size=256,
    nih_images=16,
    nih_rgba=2,
    nih_overlap=0.3,
)


def _index_and_repack(root, workers=2):
    """The data rules' file functions on a demo set in ``root``: indexes, repacks, the overlap."""
    params = repack.Normalisation("clahe")
    siim.write_index(
        root / "siim" / "dicom-images-train",
        root / "siim" / "dicom-images-test",
        root / "siim" / "train-rle.csv",
        root / "siim_index.csv",
        root / "siim_rejects.csv",
    )
    nih.write_index(
        root / "nih" / "images",
        root / "nih" / "Data_Entry_2017.csv",
        0.25,
        1,
        root / "nih_index.csv",
        root / "nih_rejects.csv",
    )
    repack.repack_siim(
        root / "siim_index.csv",
        root / "siim" / "train-rle.csv",
        root / "rs",
        [32],
        params,
        root / "rs" / "manifest.csv",
        root / "rs" / "stats.json",
        workers=workers,
        fingerprints_path=root / "rs" / "fingerprints.npy",
    )
    repack.repack_nih(
        root / "nih_index.csv",
        root / "rn",
        32,
        params,
        root / "rn" / "manifest.csv",
        root / "rn" / "stats.json",
        workers=workers,
        fingerprints_path=root / "rn" / "fingerprints.npy",
    )
    return overlap.exclude_siim_from_nih(
        root / "nih_index.csv",
        root / "rn" / "fingerprints.npy",
        root / "rs" / "fingerprints.npy",
        root / "overlap.csv",
        root / "pretrain_index.csv",
    )


def test_the_match_finds_exactly_the_demo_copies(tmp_path, caplog):
    write_siim_demo(tmp_path / "siim", SPEC, seed=3, workers=2)
    write_nih_demo(tmp_path / "nih", SPEC, seed=3, workers=2)
    caplog.set_level("INFO")
    found = _index_and_repack(tmp_path)

    planted = pd.read_csv(tmp_path / "nih" / "siim_copies.csv", dtype=str)
    # ceil(0.3 * 14) train and ceil(0.3 * 5) test images; one of the RGBA PNGs is a copy.
    assert planted["siim_split"].value_counts().to_dict() == {"train": 5, "test": 2}
    rgba = [_png_colour_type(tmp_path / "nih" / "images" / n) for n in planted["image_index"]]
    assert 6 in rgba
    expected = {
        (name.removesuffix(".png"), image_id, split)
        for name, image_id, split in planted.itertuples(index=False)
    }
    assert (
        set(
            found[["nih_image_id", "siim_image_id", "siim_split"]].itertuples(
                index=False, name=None
            )
        )
        == expected
    )
    assert len(found) == len(expected)  # every copy once, nothing else
    assert (found["distance"] < overlap.MATCH_DISTANCE / 3).all()

    written = pd.read_csv(tmp_path / "overlap.csv", dtype={"nih_patient_id": str})
    assert written["nih_image_id"].tolist() == found["nih_image_id"].tolist()
    index = nih.read_index(tmp_path / "nih_index.csv")
    kept = nih.read_index(tmp_path / "pretrain_index.csv")
    assert list(kept.columns) == list(index.columns)
    assert set(kept["image_id"]) == set(index["image_id"]) - {e[0] for e in expected}
    patients = index.set_index("image_id")["patient_id"]
    assert (written["nih_patient_id"] == patients[written["nih_image_id"]].to_numpy()).all()
    assert "7 of 19 SIIM images (test 2, train 5) match 7 NIH images" in caplog.text
    assert "NIH images for pretraining: 9 of 16 (7 removed as SIIM images" in caplog.text


def _png_colour_type(path) -> int:
    with open(path, "rb") as handle:
        return handle.read(26)[25]


def test_an_index_image_without_fingerprint_is_an_error(tmp_path):
    index = pd.DataFrame(
        {"image_id": ["00000001_000"], "image_index": ["00000001_000.png"], "patient_id": ["1"]}
    )
    index.to_csv(tmp_path / "index.csv", index=False)
    empty = overlap.fingerprint_table([], [], np.zeros((0, 32, 32), np.float16))
    overlap.write_fingerprints(tmp_path / "nih.npy", empty)
    overlap.write_fingerprints(tmp_path / "siim.npy", empty)
    with pytest.raises(
        ValueError, match=r"nih\.npy: no fingerprint for 1 image\(s\).*00000001_000"
    ):
        overlap.exclude_siim_from_nih(
            tmp_path / "index.csv",
            tmp_path / "nih.npy",
            tmp_path / "siim.npy",
            tmp_path / "overlap.csv",
            tmp_path / "kept.csv",
        )
    assert not (tmp_path / "kept.csv").exists()


# The real NIH sample, ten of its PNGs re-encoded as SIIM-style DICOMs (JPEG baseline), the RGBA one
# among them, beside the ten real SIIM DICOMs (NIH images too, but not of this sample).
_COPIED = (
    "00000100_000",  # RGBA
    "00000493_000",
    "00005318_000",
    "00006067_000",
    "00008947_000",
    "00012975_000",
    "00013122_000",
    "00019367_000",
    "00019534_000",
    "00029118_000",
)


@pytest.mark.realdata
@pytest.mark.parametrize("quality", [90, 50])  # 90: the release's tables; 50: far coarser
def test_real_nih_pngs_reencoded_as_siim_dicoms_match_their_originals(
    real_data, tmp_path, quality, caplog
):
    folder = real_data / "nih-cxr14-sample"
    nih.write_index(
        folder,
        folder / "Data_Entry_2017_v2020_sample.csv",
        0.2,
        1,
        tmp_path / "nih_index.csv",
        tmp_path / "nih_rejects.csv",
    )
    params = repack.Normalisation("clahe")
    repack.repack_nih(
        tmp_path / "nih_index.csv",
        tmp_path / "rn",
        32,
        params,
        tmp_path / "rn" / "manifest.csv",
        tmp_path / "rn" / "stats.json",
        fingerprints_path=tmp_path / "rn" / "fingerprints.npy",
    )
    tasks = []
    for k, name in enumerate(_COPIED):
        path = tmp_path / "copies" / f"1.2.826.0.1.3680043.8.498.{k}.dcm"
        dicom.write_dicom(
            path,
            read_grey(folder / f"{name}.png"),
            sop_instance_uid=path.stem,
            study_instance_uid="1.2.826.0.1.3680043.8.498.100",
            series_instance_uid="1.2.826.0.1.3680043.8.498.101",
            patient_id=name,
            patient_age=40,
            patient_sex="F",
            view_position="PA",
            jpeg_quality=quality,
        )
        tasks.append((path.stem, path, "train" if k % 3 else "test"))
    tasks += [(p.stem, p, "train") for p in sorted((real_data / "siim-sample").glob("*.dcm"))]
    repack.run_repack(
        [
            repack.RepackTask(
                image_id, str(path), "dicom", split, None, str(tmp_path / "rs"), (32,), params
            )
            for image_id, path, split in tasks
        ],
        tmp_path / "rs",
        tmp_path / "rs" / "manifest.csv",
        tmp_path / "rs" / "stats.json",
        stats_from=None,
        fingerprints_path=tmp_path / "rs" / "fingerprints.npy",
    )
    caplog.set_level("INFO")
    found = overlap.exclude_siim_from_nih(
        tmp_path / "nih_index.csv",
        tmp_path / "rn" / "fingerprints.npy",
        tmp_path / "rs" / "fingerprints.npy",
        tmp_path / "overlap.csv",
        tmp_path / "pretrain_index.csv",
    )
    expected = {(name, f"1.2.826.0.1.3680043.8.498.{k}") for k, name in enumerate(_COPIED)}
    assert set(zip(found["nih_image_id"], found["siim_image_id"], strict=True)) == expected
    assert len(found) == len(_COPIED)  # the real SIIM DICOMs and the other 20 PNGs: no match
    assert found["distance"].max() < overlap.MATCH_DISTANCE / 3
    kept = nih.read_index(tmp_path / "pretrain_index.csv")
    assert len(kept) == 20 and not set(kept["image_id"]) & set(_COPIED)
    # The margin on the other side: every other pair is far beyond the match distance.
    nih_prints = overlap.read_fingerprints(tmp_path / "rn" / "fingerprints.npy")
    siim_prints = overlap.read_fingerprints(tmp_path / "rs" / "fingerprints.npy")
    a = overlap.standardise(nih_prints["fingerprint"])
    b = overlap.standardise(siim_prints["fingerprint"])
    distances = np.linalg.norm(a[:, None] - b[None], axis=2)
    pairs = set(zip(found["nih_image_id"], found["siim_image_id"], strict=True))
    unmatched = [
        distances[i, j]
        for i, n in enumerate(nih_prints["image_id"])
        for j, s in enumerate(siim_prints["image_id"])
        if (n, s) not in pairs
    ]
    assert min(unmatched) > 20 * overlap.MATCH_DISTANCE
