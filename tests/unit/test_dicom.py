"""DICOM reading: the real SIIM files, the other compressed syntaxes, bit depths, the display
transforms hospitals write (rescale, window, VOI LUT, MONOCHROME1), and damaged files; and 16-bit
PNGs, which are scaled to 8 bits by the same function."""

from __future__ import annotations

import csv
import logging
from collections import defaultdict

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing
from pydicom.uid import JPEG2000Lossless, JPEGLosslessSV1

from ptxseg.io import dicom, png, rle


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
    # Without a window: the image's own range (0 .. 65520), not the stored bits', is 0 .. 255.
    expected = np.clip(np.rint(image16 * (255 / 65520)), 0, 255)
    assert np.array_equal(decoded, expected.astype(np.uint8))


def test_twelve_bits_stored_span_the_eight_bits(tmp_path):
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


def native(tmp_path, image, name="x.dcm", bits_stored=None, signed=False, **fields):
    """A native (uncompressed) DICOM of ``image`` with extra header ``fields`` set by pydicom."""
    photometric = fields.pop("PhotometricInterpretation", "MONOCHROME2")
    path, _ = synthetic(tmp_path, name, image=image, jpeg_quality=None, photometric=photometric)
    dataset = pydicom.dcmread(path)
    if bits_stored is not None:
        dataset.BitsStored, dataset.HighBit = bits_stored, bits_stored - 1
    dataset.PixelRepresentation = int(signed)
    for keyword, value in fields.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path)
    return path


def ramp(low, high, shape=(128, 128), dtype=np.uint16):
    """Every value from ``low`` to ``high`` (and each about equally often), row by row."""
    return np.rint(np.linspace(low, high, shape[0] * shape[1])).reshape(shape).astype(dtype)


def levels(image):
    return len(np.unique(image))


def test_twelve_bits_with_a_window_use_the_window(tmp_path):
    image = ramp(1000, 2000)
    path = native(tmp_path, image, bits_stored=12, WindowCenter=1500, WindowWidth=1000)
    decoded, _ = dicom.read_image(path)
    assert levels(decoded) >= 200  # the stored bit range (4095) would leave ~63
    assert decoded[image == 1000].max() <= 1 and decoded[image == 2000].min() >= 254
    dataset = pydicom.dcmread(path)
    windowed = apply_windowing(dataset.pixel_array, dataset)  # onto 0 .. 4095
    assert np.array_equal(decoded, np.rint(windowed * (255 / 4095)).astype(np.uint8))


def test_the_first_of_several_windows_is_taken(tmp_path):
    image = ramp(1000, 2000)
    one = native(tmp_path, image, "one.dcm", 12, WindowCenter=1500, WindowWidth=1000)
    several = native(
        tmp_path, image, "two.dcm", 12, WindowCenter=[1500, 3000], WindowWidth=[1000, 400]
    )
    assert np.array_equal(dicom.read_image(one)[0], dicom.read_image(several)[0])


def test_sixteen_bits_without_a_window_are_stretched_over_their_own_range(tmp_path):
    image = ramp(1000, 4000)
    decoded, header = dicom.read_image(native(tmp_path, image))
    assert header.bits_stored == 16
    assert levels(decoded) >= 200  # the stored bit range (65535) would leave ~13
    assert decoded[image == 1000].max() == 0 and decoded[image == 4000].min() == 255
    assert np.all(np.diff(decoded.ravel().astype(int)) >= 0)  # monotone in the stored value


def voi_lut_item(entries, first, depth, data, vr):
    item = Dataset()
    item.LUTDescriptor = [entries, first, depth]
    item.LUTExplanation = "test LUT"
    if vr == "OW":
        item.LUTData = np.asarray(data, "<u2").tobytes()
        item["LUTData"].VR = "OW"
    else:
        item.LUTData = [int(value) for value in data]
        item["LUTData"].VR = "US"
    return item


