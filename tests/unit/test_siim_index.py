"""The SIIM label file and index: the gate every later stage trusts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ptxseg.data import siim
from ptxseg.data.ids import BadImageId
from ptxseg.io import dicom, rle


def make_dicom(folder, image_id, size=64, patient="p1"):
    image = np.full((size, size), 90, np.uint8)
    path = folder / "study" / image_id / f"{image_id}.dcm"
    dicom.write_dicom(
        path,
        image,
        sop_instance_uid=image_id,
        study_instance_uid="1.9",
        series_instance_uid="1.8",
        patient_id=patient,
        patient_age=30,
        patient_sex="M",
        view_position="PA",
    )
    return path


def region(size=64):
    mask = np.zeros((size, size), bool)
    mask[5:15, 3:9] = True
    return rle.encode(mask)


@pytest.fixture
def dataset(tmp_path):
    train, test = tmp_path / "train", tmp_path / "test"
    for image_id in ("1.1", "1.2", "1.3"):
        make_dicom(train, image_id)
    make_dicom(test, "2.1")
    csv_path = tmp_path / "train-rle.csv"
    csv_path.write_text(f"ImageId, EncodedPixels\n1.1,-1\n1.2,{region()} \n1.2,0 3\n1.3,-1\n")
    return train, test, csv_path


def test_index_lists_train_and_test_with_labels_and_header(dataset, tmp_path):
    index, rejects = siim.build_index(*dataset)
    assert rejects.empty
    assert list(index["image_id"]) == [
        "1.1",
        "1.2",
        "1.3",
        "2.1",
    ]  # by split (test after train), then id
    by_id = index.set_index("image_id")
    assert by_id.loc["1.2", "has_pneumothorax"] == 1 and by_id.loc["1.2", "n_regions"] == 2
    assert by_id.loc["1.1", "has_pneumothorax"] == 0 and by_id.loc["1.1", "n_regions"] == 0
    assert by_id.loc["2.1", "split"] == "test" and pd.isna(by_id.loc["2.1", "has_pneumothorax"])
    assert (by_id["rows"] == 64).all() and (by_id["patient_id"] == "p1").all()
    siim.write_index(*dataset, tmp_path / "index.csv", tmp_path / "rejects.csv")
    again = siim.read_index(tmp_path / "index.csv")
    assert again.set_index("image_id").loc["1.2", "n_regions"] == 2
    assert pd.isna(again.set_index("image_id").loc["2.1", "has_pneumothorax"])


def test_rejects_are_listed_and_stop_the_run_when_asked(dataset, tmp_path):
    train, test, csv_path = dataset
    with open(csv_path, "a") as handle:
        handle.write("9.9,-1\n")  # a row without a DICOM
    make_dicom(train, "1.4")  # a DICOM without a row
    damaged = make_dicom(train, "1.5")
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-300])  # truncated: no JPEG end-of-image marker
    with open(csv_path, "a") as handle:
        handle.write("1.5,-1\n")
    index, rejects = siim.build_index(train, test, csv_path)
    reasons = dict(zip(rejects["image_id"], rejects["reason"], strict=True))
    assert set(reasons) == {"9.9", "1.4", "1.5"}
    assert "no DICOM" in reasons["9.9"] and "no label row" in reasons["1.4"]
    assert "truncated" in reasons["1.5"] and "1.5.dcm" in reasons["1.5"]
    assert set(index["image_id"]) == {"1.1", "1.2", "1.3", "2.1"}

    index_path, rejects_path = tmp_path / "out" / "index.csv", tmp_path / "out" / "rejects.csv"
    with pytest.raises(siim.RejectsError, match="3 rejected image") as error:
        siim.write_index(train, test, csv_path, index_path, rejects_path, stop_on_rejects=True)
    assert "data.stop_on_rejects" in str(error.value)
    assert rejects_path.exists() and not index_path.exists()  # nothing half-done downstream
    siim.write_index(train, test, csv_path, index_path, rejects_path, stop_on_rejects=False)
    assert index_path.exists()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("1.1,1 2 3", r"line 2: ImageId 1.1: RLE holds an odd number"),
        ("1.1,5 -3", r"line 2: ImageId 1.1: RLE run 0 has a length -3"),
        ("1.1,5 x", r"line 2: ImageId 1.1: RLE holds a non-integer value 'x'"),
        ("1.1,", r"line 2: ImageId 1.1: EncodedPixels is empty; an image without .* '-1'"),
        ("1.1,   ", r"line 2: ImageId 1.1: EncodedPixels is empty"),
        ('1.1,""', r"line 2: ImageId 1.1: EncodedPixels is empty"),
        ("../x,-1", r"line 2: ImageId '../x' is not a valid image id"),
        ("a/b,-1", r"line 2: ImageId 'a/b' is not a valid image id"),
    ],
)
def test_malformed_rows_are_errors_naming_file_and_line(tmp_path, row, message):
    path = tmp_path / "train-rle.csv"
    path.write_text(f"ImageId, EncodedPixels\n{row}\n")
    with pytest.raises(ValueError, match=rf"train-rle.csv: {message}"):
        siim.read_rle_csv(path)


def test_empty_cell_after_a_region_of_the_same_image_is_still_an_error(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("ImageId, EncodedPixels\n1.1,-1\n1.2,0 3\n1.2, \n")
    with pytest.raises(
        siim.LabelFileError, match=r"l.csv: line 4: ImageId 1.2: EncodedPixels is empty"
    ):
        siim.read_rle_csv(path)


def test_unsafe_image_id_is_its_own_error_type(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("ImageId, EncodedPixels\n..,-1\n")
    with pytest.raises(BadImageId):
        siim.read_rle_csv(path)


def test_run_past_the_image_end_names_the_line(dataset, tmp_path):
    train, test, csv_path = dataset
    csv_path.write_text(
        "ImageId, EncodedPixels\n1.1,-1\n1.2,4000 200\n1.3,-1\n"
    )  # 64x64 = 4096 pixels
    with pytest.raises(
        siim.LabelFileError, match=r"line 3: ImageId 1.2 \(64x64\): RLE run 0 ends at pixel 4200"
    ):
        siim.build_index(train, test, csv_path)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("1.1,-1\n1.1,-1\n", "line 3: duplicate of line 2"),
        ("1.1,0 3 \n1.1,0 3\n", "line 3: duplicate of line 2"),
        ("1.1,-1\n1.1,0 3\n", "line 3: ImageId 1.1 is marked empty"),
        ("1.1,0 3\n1.1,-1\n", "line 3: ImageId 1.1 is marked empty"),
    ],
)
def test_contradictory_or_duplicated_rows(tmp_path, rows, message):
    path = tmp_path / "l.csv"
    path.write_text("ImageId, EncodedPixels\n" + rows)
    with pytest.raises(siim.LabelFileError, match=message):
        siim.read_rle_csv(path)


def test_header_variants_empty_file_and_missing_column(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("ImageId,EncodedPixels\n1.1, -1\n")  # without the release's space: accepted
    assert siim.read_rle_csv(path)["1.1"].empty
    path.write_text("")
    with pytest.raises(siim.LabelFileError, match="l.csv: the file is empty"):
        siim.read_rle_csv(path)
    path.write_text("ImageId, Mask\n1.1,-1\n")
    with pytest.raises(siim.LabelFileError, match="l.csv: line 1: columns"):
        siim.read_rle_csv(path)
    path.write_text("ImageId, EncodedPixels\n")
    with pytest.raises(siim.LabelFileError, match="no label rows"):
        siim.read_rle_csv(path)


def test_several_rows_are_gathered(tmp_path):
    path = tmp_path / "l.csv"
    path.write_text("ImageId, EncodedPixels\n1.1,0 3 \n1.2,-1\n1.1,10 2\n")
    labels = siim.read_rle_csv(path)
    assert labels["1.1"].rles == ["0 3", "10 2"] and labels["1.1"].lines == [2, 4]
    assert labels["1.2"].rles == [] and labels["1.2"].empty


def test_header_strings_with_control_characters_are_escaped(tmp_path):
    train, test = tmp_path / "train", tmp_path / "test"
    make_dicom(train, "1.1", patient="evil\x1b[31m\nname")
    make_dicom(test, "2.1")
    csv_path = tmp_path / "l.csv"
    csv_path.write_text("ImageId, EncodedPixels\n1.1,-1\n")
    index, _ = siim.build_index(train, test, csv_path)
    patient = index.set_index("image_id").loc["1.1", "patient_id"]
    assert "\x1b" not in patient and "\n" not in patient and "\\x1b" in patient
