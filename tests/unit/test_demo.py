"""The demo data set: the real release formats, exact masks, reproducible from the seed."""

from __future__ import annotations

import csv
import hashlib

import cv2
import numpy as np
import pydicom
import pytest

from ptxseg.data import nih
from ptxseg.data.demo import DemoSpec, write_nih_demo, write_siim_demo
from ptxseg.data.siim import build_index, read_rle_csv
from ptxseg.io import dicom, rle
from ptxseg.io.png import read_grey

SPEC = DemoSpec(
    siim_train=14,
    siim_test=4,
    positive_fraction=0.5,
    two_region_fraction=0.5,
    max_images_per_patient=3,
    image_size=256,
    nih_images=12,
    nih_rgba=2,
    nih_finding_rate=0.7,
)


@pytest.fixture(scope="module")
def siim_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("siim")
    write_siim_demo(out, SPEC, seed=11, workers=2)
    return out


@pytest.fixture(scope="module")
def nih_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("nih")
    write_nih_demo(out, SPEC, seed=11, workers=1)
    return out


def test_dicoms_are_nested_and_carry_the_release_header(siim_demo):
    train = sorted((siim_demo / "dicom-images-train").rglob("*.dcm"))
    test = sorted((siim_demo / "dicom-images-test").rglob("*.dcm"))
    assert len(train) == 14 and len(test) == 4
    for path in train + test:
        study, series = path.parent.parent.name, path.parent.name
        ds = pydicom.dcmread(path)
        assert path.stem == ds.SOPInstanceUID
        assert (study, series) == (ds.StudyInstanceUID, ds.SeriesInstanceUID)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
        assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert (ds.Modality, ds.PhotometricInterpretation, ds.BitsStored, ds.SamplesPerPixel) == (
            "CR",
            "MONOCHROME2",
            8,
            1,
        )
        assert (ds.Rows, ds.Columns) == (256, 256)
        assert ds.BodyPartExamined == "CHEST" and ds.ViewPosition in ("PA", "AP")
        assert ds.SeriesDescription == f"view: {ds.ViewPosition}"
        assert (
            ds.PatientName == ds.PatientID and len(ds.PatientID) == 36
        )  # a UUID, as in the release
        assert ds.PatientSex in ("M", "F") and str(ds.PatientAge).isdigit()
        assert ds.LossyImageCompression == "01"


def test_label_file_has_the_release_quirks(siim_demo):
    text = (siim_demo / "train-rle.csv").read_text()
    lines = text.splitlines()
    assert lines[0] == "ImageId, EncodedPixels"
    assert any(line.endswith(",-1") for line in lines)
    assert all(line.endswith(" ") for line in lines[1:] if not line.endswith(",-1"))
    labels = read_rle_csv(siim_demo / "train-rle.csv")
    assert len(labels) == 14
    n_regions = [len(entry.rles) for entry in labels.values()]
    assert n_regions.count(0) == 7 and max(n_regions) == 2  # half positive, some with two rows


def test_masks_are_exact_and_regions_disjoint(siim_demo):
    labels = read_rle_csv(siim_demo / "train-rle.csv")
    paths = dicom.find_dicoms(siim_demo / "dicom-images-train")
    for image_id, entry in labels.items():
        image, _ = dicom.read_image(paths[image_id])
        masks = [rle.decode(encoded, image.shape) for encoded in entry.rles]
        for mask in masks:
            assert mask.sum() > 0
            n_components, _ = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            assert n_components == 2  # background + one region per row, as in the release
        if len(masks) == 2:
            assert not (masks[0] & masks[1]).any()


def test_test_answers_are_kept_beside(siim_demo):
    answers = read_rle_csv(siim_demo / "test-rle.csv")
    assert set(answers) == set(dicom.find_dicoms(siim_demo / "dicom-images-test"))


def test_patients_have_several_images(siim_demo):
    index, rejects = build_index(
        siim_demo / "dicom-images-train",
        siim_demo / "dicom-images-test",
        siim_demo / "train-rle.csv",
    )
    assert rejects.empty and len(index) == 18
    per_patient = index.groupby("patient_id").size()
    assert per_patient.max() > 1 and per_patient.max() <= 3


def test_same_seed_same_bytes_other_seed_other_images(siim_demo, tmp_path):
    again = tmp_path / "again"
    write_siim_demo(again, SPEC, seed=11, workers=1)  # another worker count, same result

    def digest(root):
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digest(again) == digest(siim_demo)
    other = tmp_path / "other"
    write_siim_demo(other, SPEC, seed=12, workers=1)
    assert set(digest(other).values()).isdisjoint(digest(siim_demo).values())