@pytest.mark.parametrize("vr", ["OW", "US"])
def test_voi_lut_sequence_is_applied_as_pydicom_applies_it(tmp_path, vr):
    image = ramp(500, 2500)  # values below and above the LUT's input range too
    gamma = np.rint(4095 * (np.arange(1001) / 1000) ** 0.5)  # inputs 1000 .. 2000, 12-bit out
    item = voi_lut_item(1001, 1000, 16, gamma, vr)  # 16 declared for 12-bit entries
    path = native(tmp_path, image, bits_stored=12, VOILUTSequence=[item])
    decoded, _ = dicom.read_image(path)
    dataset = pydicom.dcmread(path)
    looked_up = apply_voi_lut(dataset.pixel_array, dataset)
    # The LUT's own range (0 .. 4095) becomes 0 .. 255, not its declared 16 bits.
    assert np.array_equal(decoded, np.rint(looked_up * (255 / 4095)).astype(np.uint8))
    assert decoded[image <= 1000].max() == 0 and decoded[image >= 2000].min() == 255
    assert levels(decoded) >= 200


def test_eight_bit_voi_lut_of_a_twelve_bit_image(tmp_path):
    """The usual 12-to-8-bit LUT: 4096 entries of 8 bits (pydicom 3.0 alone wraps its indices)."""
    image = ramp(0, 4095)
    lut = np.rint(255 * (np.arange(4096) / 4095) ** 2).astype(np.uint16)
    path = native(
        tmp_path, image, bits_stored=12, VOILUTSequence=[voi_lut_item(4096, 0, 8, lut, "OW")]
    )
    decoded, _ = dicom.read_image(path)
    assert np.array_equal(decoded, lut[image].astype(np.uint8))


def test_rescale_is_applied_before_the_window(tmp_path):
    image = ramp(512, 1536)  # rescaled: 0 .. 2048
    path = native(
        tmp_path,
        image,
        bits_stored=12,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=1024,  # in rescaled units: 0 .. 2048 is the window
        WindowWidth=2048,
    )
    decoded, _ = dicom.read_image(path)
    # Applied to the stored values the window would put them at 64 .. 191.
    assert decoded[image == 512].max() <= 1 and decoded[image == 1536].min() >= 254
    assert levels(decoded) >= 200
    dataset = pydicom.dcmread(path)
    windowed = apply_windowing(apply_modality_lut(dataset.pixel_array, dataset), dataset)
    low, high = 0 * 2 - 1024, 4095 * 2 - 1024  # the rescaled 12-bit range, pydicom's output
    assert np.array_equal(
        decoded, np.rint((windowed - low) * (255 / (high - low))).astype(np.uint8)
    )


def test_rescale_without_a_window_is_stretched(tmp_path):
    image = ramp(0, 1000)
    path = native(tmp_path, image, bits_stored=12, RescaleSlope=-1, RescaleIntercept=0)
    decoded, _ = dicom.read_image(path)
    assert decoded[image == 0].min() == 255 and decoded[image == 1000].max() == 0
    assert levels(decoded) >= 200


def test_monochrome1_is_inverted_after_the_window(tmp_path):
    image = ramp(1000, 2000)
    window = dict(WindowCenter=1200, WindowWidth=400)  # not symmetric about the data
    plain = native(tmp_path, image, "plain.dcm", 12, **window)
    inverted = native(
        tmp_path, image, "inverted.dcm", 12, PhotometricInterpretation="MONOCHROME1", **window
    )
    decoded, header = dicom.read_image(inverted)
    assert header.photometric == "MONOCHROME1"
    assert np.array_equal(decoded, 255 - dicom.read_image(plain)[0])
    assert decoded[image <= 1000].min() == 255 and decoded[image >= 1400].max() == 0


def test_signed_data_with_and_without_a_window(tmp_path):
    image = ramp(-1500, 1500, dtype=np.int16)
    decoded, _ = dicom.read_image(native(tmp_path, image, "plain.dcm", signed=True))
    assert decoded[image == -1500].max() == 0 and decoded[image == 1500].min() == 255
    assert levels(decoded) >= 200
    path = native(tmp_path, image, "window.dcm", signed=True, WindowCenter=0, WindowWidth=1000)
    decoded, _ = dicom.read_image(path)
    assert decoded[image <= -500].max() == 0 and decoded[image >= 500].min() == 255
    assert abs(int(decoded[image == 0][0]) - 128) <= 1


def test_signed_eight_bits_are_offset_as_before(tmp_path):
    image = ramp(-128, 127, shape=(16, 16), dtype=np.int8)
    decoded, _ = dicom.read_image(native(tmp_path, image, signed=True))
    assert np.array_equal(decoded, (image.astype(int) + 128).astype(np.uint8))


