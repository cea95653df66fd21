"""DICOM reading: the real SIIM files, the other compressed syntaxes, bit depths, and damaged files."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1

from ptxseg.io import dicom, rle


def synthetic(tmp_path, name="x.dcm", image=None, **overrides):
    if image is None:
        image = (np.add.outer(np.arange(96), np.arange(128)) % 256).astype(np.uint8)
    fields = dict(
        sop_instance_uid="1.2.3.4",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.5",
        patient_id="patient-1",
        patient_age=42,
        patient_sex="F",
        view_position="PA",
    )
    fields.update(overrides)
    path = tmp_path / name
    dicom.write_dicom(path, image, **fields)
    return path, image


@pytest.mark.realdata
def test_real_siim_files_match_pydicom(real_data):
    paths = sorted((real_data / "siim-sample").glob("*.dcm"))
    assert len(paths) == 10
    for path in paths:
        image, header = dicom.read_image(path)
        assert image.shape == (1024, 1024) and image.dtype == np.uint8
        assert header.transfer_syntax == pydicom.uid.JPEGBaseline8Bit
        assert header.sop_instance_uid == path.stem
        dataset = pydicom.dcmread(path)
        # Same decoder as pydicom uses when asked for Pillow: identical pixels.
        same_decoder = pydicom.pixels.pixel_array(dataset, decoding_plugin="pillow")
        assert np.array_equal(image, same_decoder)
        # pydicom's default decoder here is pylibjpeg; JPEG lets decoders' inverse DCTs differ by 1.
        default = dataset.pixel_array
        difference = np.abs(image.astype(int) - default.astype(int))
        assert difference.max() <= 1 and difference.mean() < 0.05
        assert 20 < image.mean() < 235 and image.std() > 20  # a radiograph, not a blank frame


@pytest.mark.realdata
def test_real_headers(real_data):
    header = dicom.read_header(
        real_data / "siim-sample" / "1.2.276.0.7230010.3.1.4.8323329.300.1517875162.258081.dcm"
    )
    assert (header.patient_age, header.patient_sex, header.view_position) == (58, "F", "AP")
    assert header.patient_id and header.rows == header.columns == 1024
    assert header.photometric == "MONOCHROME2" and header.bits_stored == 8


@pytest.mark.realdata
def test_real_rle_rows_give_plausible_masks(real_data):
    rows = defaultdict(list)
    with open(real_data / "siim-sample" / "train-rle-sample.csv", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        for image_id, encoded in reader:
            rows[image_id].append(encoded)
    positives = 0
    for image_id, encoded_rows in rows.items():
        image, _ = dicom.read_image(real_data / "siim-sample" / f"{image_id}.dcm")
        mask = rle.decode_union(encoded_rows, image.shape)
        if encoded_rows == ["-1"]:
            assert mask.sum() == 0
            continue
        positives += 1
        # A pneumothorax covers between a few hundred pixels and a fraction of the chest...
        assert 500 <= mask.sum() <= 0.15 * mask.size
        # ...lies within the chest (not on the outer image border)...
        rows_any, cols_any = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert rows_any[0] > 0 and cols_any[0] > 0 and cols_any[-1] < 1023
        # ...and sits over the lung field, darker than the bright mediastinum and bones.
        assert image[mask].mean() < np.percentile(image, 75)
    assert positives == 5


def test_write_and_read_round_trip_jpeg_baseline(tmp_path):
    path, image = synthetic(tmp_path)
    decoded, header = dicom.read_image(path)
    assert decoded.shape == image.shape
    assert np.abs(decoded.astype(int) - image.astype(int)).mean() < 2  # lossy, quality 95
    assert header.transfer_syntax == pydicom.uid.JPEGBaseline8Bit
    assert (header.patient_id, header.patient_age, header.view_position) == ("patient-1", 42, "PA")


def test_jpeg_lossless_and_jpeg2000(tmp_path):
    imagecodecs = pytest.importorskip("imagecodecs")
    path, image = synthetic(tmp_path, jpeg_quality=None)
    dataset = pydicom.dcmread(path)
    dataset.compress(JPEG2000Lossless, image)
    dataset.save_as(tmp_path / "j2k.dcm")
    decoded, header = dicom.read_image(tmp_path / "j2k.dcm")
    assert header.transfer_syntax == JPEG2000Lossless and np.array_equal(decoded, image)

    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    dataset.PixelData = encapsulate([imagecodecs.jpeg8_encode(image, lossless=True, predictor=1)])
    dataset["PixelData"].VR = "OB"
    dataset.save_as(tmp_path / "lossless.dcm")
    decoded, header = dicom.read_image(tmp_path / "lossless.dcm")
    assert header.transfer_syntax == JPEGLosslessSV1 and np.array_equal(decoded, image)


def test_sixteen_bit_is_scaled_down(tmp_path):
    image16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    path, _ = synthetic(tmp_path, image=image16, jpeg_quality=None)
    decoded, header = dicom.read_image(path)
    assert header.bits_stored == 16 and decoded.dtype == np.uint8
    expected = np.clip(np.rint(image16 * (255 / 65535)), 0, 255)
    assert np.array_equal(decoded, expected.astype(np.uint8))


def test_twelve_bits_stored_use_the_stored_range(tmp_path):
    image12 = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    path, _ = synthetic(tmp_path, image=image12, jpeg_quality=None)
    dataset = pydicom.dcmread(path)
    dataset.BitsStored, dataset.HighBit = 12, 11
    dataset.save_as(path)
    decoded, _ = dicom.read_image(path)
    assert decoded.max() == 255 and decoded.min() == 0
    assert decoded[0, 0] == 0 and decoded.flat[4095] == 255


def test_monochrome1_is_inverted(tmp_path):
    path, image = synthetic(tmp_path, jpeg_quality=None, photometric="MONOCHROME1")
    decoded, header = dicom.read_image(path)
    assert header.photometric == "MONOCHROME1"
    assert np.array_equal(decoded, 255 - image)


def test_other_sizes_are_kept(tmp_path):
    path, _ = synthetic(tmp_path, image=np.full((300, 200), 7, np.uint8), jpeg_quality=None)
    decoded, header = dicom.read_image(path)
    assert decoded.shape == (300, 200) == (header.rows, header.columns)


def test_truncated_file_is_an_error_naming_it(tmp_path):
    path, _ = synthetic(tmp_path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) - 600])
    with pytest.raises(dicom.DicomError, match="truncated.dcm"):
        dicom.check_pixel_data(truncated)
    with pytest.raises(dicom.DicomError, match="truncated.dcm"):
        dicom.read_image(truncated)
    header_only = tmp_path / "header_only.dcm"
    header_only.write_bytes(data[:200])
    with pytest.raises(dicom.DicomError, match="header_only.dcm"):
        dicom.check_pixel_data(header_only)


def test_truncated_native_pixel_data(tmp_path):
    path, _ = synthetic(tmp_path, jpeg_quality=None)
    data = path.read_bytes()
    (tmp_path / "short.dcm").write_bytes(data[:-1000])
    with pytest.raises(dicom.DicomError, match="short.dcm"):
        dicom.check_pixel_data(tmp_path / "short.dcm")


def test_non_dicom_file_is_an_error_naming_it(tmp_path):
    fake = tmp_path / "photo.dcm"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 300)
    with pytest.raises(dicom.DicomError, match=r"photo\.dcm: not a DICOM file"):
        dicom.read_image(fake)
    with pytest.raises(dicom.DicomError, match=r"photo\.dcm"):
        dicom.read_header(fake)


def test_missing_pixel_data_is_an_error(tmp_path):
    path, _ = synthetic(tmp_path)
    dataset = pydicom.dcmread(path)
    del dataset.PixelData
    dataset.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(dicom.DicomError, match="nopixels.dcm: no Pixel Data"):
        dicom.read_image(tmp_path / "nopixels.dcm")
    with pytest.raises(dicom.DicomError, match="no Pixel Data"):
        dicom.check_pixel_data(tmp_path / "nopixels.dcm")


def test_find_dicoms_walks_nested_folders_and_refuses_duplicates(tmp_path):
    synthetic(tmp_path / "a" / "b", name="1.2.3.dcm")
    synthetic(tmp_path / "c", name="1.2.4.dcm")
    (tmp_path / "a" / "b").mkdir(parents=True, exist_ok=True)
    found = dicom.find_dicoms(tmp_path)
    assert sorted(found) == ["1.2.3", "1.2.4"]
    synthetic(tmp_path / "d", name="1.2.3.dcm")
    with pytest.raises(dicom.DicomError, match="1.2.3"):
        dicom.find_dicoms(tmp_path)
    with pytest.raises(FileNotFoundError):
        dicom.find_dicoms(tmp_path / "missing")
