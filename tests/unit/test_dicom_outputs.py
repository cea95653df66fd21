"""DICOM outputs for a SIIM-style DICOM: SEG, Secondary Capture and Parametric Map, each valid per
dicom3tools' dciodvfy, in the source's study, referencing it and reading back to what was written;
an empty prediction; sources that must be refused before anything is written. A hospital DX image
(MONOCHROME1, Laterality empty, Image Laterality set); the capture's outline, text scaled to the
image and not-for-diagnostic-use note; the Parametric Map's float32 probabilities.

dciodvfy checks skip where it is not installed, unless PTXSEG_REQUIRE_DCIODVFY=1 (as in CI).
"""

from __future__ import annotations

import os
import re
import shutil

import cv2
import numpy as np
import pydicom
import pytest

from ptxseg.deploy.dicom_files import DicomOutputs
from ptxseg.deploy.prediction import Prediction
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
    # The region's edge is red; inside it, the radiograph as it is (outline only, no fill).
    assert tuple(pixels[45, 70]) == (255, 0, 0)
    for channel in range(3):
        assert np.array_equal(pixels[40:56, 80:100, channel], radiograph[40:56, 80:100])
    # The probability is drawn at the top, the note at the bottom of every capture.
    assert not np.array_equal(pixels[:12, :, 0], radiograph[:12])
    assert not np.array_equal(pixels[-12:, :, 0], radiograph[-12:])
    empty = pydicom.dcmread(outputs["empty_sc"]).pixel_array
    for channel in range(3):
        assert np.array_equal(empty[:40, :, channel], radiograph[:40])
    assert not np.array_equal(empty[-12:, :, 0], radiograph[-12:])


