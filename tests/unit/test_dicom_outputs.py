"""DICOM outputs for a SIIM-style DICOM: SEG, Secondary Capture and Parametric Map, each valid per
dicom3tools' dciodvfy, in the source's study, referencing it and reading back to what was written;
an empty prediction; sources that must be refused before anything is written.

dciodvfy checks skip where it is not installed, unless PTXSEG_REQUIRE_DCIODVFY=1 (as in CI).
"""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pydicom
import pytest

from ptxseg.io import dicom, dicom_outputs

VERSION = "0.1.0-test"
# Not square, so a swap of rows and columns cannot pass.
ROWS, COLUMNS = 96, 128


def _source_image() -> np.ndarray:
    return (np.add.outer(np.arange(ROWS), np.arange(COLUMNS)) * 2 % 256).astype(np.uint8)


def _write_source(path, **overrides):
    fields = dict(
        sop_instance_uid="1.2.826.0.1.3680043.8.498.11",
        study_instance_uid="1.2.826.0.1.3680043.8.498.12",
        series_instance_uid="1.2.826.0.1.3680043.8.498.13",
        patient_id="patient-1",
        patient_age=42,  # written bare ("42"), as in the SIIM release
        patient_sex="F",
        view_position="PA",
    )
    fields.update(overrides)
    dicom.write_dicom(path, _source_image(), **fields)
    return path


def _mask() -> np.ndarray:
    mask = np.zeros((ROWS, COLUMNS), dtype=bool)
    mask[30:60, 70:110] = True
    mask[70:80, 10:20] = True  # a second region
    return mask


def _probability() -> np.ndarray:
    rows, columns = np.mgrid[0:ROWS, 0:COLUMNS]
    return (rows * COLUMNS + columns).astype(np.float32) / (ROWS * COLUMNS - 1)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """A source and each output written from it: non-empty and empty predictions."""
    root = tmp_path_factory.mktemp("dicom_outputs")
    source = _write_source(root / "source.dcm")
    empty = np.zeros((ROWS, COLUMNS), dtype=bool)
    paths = {"source": source}
    for name, mask in (("seg", _mask()), ("empty_seg", empty)):
        paths[name] = root / f"{name}.dcm"
        dicom_outputs.write_segmentation(source, mask, paths[name], algorithm_version=VERSION)
    for name, mask, probability in (("sc", _mask(), 0.87), ("empty_sc", empty, None)):
        paths[name] = root / f"{name}.dcm"
        dicom_outputs.write_secondary_capture(
            source, mask, probability, paths[name], algorithm_version=VERSION
        )
    paths["pm"] = root / "pm.dcm"
    dicom_outputs.write_probability_map(
        source, _probability(), paths["pm"], algorithm_version=VERSION
    )
    return paths


def _dciodvfy_available() -> bool:
    if shutil.which("dciodvfy"):
        return True
    if os.environ.get("PTXSEG_REQUIRE_DCIODVFY") == "1":
        pytest.fail("PTXSEG_REQUIRE_DCIODVFY=1 but dciodvfy (dicom3tools) is not on PATH")
    pytest.skip("dciodvfy (dicom3tools) is not installed")
    return False


@pytest.mark.parametrize("name", ["seg", "empty_seg", "sc", "empty_sc", "pm"])
def test_dciodvfy_finds_no_errors(outputs, name):
    _dciodvfy_available()
    assert dicom_outputs.validate_with_dciodvfy(outputs[name]) == []


def test_validate_with_dciodvfy_returns_errors_only(tmp_path):
    _dciodvfy_available()
    source = pydicom.dcmread(_write_source(tmp_path / "source.dcm"))
    del source.Rows  # type 1 in the Image Pixel module
    broken = tmp_path / "broken.dcm"
    source.save_as(broken)
    errors = dicom_outputs.validate_with_dciodvfy(broken)
    assert errors and all(line.startswith("Error") for line in errors)
    assert any("Rows" in line for line in errors)


def test_validate_with_dciodvfy_without_the_program(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="dciodvfy"):
        dicom_outputs.validate_with_dciodvfy(tmp_path / "any.dcm")