def test_nih_set_in_the_2017_layout(nih_demo):
    csv_path = nih_demo / "Data_Entry_2017.csv"
    with open(csv_path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:3] == ["Image Index", "Finding Labels", "Follow-up #"]
    assert all(row[-1] == "" and len(row) == 12 for row in rows)  # the 2017 trailing comma
    labels = nih.read_labels(csv_path)
    assert len(labels) == 12
    findings_per_image = labels[list(nih.FINDINGS)].to_numpy().sum(1)
    assert (findings_per_image > 0).any() and (
        findings_per_image == 0
    ).any()  # findings and 'No Finding'
    colour_types = []
    for name in labels["image_index"]:
        with open(nih_demo / "images" / name, "rb") as handle:
            header = handle.read(26)
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        colour_types.append(header[25])
    assert colour_types.count(6) == 2  # RGBA, as a few real NIH PNGs
    assert set(colour_types) == {0, 6}
    names = labels["image_index"].tolist()
    assert all(len(n) == 16 and n[8] == "_" for n in names)  # 00000001_000.png


def test_a_share_of_the_siim_images_is_in_the_nih_set(siim_demo, nih_demo):
    """The copies are the PNGs the SIIM DICOMs were made from: re-encoding one gives its DICOM's
    pixel data byte for byte. demo_nih renders them from the SIIM plan (nih_demo is written
    without any SIIM file), labelled as the SIIM answers say."""
    with open(nih_demo / "siim_copies.csv", newline="") as handle:
        copies = list(csv.DictReader(handle))
    splits = [row["siim_split"] for row in copies]
    assert (
        splits.count("train") == 4 and splits.count("test") == 1
    )  # ceil(0.25 * 14), ceil(0.25 * 4)
    labels = nih.read_labels(nih_demo / "Data_Entry_2017.csv").set_index("image_index")
    answers = read_rle_csv(siim_demo / "train-rle.csv") | read_rle_csv(siim_demo / "test-rle.csv")
    paths = dicom.find_dicoms(siim_demo / "dicom-images-train") | dicom.find_dicoms(
        siim_demo / "dicom-images-test"
    )
    headers = {}
    for row in copies:
        source = pydicom.dcmread(paths[row["siim_image_id"]])
        assert row["siim_split"] in str(paths[row["siim_image_id"]])
        copy = nih_demo / "images" / row["image_index"]
        again = copy.parent / "again.dcm"
        dicom.write_dicom(
            again,
            read_grey(copy),
            sop_instance_uid=source.SOPInstanceUID,
            study_instance_uid=source.StudyInstanceUID,
            series_instance_uid=source.SeriesInstanceUID,
            patient_id=source.PatientID,
            patient_age=int(source.PatientAge),
            patient_sex=source.PatientSex,
            view_position=source.ViewPosition,
        )
        assert pydicom.dcmread(again).PixelData == source.PixelData
        again.unlink()
        found = labels.loc[row["image_index"], list(nih.FINDINGS)]
        positive = bool(answers[row["siim_image_id"]].rles)
        assert found.to_dict() == {
            name: int(positive and name == "Pneumothorax") for name in found.index
        }
        headers[row["image_index"]] = source
    # One SIIM patient is one NIH patient, with follow-up numbers; and two SIIM patients are one
    # NIH patient (SIIM's re-anonymisation): a NIH patient has train images of two SIIM patients.
    patients, siim_of_nih = {}, {}
    for name, source in headers.items():
        nih_id = labels.loc[name, "patient_id"]
        patients.setdefault(source.PatientID, set()).add(nih_id)
        siim_of_nih.setdefault(nih_id, set()).add(source.PatientID)
    assert all(len(nih_ids) == 1 for nih_ids in patients.values())
    assert max(len(siim_ids) for siim_ids in siim_of_nih.values()) == 2
    train_of_nih = {}
    for row in copies:
        if row["siim_split"] == "train":
            nih_id = labels.loc[row["image_index"], "patient_id"]
            train_of_nih.setdefault(nih_id, set()).add(headers[row["image_index"]].PatientID)
    assert any(len(siim_ids) == 2 for siim_ids in train_of_nih.values())
    follow_ups = (
        labels.loc[list(headers)]
        .groupby("patient_id")["follow_up"]
        .apply(lambda numbers: sorted(map(int, numbers)))
    )
    assert all(numbers == list(range(len(numbers))) for numbers in follow_ups)
    own = set(labels.index) - set(headers)
    assert not {labels.loc[n, "patient_id"] for n in own} & {
        labels.loc[n, "patient_id"] for n in headers
    }


def test_nih_demo_is_the_same_on_any_worker_count(nih_demo, tmp_path):
    write_nih_demo(tmp_path, SPEC, seed=11, workers=2)
    for path in sorted(nih_demo.rglob("*")):
        if path.is_file():
            assert path.read_bytes() == (tmp_path / path.relative_to(nih_demo)).read_bytes()


def test_no_overlap_and_too_much_overlap(tmp_path):
    from dataclasses import replace

    write_nih_demo(tmp_path, replace(SPEC, nih_overlap=0.0, nih_images=4), seed=1)
    assert (tmp_path / "siim_copies.csv").read_text() == "image_index,siim_image_id,siim_split\n"
    assert len(list((tmp_path / "images").glob("*.png"))) == 4
    with pytest.raises(
        ValueError, match=r"data\.demo\.nih_overlap .* data\.demo\.nih_images \(4\)"
    ):
        write_nih_demo(tmp_path / "more", replace(SPEC, nih_overlap=0.5, nih_images=4), seed=1)
