"""Every SIIM-ACR distribution, rebuilt from the real sample files, found and indexed; its faults
caught before any pixel is read, each message naming the folder or file and the fix."""

from __future__ import annotations

import gzip
import logging
import os

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from siim_layouts import (
    COMPETITION_HEADER,
    competition,
    iafoss,
    label_csv,
    mask_of,
    mirror,
    nest,
    real_sample,
    vbookshelf,
)

from ptxseg import cli
from ptxseg import config as cfg
from ptxseg.data import siim
from ptxseg.data.layouts import LayoutError, label_dialect, resolve
from ptxseg.data.repack import Normalisation, read_manifest, repack_siim, resize_mask
from ptxseg.io import rle
from ptxseg.io.dicom import DicomError
from ptxseg.scoring.native import NativeTruth

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def sample(real_data):
    return real_sample(real_data)


def split(sample, n_test=3):
    return sample.ids[:-n_test], sample.ids[-n_test:]


def index(tmp_path, layout, **kwargs):
    out = tmp_path / "out"
    frame = siim.write_layout_index(
        layout,
        out / "index.csv",
        out / "rejects.csv",
        labels_path=out / "labels.csv",
        **kwargs,
    )
    return frame, siim.read_rle_csv(out / "labels.csv"), out


def assert_labels_are_the_real_ones(labels, sample, ids):
    assert set(labels) == set(ids)
    for image_id in ids:
        real = [c for c in sample.rows[image_id] if c != rle.EMPTY]
        assert labels[image_id].rles == real


def test_the_mirror_with_its_twin_copy_is_read_once_with_one_note(tmp_path, sample, caplog):
    train, test = split(sample)
    root = mirror(tmp_path / "siim", sample, train, test, twin=True)
    layout = resolve({"root": str(root)})
    assert layout.name == "mirror" and layout.dialect == "siim"
    assert len(layout.train) == 2 and any(
        "identical copies of train-rle.csv" in n for n in layout.notes
    )
    with caplog.at_level(logging.INFO):
        frame, labels, _ = index(tmp_path, layout)
    assert sorted(frame.loc[frame["split"] == "train", "image_id"]) == sorted(train)
    assert sorted(frame.loc[frame["split"] == "test", "image_id"]) == sorted(test)
    assert all(str(root / "pneumothorax") not in p for p in frame["path"])
    twin_notes = [r.message for r in caplog.records if "identical copies of files" in r.message]
    assert len(twin_notes) == 1 and f"{len(sample.ids)} file(s)" in twin_notes[0]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert_labels_are_the_real_ones(labels, sample, train)