@pytest.mark.parametrize("name", ["seg", "empty_seg", "sc", "pm"])
def test_outputs_join_the_source_study_and_reference_it(outputs, name):
    source = pydicom.dcmread(outputs["source"])
    output = pydicom.dcmread(outputs[name])
    for keyword in ("PatientID", "PatientName", "PatientSex", "StudyInstanceUID", "StudyDate"):
        assert output[keyword].value == source[keyword].value, keyword
    assert output.SeriesInstanceUID != source.SeriesInstanceUID
    assert output.SOPInstanceUID != source.SOPInstanceUID
    assert pydicom.uid.UID(output.SeriesInstanceUID).is_valid
    (series,) = output.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    (instance,) = series.ReferencedInstanceSequence
    assert instance.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert instance.ReferencedSOPClassUID == source.SOPClassUID
    assert output.BodyPartExamined == "CHEST"
    if "PatientAge" in output:  # the release's bare "42", as DICOM writes an age
        assert output.PatientAge == "042Y"


def test_segmentation_reads_back_to_the_mask(outputs):
    assert np.array_equal(dicom_outputs.read_segmentation_mask(outputs["seg"]), _mask())
    seg = pydicom.dcmread(outputs["seg"])
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Pneumothorax"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "36118008"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("ptxseg", VERSION)
    family = algorithm.AlgorithmFamilyCodeSequence[0]
    assert (family.CodeValue, family.CodingSchemeDesignator) == ("123110", "DCM")
    derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert derivation.SourceImageSequence[0].ReferencedSOPInstanceUID == (
        pydicom.dcmread(outputs["source"]).SOPInstanceUID
    )


def test_empty_prediction_gives_one_empty_frame(outputs):
    seg = pydicom.dcmread(outputs["empty_seg"])
    assert int(seg.NumberOfFrames) == 1 and len(seg.SegmentSequence) == 1
    back = dicom_outputs.read_segmentation_mask(outputs["empty_seg"])
    assert back.shape == (ROWS, COLUMNS) and not back.any()


def test_secondary_capture_draws_the_outline_on_the_radiograph(outputs):
    sc = pydicom.dcmread(outputs["sc"])
    assert sc.PhotometricInterpretation == "RGB" and sc.BurnedInAnnotation == "YES"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == (
        pydicom.dcmread(outputs["source"]).SOPInstanceUID
    )
    pixels = sc.pixel_array
    radiograph, _ = dicom.read_image(outputs["source"])  # JPEG-decoded, as the pipeline reads it
    assert pixels.shape == (ROWS, COLUMNS, 3)
    # Inside the region: tinted towards red; away from it and below the text: the radiograph.
    inside = pixels[40, 90].astype(int)
    assert inside[0] > inside[1] and inside[0] > inside[2]
    below_text = np.s_[85:, 30:60]
    for channel in range(3):
        assert np.array_equal(pixels[below_text][..., channel], radiograph[below_text])
    # The probability's text is drawn in the top rows, absent from the capture without one.
    text = np.s_[:12, :]
    assert not np.array_equal(pixels[text][..., 0], radiograph[text])
    empty = pydicom.dcmread(outputs["empty_sc"]).pixel_array
    for channel in range(3):
        assert np.array_equal(empty[..., channel], radiograph)


def test_outline_overlay_is_bgr_and_leaves_an_empty_mask_grey():
    image = _source_image()
    grey = dicom_outputs.outline_overlay(image, np.zeros_like(image, dtype=bool))
    assert grey.shape == (ROWS, COLUMNS, 3) and all(
        np.array_equal(grey[..., c], image) for c in range(3)
    )
    outlined = dicom_outputs.outline_overlay(image, _mask())
    edge = outlined[30, 90].astype(int)  # on the region's top edge: pure red, BGR order
    assert tuple(edge) == (0, 0, 255)