def test_a_window_pydicom_refuses_is_logged_and_the_image_stretched(tmp_path, caplog):
    image = ramp(1000, 4000)
    path = native(tmp_path, image, "zero.dcm", WindowCenter=2000, WindowWidth=0)
    with caplog.at_level(logging.WARNING, logger="ptxseg.io.dicom"):
        decoded, _ = dicom.read_image(path)
    assert "zero.dcm: VOI in the header not applied" in caplog.text
    assert np.array_equal(decoded, dicom.read_image(native(tmp_path, image, "none.dcm"))[0])


def test_colour_secondary_capture_is_read_as_luma(tmp_path):
    grey = (np.add.outer(np.arange(32), np.arange(48)) * 3 % 256).astype(np.uint8)
    rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    path, _ = synthetic(tmp_path, image=grey, jpeg_quality=None)
    dataset = pydicom.dcmread(path)
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 3, "RGB"
    dataset.PlanarConfiguration = 0
    dataset.PixelData = rgb.tobytes()
    dataset.save_as(path)
    decoded, _ = dicom.read_image(path)
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    assert np.array_equal(decoded, np.clip(np.rint(luma), 0, 255).astype(np.uint8))


def test_sixteen_bit_png_is_stretched_and_eight_bit_kept(tmp_path):
    deep = ramp(1000, 4000)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    decoded = png.read_grey(tmp_path / "deep.png")
    assert levels(decoded) >= 200  # dividing by 257 would leave ~13
    assert decoded[deep == 1000].max() == 0 and decoded[deep == 4000].min() == 255
    full = ramp(0, 65535)  # a 16-bit PNG over its whole range: the same as dividing by 257
    assert np.array_equal(
        png.to_grey_uint8(full), ((full.astype(np.uint32) * 255 + 32767) // 65535)
    )

    grey = ramp(20, 200, dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert np.array_equal(png.read_grey(tmp_path / "grey.png"), grey)
    bgra = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA)
    cv2.imwrite(str(tmp_path / "rgba.png"), bgra)
    assert np.array_equal(png.read_grey(tmp_path / "rgba.png"), grey)


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


def test_find_dicoms_walks_nested_folders_and_refuses_different_duplicates(tmp_path):
    synthetic(tmp_path / "a" / "b", name="1.2.3.dcm")
    synthetic(tmp_path / "c", name="1.2.4.dcm")
    (tmp_path / "a" / "b").mkdir(parents=True, exist_ok=True)
    found = dicom.find_dicoms(tmp_path)
    assert sorted(found) == ["1.2.3", "1.2.4"]
    synthetic(tmp_path / "d", name="1.2.3.dcm", patient_id="patient-2")
    with pytest.raises(dicom.DicomError, match=r"1\.2\.3.* is also at .*and the two files differ"):
        dicom.find_dicoms(tmp_path)
    with pytest.raises(FileNotFoundError):
        dicom.find_dicoms(tmp_path / "missing")


def test_find_dicoms_reads_identical_copies_once(tmp_path):
    first, _ = synthetic(tmp_path / "a", name="1.2.3.dcm")
    synthetic(tmp_path / "a", name="1.2.4.dcm", patient_id="patient-2")
    twin = tmp_path / "copy" / "a"
    twin.mkdir(parents=True)
    for path in (tmp_path / "a").iterdir():
        (twin / path.name).write_bytes(path.read_bytes())
    twins = []
    found = dicom.find_dicoms([tmp_path / "a", tmp_path / "copy"], twins)
    assert found == {"1.2.3": first, "1.2.4": tmp_path / "a" / "1.2.4.dcm"}
    assert twins == [
        (first, twin / "1.2.3.dcm"),
        (tmp_path / "a" / "1.2.4.dcm", twin / "1.2.4.dcm"),
    ]


def test_find_dicoms_follows_symlinked_folders_without_looping(tmp_path):
    synthetic(tmp_path / "real" / "study", name="1.2.3.dcm")
    links = tmp_path / "links"
    links.mkdir()
    (links / "train").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real" / "study" / "loop").symlink_to(links, target_is_directory=True)
    found = dicom.find_dicoms(links)
    assert sorted(found) == ["1.2.3"]
    assert found["1.2.3"] == links / "train" / "study" / "1.2.3.dcm"