def test_two_different_files_with_one_image_id_name_both(tmp_path, sample):
    train, test = split(sample)
    root = mirror(tmp_path / "siim", sample, train, test, twin=True)
    victim = next((root / "pneumothorax" / "dicom-images-train").rglob(f"{train[0]}.dcm"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"\0" * 10)
    first = next((root / "dicom-images-train").rglob(f"{train[0]}.dcm"))
    with pytest.raises(DicomError, match="differ") as error:
        index(tmp_path, resolve({"root": str(root)}))
    assert str(victim) in str(error.value) and str(first) in str(error.value)


def test_two_different_label_files_name_both(tmp_path, sample):
    train, test = split(sample)
    root = mirror(tmp_path / "siim", sample, train, test, twin=True)
    label_csv(root / "pneumothorax" / "train-rle.csv", sample, train[1:])
    with pytest.raises(LayoutError, match="two different train-rle.csv files") as error:
        resolve({"root": str(root)})
    assert str(root / "train-rle.csv") in str(error.value)


def test_flat_and_symlinked_folders(tmp_path, sample):
    """The path keys name a flat folder of DICOMs; a folder of symlinks to the mirror's
    folders is a mirror (Path.rglob would find nothing in it)."""
    train, test = split(sample)
    flat = tmp_path / "flat"
    flat.mkdir()
    for image_id in train:
        os.symlink(sample.paths[image_id], flat / f"{image_id}.dcm")
    real = mirror(tmp_path / "real", sample, train, test)
    links = tmp_path / "links"
    links.mkdir()
    for name in ("dicom-images-train", "dicom-images-test", "train-rle.csv"):
        os.symlink(real / name, links / name)
    # a link back up is walked once
    os.symlink(real / "dicom-images-train", real / "dicom-images-train" / "loop")
    by_keys = resolve(
        {
            "train_dicom_dir": str(flat),
            "test_dicom_dir": str(real / "dicom-images-test"),
            "train_rle_csv": str(real / "train-rle.csv"),
        }
    )
    assert by_keys.name == "folders"
    frame, _, _ = index(tmp_path / "a", by_keys)
    assert sorted(frame.loc[frame["split"] == "train", "image_id"]) == sorted(train)
    frame, labels, _ = index(tmp_path / "b", resolve({"root": str(links)}))
    assert sorted(frame.loc[frame["split"] == "train", "image_id"]) == sorted(train)
    assert_labels_are_the_real_ones(labels, sample, train)


def test_the_competition_download_alone_says_where_the_train_images_are(tmp_path, sample):
    train, test = split(sample)
    root = competition(tmp_path / "kaggle", sample, test, train)
    with pytest.raises(LayoutError) as error:
        resolve({"root": str(root)})
    message = str(error.value)
    assert str(root / "stage_2_images") in message and "no train images" in message
    assert "dicom-images-train" in message and "data.siim.root" in message


def test_the_competition_download_beside_a_mirror(tmp_path, sample):
    """Train DICOMs from the mirror (its test folder too: stage_2_train.csv labels the stage-1
    test images), test images from stage_2_images, labels from stage_2_train.csv."""
    ids = sample.ids
    mirror_train, mirror_test, stage2 = ids[:-5], ids[-5:-3], ids[-3:]
    kaggle = competition(tmp_path / "kaggle", sample, stage2, mirror_train + mirror_test)
    assert (kaggle / "stage_2_train.csv").read_text().startswith(COMPETITION_HEADER + "\n")
    siim_mirror = mirror(tmp_path / "mirror", sample, mirror_train, mirror_test)
    layout = resolve({"root": [str(kaggle), str(siim_mirror)]})
    assert layout.name == "competition + mirror" and layout.dialect == "competition"
    assert layout.labels == str(kaggle / "stage_2_train.csv")
    assert any("stage_2_train.csv" in n and "dicom-images-test" in n for n in layout.notes)
    frame, labels, out = index(tmp_path, layout)
    test_ids = sorted(frame.loc[frame["split"] == "test", "image_id"])
    assert test_ids == sorted(p.stem for p in (kaggle / "stage_2_images").iterdir())
    assert all(i.startswith("ID_") for i in test_ids)
    assert_labels_are_the_real_ones(labels, sample, mirror_train + mirror_test)
    # the canonical file is in the release's dialect, whatever the download's was
    assert (out / "labels.csv").read_text().startswith("ImageId, EncodedPixels\n")


@pytest.mark.parametrize(
    ("kind", "size"), [("vbookshelf", 1024), ("iafoss", 1024), ("iafoss", 256)]
)
def test_png_sets_keep_regions_and_state_their_mask_size(tmp_path, sample, kind, size):
    train, test = split(sample)
    root = tmp_path / kind
    if kind == "vbookshelf":
        vbookshelf(root, sample, train, test)
    else:
        iafoss(root, sample, train, test, size)
    layout = resolve({"root": str(root)})
    assert (layout.name, layout.image_kind, layout.mask_size) == (kind, "png", size)
    config = cfg.validate(
        {
            "data": {
                "source": "files",
                "siim": {"root": str(root)},
                "nih": {"image_dir": "unused", "labels_csv": "unused"},
            },
            "repack": {"sizes": [512]},
        }
    )
    enlarged = [n for n in cfg.siim_layout(config).notes if "enlarge" in n]
    assert enlarged == (
        []
        if size >= 512
        else [
            f"the images and masks come at {size} px: the repacks at 512 px enlarge them, adding no detail"
        ]
    )
    frame, labels, out = index(tmp_path, layout)
    trained = frame[frame["split"] == "train"].set_index("image_id")
    assert sorted(trained.index) == sorted(train)
    assert sorted(frame.loc[frame["split"] == "test", "image_id"]) == sorted(test)
    assert set(trained["rows"]) == {size}
    for image_id in train:
        mask = mask_of(sample, image_id) > 0
        if size != 1024:
            mask = resize_mask(mask, size) > 0
        regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
        assert trained.loc[image_id, "n_regions"] == regions == len(labels[image_id].rles)
        assert trained.loc[image_id, "has_pneumothorax"] == int(mask.any())
        decoded = rle.decode_union(labels[image_id].rles, (size, size))
        assert np.array_equal(decoded, mask)
    positives = [i for i in train if mask_of(sample, i).any()]
    assert positives, "the sample has no positive image: the region test would prove nothing"
    truth = NativeTruth(out / "labels.csv", out / "index.csv")
    if size == 1024:
        assert "1024 px" in truth.source and "not comparable" not in truth.source
    else:
        assert "256 px" in truth.source and "not the competition's 1024 px" in truth.source
    # the repack reads the index's PNGs and draws the masks from the canonical labels
    repack_siim(
        out / "index.csv",
        out / "labels.csv",
        tmp_path / "repack",
        [64],
        Normalisation(),
        tmp_path / "repack" / "manifest.csv",
        tmp_path / "repack" / "stats.json",
    )
    manifest = read_manifest(tmp_path / "repack" / "manifest.csv")
    assert len(manifest) == len(sample.ids)


def test_dialects_are_both_read(tmp_path, real_data):
    """The whole real label file (12,954 rows, 12,047 images), and the same rows under the
    competition's header without the space, as stage_2_train.csv has them."""
    with gzip.open(real_data / "labels" / "siim-train-rle.csv.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    spaced, plain = tmp_path / "train-rle.csv", tmp_path / "stage_2_train.csv"
    spaced.write_text(text)
    plain.write_text(text.replace("ImageId, EncodedPixels", COMPETITION_HEADER, 1))
    assert label_dialect(spaced) == "siim" and label_dialect(plain) == "competition"
    first, second = siim.read_rle_csv(spaced), siim.read_rle_csv(plain)
    assert len(first) == 12047 and sum(len(v.lines) for v in first.values()) == 12954
    assert {k: v.rles for k, v in first.items()} == {k: v.rles for k, v in second.items()}


def test_labels_of_other_images_give_the_reason_not_an_empty_index(tmp_path, sample):
    """stop_on_rejects: false, every label row for another image: the index refuses, with why."""
    train, test = split(sample)
    root = mirror(tmp_path / "siim", sample, train, test)
    label_csv(root / "train-rle.csv", sample, test)  # the labels of other images
    layout = resolve({"root": str(root)})
    with pytest.raises(siim.EmptyTrainError, match="names none of these images") as error:
        index(tmp_path, layout, stop_on_rejects=False)
    assert "folds" not in str(error.value) and "stop_on_rejects: false would not help" in str(
        error.value
    )
    assert (tmp_path / "out" / "rejects.csv").exists()
    assert not (tmp_path / "out" / "index.csv").exists()


def write_config(tmp_path, siim_section, stop_on_rejects=True):
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "source": "files",
                    "stop_on_rejects": stop_on_rejects,
                    "siim": siim_section,
                    "nih": {"image_dir": str(tmp_path), "labels_csv": str(path)},
                }
            }
        )
    )
    return path