def _edge_and_interior(mask: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(the mask's edge pixels, its pixels more than ``width`` from the edge)."""
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.erode(mask.astype(np.uint8), kernel, borderValue=0).astype(bool)
    deep = cv2.erode(mask.astype(np.uint8), kernel, iterations=width + 1, borderValue=0)
    return mask & ~inner, deep.astype(bool)


@pytest.mark.parametrize("shape", [(169, 211), (1024, 1024)])
def test_the_outline_leaves_the_lung_under_it_as_it_is(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    mask = np.zeros(shape, bool)
    rows, columns = shape
    mask[rows // 4 : rows // 2, columns // 3 : 2 * columns // 3] = True
    mask[3 * rows // 4 :, : columns // 5] = True  # a second region, at the image's corner
    edge, interior = _edge_and_interior(mask, dicom_outputs.outline_thickness(shape))
    outlined = dicom_outputs.outline_overlay(image, mask)
    assert (outlined[edge] == (0, 0, 255)).all()  # red, in OpenCV's BGR
    away = ~cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    for channel in range(3):
        assert np.array_equal(outlined[..., channel][interior], image[interior])
        assert np.array_equal(outlined[..., channel][away], image[away])
    # --fill tints the interior towards red as well.
    filled = dicom_outputs.outline_overlay(image, mask, fill=True)[interior].astype(int)
    assert (filled[:, 2] >= filled[:, 0]).all()
    assert (filled[:, 2] > image[interior]).mean() > 0.9


def _changed(drawn: np.ndarray, image: np.ndarray, axis: tuple[int, int]) -> np.ndarray:
    """The rows (axis (1, 2)) or columns (axis (0, 2)) where drawing changed a pixel."""
    return np.flatnonzero((drawn != image[..., None]).any(axis=axis))


@pytest.mark.parametrize(("shape", "cap"), [((169, 211), 9), ((512, 512), 18), ((1024, 1024), 37)])
def test_text_is_scaled_to_the_image(shape, cap):
    """Capitals 1/28 of the shorter side tall, never below 9 px: 9 px at 169 x 211 (the DX
    image; 5 px before), 37 px at 1024; every line inside the image."""
    assert dicom_outputs.text_height(shape) == cap
    grey = np.full(shape, 128, np.uint8)
    empty = np.zeros(shape, bool)
    note = dicom_outputs.outline_overlay(grey, empty, note=dicom_outputs.NOT_FOR_DIAGNOSTIC_USE)
    rows = _changed(note, grey, (1, 2))
    # One line of capitals: their height, and the black edge and antialiasing around them.
    assert rows.min() > shape[0] / 2 and cap <= rows.max() - rows.min() + 1 <= 1.5 * cap + 4
    columns = _changed(note, grey, (0, 2))
    assert columns.min() > 0 and columns.max() < shape[1] - 1
    probability = dicom_outputs.outline_overlay(grey, empty, 0.87)
    rows = _changed(probability, grey, (1, 2))
    assert rows.max() < shape[0] / 2 and rows.max() - rows.min() + 1 >= cap
    columns = _changed(probability, grey, (0, 2))
    assert columns.min() > 0 and columns.max() < shape[1] - 1


def test_the_capture_says_not_for_diagnostic_use(tmp_path):
    source = _write_source(tmp_path / "source.dcm")
    out = tmp_path / "sc.dcm"
    dicom_outputs.write_secondary_capture(source, _mask(), 0.5, out, algorithm_version=VERSION)
    sc = pydicom.dcmread(out)
    assert sc.BurnedInAnnotation == "YES"
    radiograph, _ = dicom.read_image(source)
    noted = dicom_outputs.outline_overlay(radiograph, _mask(), 0.5, note="NOT FOR DIAGNOSTIC USE")
    assert np.array_equal(sc.pixel_array, cv2.cvtColor(noted, cv2.COLOR_BGR2RGB))
    assert not np.array_equal(noted, dicom_outputs.outline_overlay(radiograph, _mask(), 0.5))


def test_outline_overlay_is_bgr_and_leaves_an_empty_mask_grey():
    image = _source_image()
    grey = dicom_outputs.outline_overlay(image, np.zeros_like(image, dtype=bool))
    assert grey.shape == (ROWS, COLUMNS, 3) and all(
        np.array_equal(grey[..., c], image) for c in range(3)
    )
    outlined = dicom_outputs.outline_overlay(image, _mask())
    edge = outlined[30, 90].astype(int)  # on the region's top edge: pure red, BGR order
    assert tuple(edge) == (0, 0, 255)


def test_probability_map_holds_the_float32_probabilities(outputs):
    pm = pydicom.dcmread(outputs["pm"])
    assert pm.SOPClassUID == pydicom.uid.ParametricMapStorage
    assert "FloatPixelData" in pm and "PixelData" not in pm
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (1.0, 0.0)
    values = pm.pixel_array
    assert values.dtype == np.float32 and values.shape == (ROWS, COLUMNS)
    assert np.array_equal(values, _probability())  # exactly: no 1/255 (or 1/65535) steps
    assert not np.allclose(values * 255, np.rint(values * 255), atol=1e-3)
    # The map's own Frame of Reference, none the source has; and its pixels are the source's.
    assert pm.FrameOfReferenceUID != pydicom.dcmread(outputs["source"]).get("FrameOfReferenceUID")
    derivation = pm.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert derivation.SourceImageSequence[0].SpatialLocationsPreserved == "YES"


def test_predict_maps_the_float_probabilities_not_the_pngs(tmp_path):
    """`ptxseg predict --dicom-probability`: the Parametric Map holds the prediction's float map
    (the models' own), not its 1/255-step map (the PNG's)."""
    source = _write_source(tmp_path / "source.dcm")
    prediction = Prediction(
        image_id="x",
        mask=_mask(),
        probability_map=np.rint(_probability() * 255).astype(np.float32) / 255,
        probability=0.5,
        calibrated_probability=0.5,
        uncertainty=0.0,
        source=str(source),
        float_probability_map=_probability(),
    )
    written = DicomOutputs(tmp_path / "out", probability_map=True).write(prediction)
    (path,) = [p for p in written if p.name.endswith("_probability.dcm")]
    assert np.array_equal(pydicom.dcmread(path).pixel_array, _probability())


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
    """Every SIIM sample DICOM: outputs without dciodvfy errors. Warnings left: no Study ID
    (needed only for a DICOMDIR; the release has none), SIIM's Patient's Name in the retired
    one-component form (the release's own value), and highdicom's QUANTITY Image and Frame Type
    on the Parametric Map (valid for that IOD; dicom3tools does not list it)."""
    for k, path in enumerate(sorted((real_data / "siim-sample").glob("*.dcm"))):
        folder = tmp_path / str(k)
        folder.mkdir()
        outs = _all_outputs(path, folder)
        assert "Laterality" not in pydicom.dcmread(outs["sc"])  # CHEST: unpaired
        if _dciodvfy_available():
            for name, output in outs.items():
                assert dicom_outputs.validate_with_dciodvfy(output) == [], (path.name, name)


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
    # Between the probability's lines at the top and the note at the bottom, beside the regions.
    assert np.array_equal(sc.pixel_array[34:64, 25:60, 1], radiograph[34:64, 25:60])
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


def _write_dx_like(path):
    """A hospital DX header as highdicom's dx_image.dcm has it: MONOCHROME1, 169 x 211, Body
    Part Examined THORAX (no Annex L term), Laterality present but empty, Image Laterality L."""
    image = np.random.default_rng(0).integers(0, 256, (169, 211), dtype=np.uint8)
    dicom.write_dicom(
        path,
        image,
        sop_instance_uid="1.2.826.0.1.3680043.8.498.31",
        study_instance_uid="1.2.826.0.1.3680043.8.498.32",
        series_instance_uid="1.2.826.0.1.3680043.8.498.33",
        patient_id="patient-3",
        patient_age=5,
        patient_sex="F",
        view_position="",
        jpeg_quality=None,
        photometric="MONOCHROME1",
    )
    source = pydicom.dcmread(path)
    source.SOPClassUID = source.file_meta.MediaStorageSOPClassUID = (
        pydicom.uid.DigitalXRayImageStorageForPresentation
    )
    source.Modality = "DX"
    source.BodyPartExamined = "THORAX"
    source.Laterality = ""
    source.ImageLaterality = "L"
    source.save_as(path)
    return path


def _all_outputs(source, folder) -> dict:
    image, _ = dicom.read_image(source)
    mask = np.zeros(image.shape, bool)
    rows, columns = image.shape
    mask[rows // 4 : rows // 2, columns // 4 : columns // 2] = True
    probability = np.linspace(0, 1, image.size, dtype=np.float32).reshape(image.shape)
    outs = {name: folder / f"{name}.dcm" for name in ("seg", "sc", "pm")}
    dicom_outputs.write_segmentation(source, mask, outs["seg"], algorithm_version=VERSION)
    dicom_outputs.write_secondary_capture(
        source, mask, 0.9, outs["sc"], algorithm_version=VERSION, image=image
    )
    dicom_outputs.write_probability_map(source, probability, outs["pm"], algorithm_version=VERSION)
    assert np.array_equal(dicom_outputs.read_segmentation_mask(outs["seg"]), mask)
    return outs


def test_a_dx_image_with_an_empty_laterality_gives_valid_outputs(tmp_path):
    """Laterality (General Series, type 2C) on a thorax, a term dciodvfy cannot tell unpaired:
    required on the capture and map, which have no Image Laterality; the source's side from its
    Image Laterality. Refused on a SEG in any form. dciodvfy finds no error in any of them."""
    outs = _all_outputs(_write_dx_like(tmp_path / "dx.dcm"), tmp_path)
    assert pydicom.dcmread(outs["sc"]).Laterality == "L"
    assert pydicom.dcmread(outs["pm"]).Laterality == "L"
    assert "Laterality" not in pydicom.dcmread(outs["seg"])
    if _dciodvfy_available():
        for name, out in outs.items():
            assert dicom_outputs.validate_with_dciodvfy(out) == [], name


@pytest.mark.parametrize(
    ("header", "laterality"),
    [
        ({"BodyPartExamined": "CHEST"}, None),  # unpaired: absent
        ({"BodyPartExamined": "CHEST", "Laterality": "L", "ImageLaterality": "L"}, None),
        ({"BodyPartExamined": "THORAX", "Laterality": "R", "ImageLaterality": "L"}, "R"),
        ({"BodyPartExamined": "THORAX", "Laterality": "", "ImageLaterality": "L"}, "L"),
        ({"BodyPartExamined": "BREAST", "ImageLaterality": "B"}, ""),  # paired, side unknown
        ({}, ""),  # no body part: required, unknown
    ],
)
def test_laterality_is_copied_or_emptied_as_the_standard_asks(header, laterality):
    source = pydicom.Dataset()
    for keyword, value in header.items():
        setattr(source, keyword, value)
    assert dicom_outputs._laterality(source) == laterality


@pytest.mark.realdata
def test_the_hospital_dx_image_gives_outputs_without_dciodvfy_errors(real_data, tmp_path):
    """highdicom's dx_image.dcm (../shared/data/hospital): every output passes dciodvfy without
    an error. Warnings left: Body Part Examined THORAX is the source's own value, not an Annex L
    term; the Parametric Map's Image and Frame Type QUANTITY are highdicom's, valid for the IOD."""
    source = real_data / "hospital" / "dx_image.dcm"
    if not source.is_file():
        pytest.fail(f"{source} is missing (see its PROVENANCE.md)")
    outs = _all_outputs(source, tmp_path)
    sc = pydicom.dcmread(outs["sc"])
    assert sc.BurnedInAnnotation == "YES" and sc.Rows == 169 and sc.Columns == 211
    if _dciodvfy_available():
        for name, out in outs.items():
            assert dicom_outputs.validate_with_dciodvfy(out) == [], name


@pytest.mark.parametrize(
    "body_part", [*sorted(dicom_outputs._UNPAIRED_BODY_PARTS), "BREAST", "KNEE", "THORAX"]
)
def test_the_unpaired_body_parts_agree_with_dciodvfy(tmp_path, body_part):
    """The hand-written list of unpaired Body Part Examined terms is dciodvfy's: the capture of
    a source with each term (and no side known) has no Laterality error, absent or empty."""
    _dciodvfy_available()
    source = pydicom.dcmread(_write_source(tmp_path / "source.dcm"))
    source.BodyPartExamined = body_part
    out = tmp_path / "sc.dcm"
    dicom_outputs.write_secondary_capture(source, _mask(), 0.5, out, algorithm_version=VERSION)
    unpaired = body_part in dicom_outputs._UNPAIRED_BODY_PARTS
    assert ("Laterality" not in pydicom.dcmread(out)) == unpaired
    assert dicom_outputs.validate_with_dciodvfy(out) == []