def test_probability_map_reads_back_within_its_quantisation(outputs):
    pm = pydicom.dcmread(outputs["pm"])
    assert pm.SOPClassUID == pydicom.uid.ParametricMapStorage
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    values = pm.pixel_array * mapping.RealWorldValueSlope + mapping.RealWorldValueIntercept
    assert values.shape == (ROWS, COLUMNS)
    assert np.abs(values - _probability()).max() <= 0.5 / 65535 + 1e-9
    # The map's own Frame of Reference, none the source has; and its pixels are the source's.
    assert pm.FrameOfReferenceUID != pydicom.dcmread(outputs["source"]).get("FrameOfReferenceUID")
    derivation = pm.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert derivation.SourceImageSequence[0].SpatialLocationsPreserved == "YES"


def test_a_dataset_is_accepted_and_left_unchanged(tmp_path):
    path = _write_source(tmp_path / "source.dcm")
    source = pydicom.dcmread(path)
    before = source.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda e: "")
    out = tmp_path / "seg.dcm"
    dicom_outputs.write_segmentation(source, _mask(), out, algorithm_version=VERSION)
    assert np.array_equal(dicom_outputs.read_segmentation_mask(out), _mask())
    after = source.to_json_dict(bulk_data_threshold=1, bulk_data_element_handler=lambda e: "")
    assert after == before


def _write(kind, source, out):
    if kind == "seg":
        dicom_outputs.write_segmentation(source, _mask(), out, algorithm_version=VERSION)
    elif kind == "sc":
        dicom_outputs.write_secondary_capture(source, _mask(), 0.5, out, algorithm_version=VERSION)
    else:
        dicom_outputs.write_probability_map(source, _probability(), out, algorithm_version=VERSION)


@pytest.mark.parametrize("kind", ["seg", "sc", "pm"])
@pytest.mark.parametrize(
    ("study_uid", "message"),
    [(None, "StudyInstanceUID is missing"), ("1.2.abc", "StudyInstanceUID '1.2.abc' is not")],
)
def test_a_bad_study_uid_is_refused_before_writing(tmp_path, kind, study_uid, message):
    dataset = pydicom.dcmread(_write_source(tmp_path / "source.dcm"))
    if study_uid is None:
        del dataset.StudyInstanceUID
    else:
        dataset.StudyInstanceUID = study_uid
    bad = tmp_path / "bad.dcm"
    dataset.save_as(bad)
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}: {message}"):
        _write(kind, bad, out_dir / f"{kind}.dcm")
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SeriesInstanceUID": ""}, "SeriesInstanceUID is missing or empty"),
        ({"SOPInstanceUID": "1.2.03"}, "SOPInstanceUID '1.2.03' is not a valid UID"),
        ({"SOPInstanceUID": "1." + "2" * 63}, r"SOPInstanceUID '1\.2{63}' is not a valid UID"),
        ({"SOPInstanceUID": "1.2.3."}, "SOPInstanceUID '1.2.3.' is not a valid UID"),
        (
            {"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3},
            "PhotometricInterpretation .RGB. with SamplesPerPixel 3 is not a greyscale",
        ),
        ({"NumberOfFrames": 2}, "NumberOfFrames is 2"),
        ({"Rows": 0}, "Rows is missing or zero"),
    ],
)
def test_check_source_names_the_file_and_attribute(tmp_path, change, message):
    path = _write_source(tmp_path / "source.dcm")
    dataset = pydicom.dcmread(path)
    dicom_outputs.check_source(dataset)  # the demo's header passes
    for keyword, value in change.items():
        setattr(dataset, keyword, value)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {message}"):
        dicom_outputs.check_source(dataset)
    with pytest.raises(ValueError, match=r"^elsewhere\.dcm: "):
        dicom_outputs.check_source(dataset, "elsewhere.dcm")


