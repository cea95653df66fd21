"""Bad input data: each a clear error naming the file, line or key, or correct handling; no output half-written."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
from dag import files_config, leftovers, snakemake

from ptxseg.data.siim import read_index
from ptxseg.io import dicom, rle
from ptxseg.io.png import read_grey

pytestmark = pytest.mark.workflow
INDEX = "results/data/siim_index.csv"


def first_train_dicom(data):
    return sorted(dicom.find_dicoms(data / "siim" / "dicom-images-train").values())[0]


def run(tmp_path, data, *targets, **config):
    result = snakemake(
        tmp_path,
        *targets,
        "--cores",
        1,
        "--configfile",
        files_config(tmp_path, data, **config),
        check=False,
    )
    return result, tmp_path / "results"


def log_of(results, rule):
    return (results / "logs" / rule / f"{rule}.log").read_text()


def assert_stopped_cleanly(result, results, output):
    assert result.returncode != 0
    assert not (results / output).exists()
    assert not leftovers(results)


def append_rows(data, *rows):
    path = data / "siim" / "train-rle.csv"
    path.write_text(path.read_text() + "".join(f"{row}\n" for row in rows))
    return path


def replace_first_row(data, row):
    path = data / "siim" / "train-rle.csv"
    lines = path.read_text().splitlines()
    lines[1] = row.format(id=lines[1].split(",")[0])
    path.write_text("\n".join(lines) + "\n")
    return path


def test_truncated_dicom_is_a_reject_that_stops_the_run(tmp_path, data):
    victim = first_train_dicom(data)
    victim.write_bytes(victim.read_bytes()[:-500])
    result, results = run(tmp_path, data, INDEX)
    assert_stopped_cleanly(result, results, "data/siim_index.csv")
    log = log_of(results, "index_siim")
    assert str(victim) in log and "truncated" in log and "data.stop_on_rejects" in log
    assert pd.read_csv(results / "data" / "siim_rejects.csv", dtype=str)["image_id"].tolist() == [
        victim.stem
    ]


def test_non_dicom_file_with_a_dcm_name(tmp_path, data):
    fake = data / "siim" / "dicom-images-train" / "1.2.3" / "1.2.3.4.dcm"
    fake.parent.mkdir()
    fake.write_text("a text file with a .dcm name")
    append_rows(data, "1.2.3.4,-1")
    result, results = run(tmp_path, data, INDEX)
    assert_stopped_cleanly(result, results, "data/siim_index.csv")
    assert f"{fake}: not a DICOM file" in log_of(results, "index_siim")


def test_dicom_without_pixel_data(tmp_path, data):
    victim = first_train_dicom(data)
    dataset = pydicom.dcmread(victim)
    del dataset.PixelData
    dataset.save_as(victim)
    result, results = run(tmp_path, data, INDEX)
    assert_stopped_cleanly(result, results, "data/siim_index.csv")
    assert f"{victim}: no Pixel Data element" in log_of(results, "index_siim")


def test_sixteen_bit_monochrome1_dicom_of_another_size_is_handled(tmp_path, data):
    """Not rejected: scaled down, inverted, and its mask decoded at its own size."""
    victim = first_train_dicom(data)
    header = pydicom.dcmread(victim, stop_before_pixels=True)
    rows, columns = 300, 256
    grey = (np.add.outer(np.arange(rows), np.arange(columns)) * 100).astype(np.uint16)
    dicom.write_dicom(
        victim,
        grey,
        sop_instance_uid=victim.stem,
        study_instance_uid=header.StudyInstanceUID,
        series_instance_uid=header.SeriesInstanceUID,
        patient_id=str(header.PatientID),
        patient_age=40,
        patient_sex="F",
        view_position="PA",
        jpeg_quality=None,
        photometric="MONOCHROME1",
    )
    mask = np.zeros((rows, columns), bool)
    mask[20:120, 30:90] = True
    path = data / "siim" / "train-rle.csv"
    lines = [line for line in path.read_text().splitlines() if not line.startswith(victim.stem)]
    path.write_text("\n".join([*lines, f"{victim.stem},{rle.encode(mask)}"]) + "\n")
    result, results = run(tmp_path, data, "results/repack/siim/stats_64.json")
    assert result.returncode == 0, result.stderr[-2000:]
    row = read_index(results / "data" / "siim_index.csv").set_index("image_id").loc[victim.stem]
    assert (row["rows"], row["columns"], row["photometric"]) == (rows, columns, "MONOCHROME1")
    assert row["has_pneumothorax"] == 1
    repacked_mask = (
        read_grey(results / "repack" / "siim" / "64" / "masks" / f"{victim.stem}.png") > 0
    )
    assert abs(repacked_mask.mean() - mask.mean()) < 0.02
    image = read_grey(results / "repack" / "siim" / "64" / "train" / f"{victim.stem}.png")
    assert image[0, 0] > image[-1, -1]  # MONOCHROME1: the lowest stored value is the brightest


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{id},1 2 3", "RLE holds an odd number of values"),
        ("{id},5 -3", "RLE run 0 has a length -3"),
        ("{id},5 x", "RLE holds a non-integer value 'x'"),
        ("{id},100000 40", "ends at pixel 100040, past the image end (16384 pixels)"),
        ("{id},99999999999999999999 5", "RLE holds a value 99999999999999999999 larger than"),
    ],
)
def test_malformed_rle_row_names_file_and_line(tmp_path, data, row, message):
    path = replace_first_row(data, row)
    result, results = run(tmp_path, data, INDEX)
    assert_stopped_cleanly(result, results, "data/siim_index.csv")
    log = log_of(results, "index_siim")
    assert f"{path}: line 2" in log and message in log


def test_empty_encoded_pixels_cell_names_file_line_and_image(tmp_path, data):
    """An empty cell is not an image with an empty mask: the release marks those '-1'."""
    path = replace_first_row(data, "{id}, ")
    image_id = path.read_text().splitlines()[1].split(",")[0]
    result, results = run(tmp_path, data, INDEX)
    assert_stopped_cleanly(result, results, "data/siim_index.csv")
    assert f"{path}: line 2: ImageId {image_id}: EncodedPixels is empty" in log_of(
        results, "index_siim"
    )


def test_duplicated_image_id(tmp_path, data):
    path = data / "siim" / "train-rle.csv"
    first = path.read_text().splitlines()[1]
    append_rows(data, first)
    result, results = run(tmp_path, data, INDEX)
    assert_stopped_cleanly(result, results, "data/siim_index.csv")
    log = log_of(results, "index_siim")
    last = len(path.read_text().splitlines())
    assert f"{path}: line {last}: duplicate of line 2" in log


def test_image_id_with_path_characters(tmp_path, data):
    path = append_rows(data, "../../outside,-1")
    result, results = run(tmp_path, data, INDEX)
    assert_stopped_cleanly(result, results, "data/siim_index.csv")
    assert "ImageId '../../outside' is not a valid image id" in log_of(results, "index_siim")
    assert not (tmp_path / "outside").exists() and str(path) in log_of(results, "index_siim")


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "the file is empty"), ("ImageId, Mask\n1.2,-1\n", "line 1: columns")],
)
def test_empty_csv_or_missing_column(tmp_path, data, content, message):
    path = data / "siim" / "train-rle.csv"
    path.write_text(content)
    result, results = run(tmp_path, data, INDEX)
    assert_stopped_cleanly(result, results, "data/siim_index.csv")
    assert f"{path}: {message}" in log_of(results, "index_siim")


def test_nih_label_outside_the_fourteen(tmp_path, data):
    path = data / "nih" / "Data_Entry_2017.csv"
    lines = path.read_text().splitlines()
    fields = lines[2].split(",")
    fields[1] = "Effusion|Tuberculosis"
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    result, results = run(tmp_path, data, "results/data/nih_index.csv")
    assert_stopped_cleanly(result, results, "data/nih_index.csv")
    assert f"{path}: line 3: unknown finding 'Tuberculosis'" in log_of(results, "index_nih")


def test_rgba_and_sixteen_bit_nih_pngs_are_read_as_grey(tmp_path, data):
    import cv2

    images = sorted((data / "nih" / "images").glob("*.png"))
    grey = cv2.imread(str(images[1]), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(images[1]), grey.astype(np.uint16) * 257)  # 16-bit, same picture
    rgba = cv2.cvtColor(cv2.imread(str(images[2]), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGRA)
    cv2.imwrite(str(images[2]), rgba)
    result, results = run(tmp_path, data, "results/repack/nih/stats_32.json")
    assert result.returncode == 0, result.stderr[-2000:]
    for path in images[1:3]:
        assert read_grey(results / "repack" / "nih" / "32" / path.name).ndim == 2