def test_check_data_finds_a_ready_download(tmp_path, sample, capsys):
    train, test = split(sample)
    root = mirror(tmp_path / "siim", sample, train, test, twin=True)
    assert cli.main(["check-data", str(write_config(tmp_path, {"root": str(root)}))]) == 0
    out = capsys.readouterr().out
    assert "layout 'mirror'" in out and "ready to run" in out and "identical copies" in out


def test_check_data_on_the_competition_download_alone(tmp_path, sample, capsys):
    train, test = split(sample)
    root = competition(tmp_path / "kaggle", sample, test, train)
    config = write_config(tmp_path, {"root": str(root)})
    assert cli.main(["check-data", str(config)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "no train images" in err and "dicom-images-train" in err


def test_check_data_names_an_unlabelled_dicom_and_the_choice(tmp_path, sample, capsys):
    train, test = split(sample)
    root = mirror(tmp_path / "siim", sample, train, test)
    label_csv(root / "train-rle.csv", sample, train[1:])
    config = write_config(tmp_path, {"root": str(root)})
    assert cli.main(["check-data", str(config)]) == cli.EXIT_SOME_FAILED
    err = capsys.readouterr().err
    assert f"train {train[0]}: no label row in {root / 'train-rle.csv'}" in err
    assert "data.stop_on_rejects: false" in err and f"({len(train) - 1} train images remain)" in err


def test_check_data_refuses_labels_of_other_images(tmp_path, sample, capsys):
    train, test = split(sample)
    root = mirror(tmp_path / "siim", sample, train, test)
    label_csv(root / "train-rle.csv", sample, test)
    config = write_config(tmp_path, {"root": str(root)}, stop_on_rejects=False)
    assert cli.main(["check-data", str(config)]) == cli.EXIT_SOME_FAILED
    err = capsys.readouterr().err
    assert "no train image is left" in err and "would not help" in err


def test_layout_named_but_absent(tmp_path, sample):
    train, test = split(sample)
    root = mirror(tmp_path / "siim", sample, train, test)
    with pytest.raises(LayoutError, match="data.siim.layout is 'iafoss'.*dicom-images-train"):
        resolve({"root": str(root), "layout": "iafoss"})


def test_a_root_that_is_an_image_folder(tmp_path, sample):
    train, _ = split(sample)
    folder = nest(tmp_path / "dicom-images-train", sample, train)
    with pytest.raises(LayoutError, match="give the folder above it"):
        resolve({"root": str(folder)})


def test_check_data_names_two_different_files_with_one_image_id(tmp_path, sample, capsys):
    train, test = split(sample)
    root = mirror(tmp_path / "siim", sample, train, test, twin=True)
    victim = next((root / "pneumothorax" / "dicom-images-test").rglob(f"{test[0]}.dcm"))
    victim.write_bytes(victim.read_bytes() + b"\0")
    assert cli.main(["check-data", str(write_config(tmp_path, {"root": str(root)}))]) == 3
    err = capsys.readouterr().err
    assert str(victim) in err and "the two files differ" in err


def test_a_png_mask_of_another_size_is_a_reject_naming_it(tmp_path, sample):
    train, test = split(sample)
    root = iafoss(tmp_path / "iafoss", sample, train, test, 256)
    victim = root / "masks" / f"{train[0]}.png"
    cv2.imwrite(str(victim), np.zeros((128, 128), np.uint8))
    layout = resolve({"root": str(root)})
    frame, _, out = index(tmp_path, layout, stop_on_rejects=False)
    rejects = pd.read_csv(out / "rejects.csv", dtype=str)
    assert rejects["image_id"].tolist() == [train[0]]
    assert f"{victim}: mask 128x128, its image 256x256" in rejects["reason"][0]
    assert train[0] not in set(frame["image_id"])