def test_a_mask_of_another_size_is_refused(tmp_path):
    source = _write_source(tmp_path / "source.dcm")
    out = tmp_path / "seg.dcm"
    with pytest.raises(ValueError, match=r"mask is \(96, 96\), the source image \(96, 128\)"):
        dicom_outputs.write_segmentation(
            source, np.zeros((ROWS, ROWS), bool), out, algorithm_version=VERSION
        )
    with pytest.raises(ValueError, match="not 0..1"):
        dicom_outputs.write_probability_map(
            source, _probability() * 2, out, algorithm_version=VERSION
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.dcm"]


@pytest.mark.realdata
def test_real_siim_file_outputs_are_valid(real_data, tmp_path):
    path = sorted((real_data / "siim-sample").glob("*.dcm"))[0]
    image, _ = dicom.read_image(path)
    mask = np.zeros(image.shape, dtype=bool)
    mask[200:400, 600:800] = True
    probability = mask.astype(np.float32) * 0.9
    seg, sc, pm = (tmp_path / f"{name}.dcm" for name in ("seg", "sc", "pm"))
    dicom_outputs.write_segmentation(path, mask, seg, algorithm_version=VERSION)
    dicom_outputs.write_secondary_capture(
        path, mask, 0.9, sc, algorithm_version=VERSION, image=image
    )
    dicom_outputs.write_probability_map(path, probability, pm, algorithm_version=VERSION)
    assert np.array_equal(dicom_outputs.read_segmentation_mask(seg), mask)
    if _dciodvfy_available():
        for output in (seg, sc, pm):
            assert dicom_outputs.validate_with_dciodvfy(output) == [], output


def test_a_deeper_hospital_export_gives_valid_outputs(tmp_path):
    """16-bit MONOCHROME1 with a Frame of Reference, Imager Pixel Spacing and an orientation."""
    deep = _source_image().astype(np.uint16) * 16
    path = tmp_path / "source.dcm"
    dicom.write_dicom(
        path,
        deep,
        sop_instance_uid="1.2.826.0.1.3680043.8.498.21",
        study_instance_uid="1.2.826.0.1.3680043.8.498.22",
        series_instance_uid="1.2.826.0.1.3680043.8.498.23",
        patient_id="patient-2",
        patient_age=None,
        patient_sex="M",
        view_position="AP",
        jpeg_quality=None,
        photometric="MONOCHROME1",
    )
    source = pydicom.dcmread(path)
    source.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.24"
    source.ImagerPixelSpacing = [0.2, 0.2]
    del source.PixelSpacing
    source.PatientOrientation = ["R", "F"]
    outs = {name: tmp_path / f"{name}.dcm" for name in ("seg", "sc", "pm")}
    dicom_outputs.write_segmentation(source, _mask(), outs["seg"], algorithm_version=VERSION)
    dicom_outputs.write_secondary_capture(
        source, _mask(), 0.25, outs["sc"], algorithm_version=VERSION
    )
    dicom_outputs.write_probability_map(
        source, _probability(), outs["pm"], algorithm_version=VERSION
    )
    assert np.array_equal(dicom_outputs.read_segmentation_mask(outs["seg"]), _mask())
    # The capture shows the radiograph as read_image displays it: MONOCHROME1 inverted.
    radiograph, _ = dicom.read_image(path)
    sc = pydicom.dcmread(outs["sc"])
    assert list(sc.PatientOrientation) == ["R", "F"]
    assert np.array_equal(sc.pixel_array[85:, 30:60, 1], radiograph[85:, 30:60])
    pm = pydicom.dcmread(outs["pm"])
    assert pm.FrameOfReferenceUID != source.FrameOfReferenceUID  # the map's own
    shared = pm.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [
        -1.0,
        0.0,
        0.0,
        0.0,
        0.0,
        -1.0,
    ]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.2, 0.2]
    if _dciodvfy_available():
        for name, out in outs.items():
            assert dicom_outputs.validate_with_dciodvfy(out) == [], name


def test_a_probability_map_given_as_mask_is_refused(tmp_path):
    source = _write_source(tmp_path / "source.dcm")
    with pytest.raises(ValueError, match="mask must be bool"):
        dicom_outputs.write_segmentation(
            source, _probability(), tmp_path / "seg.dcm", algorithm_version=VERSION
        )
    assert not (tmp_path / "seg.dcm").exists()
