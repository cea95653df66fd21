"""DICOM outputs for DICOM inputs: a Segmentation, a Secondary Capture and a Parametric Map.

Each output joins the source radiograph's study (same patient and StudyInstanceUID, a new series
and SOP instance) and references the source image, so a PACS files it beside the radiograph.
highdicom builds the objects; this module adapts the SIIM-style headers to what it and the
standard need:

- A projection radiograph has no Frame of Reference. For the SEG highdicom would then copy Pixel
  Spacing into Pixel Measures without a Slice Thickness (valid: the standard asks for one only
  with a Frame of Reference), but its own reader refuses such a sequence. The SEG is therefore
  written without Pixel Measures: its pixels are the source's one for one (Spatial Locations
  Preserved), and the spacing stays in the referenced source.
- The Parametric Map IOD, unlike the SEG, requires a Frame of Reference, Pixel Measures and plane
  position and orientation. The map gets a Frame of Reference of its own (a new UID, so it claims
  no relation to any other image) laid on the source's pixel grid: origin at the first pixel,
  directions from the source's Patient Orientation (L\\F, a frontal chest as displayed, without
  one), the source's pixel spacing (1 mm without one) and a nominal 1 mm slice thickness, which
  a projection has not but the macro and highdicom's reader need.
- The SIIM release stores ages as bare numbers ("58"), which highdicom would copy into an invalid
  Patient's Age; they are rewritten as DICOM ages ("058Y"), and an unreadable age is left out.
- highdicom asks the Secondary Capture for a patient orientation that SIIM headers lack; the
  source's own (possibly empty) Patient Orientation is written instead of inventing one.
- Laterality (General Series, type 2C) follows the source's body part (`_laterality`): absent
  for an unpaired one such as CHEST; otherwise required on the capture and the map, whose IODs
  carry no Image Laterality, with the source's side (its Laterality, else its Image Laterality)
  or empty where unknown. dciodvfy refuses it on the SEG in any form, so the SEG has none.
- The Parametric Map holds float32 pixels (Float Pixel Data) with an identity mapping: the
  probabilities as given, not in integer steps.
- The Secondary Capture is a drawing for people: an outline that leaves the lung inside it
  visible, letters scaled to the image, and "NOT FOR DIAGNOSTIC USE" burned in (Burned In
  Annotation YES).

An empty prediction still gives a SEG with its one segment and one all-zero frame: the standard
wants at least one frame (Number of Frames is 1 or more), and highdicom 0.28 writes the zero
frame itself when every frame is empty. ``read_segmentation_mask`` reads missing frames as empty,
so SEGs from writers that omit empty frames read back as well.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes

from ptxseg.io import atomic, dicom

SEGMENT_LABEL = "Pneumothorax"
MANUFACTURER = "ptxseg"
# New series sort after the acquired ones in a viewer's series list.
SEG_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
PM_SERIES_NUMBER = 9903
_PROBABILITY_UNIT = hd.sr.CodedConcept("{probability}", "UCUM", "probability")
# The outline colour of the project's PNG overlays, in OpenCV's BGR order.
_OUTLINE_BGR = (0, 0, 255)
# Burned into every Secondary Capture: a research model's drawing is no diagnosis.
NOT_FOR_DIAGNOSTIC_USE = "NOT FOR DIAGNOSTIC USE"
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Letters 1/28 of the shorter side tall (37 px at 1024), never below 9 px.
_TEXT_FRACTION = 28
_MIN_TEXT_PX = 9
# The height of _FONT's capitals at scale 1, measured (203 px at scale 10); cv2.getTextSize's
# height (27) includes room above them.
_CAP_AT_SCALE_1 = 20.3

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_AGE = re.compile(r"[0-9]{3}[DWMY]")
# Source attributes not given to highdicom (see _header_for_highdicom).
_LEFT_TO_THE_SOURCE = frozenset(
    (
        "PixelData",
        "PatientAge",
        "PixelSpacing",
        "SliceThickness",
        "SpacingBetweenSlices",
        "FrameOfReferenceUID",
        "PositionReferenceIndicator",
        "ImageOrientationPatient",
        "ImagePositionPatient",
    )
)


def _name(dataset: pydicom.Dataset, path: str | os.PathLike | None) -> str:
    """What an error message calls the source: its path, else the file it was read from."""
    if path is not None:
        return str(path)
    filename = getattr(dataset, "filename", None)
    return str(filename) if isinstance(filename, str | os.PathLike) else "source dataset"


def check_source(dataset: pydicom.Dataset, path: str | os.PathLike | None = None) -> None:
    """Refuse a source no valid output can be derived from; ValueError naming file and attribute.

    Needed: a StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID that are valid UIDs (digits
    in dot-separated components without leading zeros, at most 64 characters), and a single-frame
    greyscale image (one sample a pixel, MONOCHROME1/2) with its Rows and Columns.
    """
    where = _name(dataset, path)
    for keyword in _UID_KEYWORDS:
        value = dataset.get(keyword)
        text = "" if value is None else str(value)
        if not text:
            raise ValueError(f"{where}: {keyword} is missing or empty")
        if len(text) > 64 or not _UID.fullmatch(text):
            raise ValueError(
                f"{where}: {keyword} {text!r} is not a valid UID (digits and dots, at most 64 "
                "characters)"
            )
    photometric = str(dataset.get("PhotometricInterpretation", "") or "")
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(
            f"{where}: PhotometricInterpretation {photometric!r} with SamplesPerPixel {samples} "
            "is not a greyscale image (MONOCHROME1 or MONOCHROME2)"
        )
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ValueError(f"{where}: NumberOfFrames is {frames}; a chest radiograph has one")
    for keyword in ("Rows", "Columns"):
        if int(dataset.get(keyword, 0) or 0) <= 0:
            raise ValueError(f"{where}: {keyword} is missing or zero")


def _load(source: pydicom.Dataset | str | os.PathLike) -> tuple[pydicom.Dataset, str]:
    """The source dataset, checked, and its name for messages."""
    if isinstance(source, pydicom.Dataset):
        dataset, path = source, None
    else:
        path = source
        try:
            dataset = pydicom.dcmread(path)
        except InvalidDicomError as error:
            raise dicom.DicomError(f"{path}: not a DICOM file ({error})") from error
    check_source(dataset, path)
    return dataset, _name(dataset, path)


def _check_shape(array: np.ndarray, dataset: pydicom.Dataset, what: str, where: str) -> None:
    expected = (int(dataset.Rows), int(dataset.Columns))
    if array.shape != expected:
        raise ValueError(
            f"{where}: the {what} is {array.shape}, the source image {expected} (Rows x Columns)"
        )


def _as_mask(mask: np.ndarray, dataset: pydicom.Dataset, where: str) -> np.ndarray:
    """``mask`` as bool, refused unless bool or integers 0 and 1 (a probability map is no mask)."""
    mask = np.asarray(mask)
    _check_shape(mask, dataset, "mask", where)
    if mask.dtype != bool and not (mask.dtype.kind in "iu" and np.isin(mask, (0, 1)).all()):
        raise ValueError(f"{where}: the mask must be bool (or integers 0 and 1), got {mask.dtype}")
    return mask.astype(bool, copy=False)


def _dicom_age(raw: str) -> str | None:
    """A Patient's Age as DICOM writes it ("058Y"), from the SIIM release's bare "58"."""
    text = raw.strip().upper()
    if _AGE.fullmatch(text):
        return text
    if text.isdigit() and int(text) < 1000:
        return f"{int(text):03d}Y"
    return None


def _header_for_highdicom(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of the source's header (no pixel data) that highdicom turns into valid outputs.

    Pixel Spacing is left out (see the module's docstring: highdicom could not read its own
    output back), and so is any Frame of Reference: a projection has no plane in patient space
    for highdicom to place the outputs in. A SIIM age is rewritten in DICOM's form.
    """
    header = pydicom.Dataset()
    for element in dataset:
        if element.keyword not in _LEFT_TO_THE_SOURCE:
            header.add(copy.deepcopy(element))  # the caller's dataset stays as it was
    age = _dicom_age(str(dataset.get("PatientAge", "") or ""))
    if age is not None:
        header.PatientAge = age
    header.file_meta = getattr(dataset, "file_meta", pydicom.dataset.FileMetaDataset())
    return header


@contextlib.contextmanager
def _quiet_person_names() -> Iterator[None]:
    # SIIM names are the patient's ID, one component; highdicom warns on each such name, which
    # would flood the logs with one warning per output for a value copied as it stands.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        yield


# Body Part Examined terms (PS3.16 Annex L) of unpaired regions, for which General Series'
# Laterality (type 2C) must be absent. Written out here: no DICOM library lists which terms are
# paired. A term not listed (a paired one, or one outside Annex L such as "THORAX") is treated as
# possibly paired, as dciodvfy treats it.
_UNPAIRED_BODY_PARTS = frozenset(
    (
        "ABDOMEN",
        "ABDOMENPELVIS",
        "CHEST",
        "CHESTABDOMEN",
        "CHESTABDPELVIS",
        "CSPINE",
        "HEAD",
        "HEART",
        "LSPINE",
        "NECK",
        "PELVIS",
        "SKULL",
        "SPINE",
        "TSPINE",
        "WHOLEBODY",
    )
)


def _laterality(source: pydicom.Dataset) -> str | None:
    """The outputs' Laterality (General Series, type 2C); None where it must be absent.

    Required, and possibly empty, unless the body part examined is known to be unpaired or the
    image carries Image Laterality. The outputs' IODs have no Image Laterality, so it is required
    for any body part not known to be unpaired: the source's Laterality where it has a value, else
    its Image Laterality where that is L or R (the source's DX Anatomy Imaged says the side; B
    and U have no Laterality equivalent), else empty: unknown.
    """
    body_part = str(source.get("BodyPartExamined", "") or "").strip().upper()
    if body_part in _UNPAIRED_BODY_PARTS:
        return None
    for keyword in ("Laterality", "ImageLaterality"):
        value = str(source.get(keyword, "") or "").strip().upper()
        if value in ("L", "R"):
            return value
    return ""


def _keep_orientation_and_anatomy(
    output: pydicom.Dataset, source: pydicom.Dataset, *, laterality: bool = True
) -> None:
    """The source's Patient Orientation, Body Part Examined and Laterality, as the standard asks;
    without ``laterality`` (a SEG) no Laterality at all."""
    # Patient Orientation is required (type 2C) on images without plane orientation and may be
    # empty; the source's own is the only one known.
    output.PatientOrientation = source.get("PatientOrientation", "")
    if source.get("BodyPartExamined"):
        output.BodyPartExamined = source.BodyPartExamined
    value = _laterality(source) if laterality else None
    if value is None:
        if "Laterality" in output:
            del output.Laterality
    else:
        output.Laterality = value


# Patient directions (x to the left, y to the back, z to the head) of Patient Orientation's letters.
_DIRECTIONS = {
    "L": (1.0, 0.0, 0.0),
    "R": (-1.0, 0.0, 0.0),
    "P": (0.0, 1.0, 0.0),
    "A": (0.0, -1.0, 0.0),
    "H": (0.0, 0.0, 1.0),
    "F": (0.0, 0.0, -1.0),
}


def _image_orientation(dataset: pydicom.Dataset) -> list[float]:
    """Row and column directions from the source's Patient Orientation; L\\F without a usable one."""
    value = dataset.get("PatientOrientation") or []
    letters = [str(v).strip().upper() for v in ([value] if isinstance(value, str) else value)]
    if len(letters) == 2 and all(letter in _DIRECTIONS for letter in letters):
        row, column = (_DIRECTIONS[letter] for letter in letters)
        if np.dot(row, column) == 0:  # perpendicular: not L\R or F\F
            return [*row, *column]
    return [*_DIRECTIONS["L"], *_DIRECTIONS["F"]]


def _own_frame_of_reference(header: pydicom.Dataset, dataset: pydicom.Dataset) -> None:
    """Give ``header`` a new Frame of Reference on the source's pixel grid (module docstring)."""
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing") or [1.0, 1.0]
    header.FrameOfReferenceUID = hd.UID()
    header.PositionReferenceIndicator = ""
    header.ImageOrientationPatient = _image_orientation(dataset)
    header.ImagePositionPatient = [0.0, 0.0, 0.0]
    header.PixelSpacing = [float(v) for v in spacing]
    header.SliceThickness = 1.0


def _save(dataset: pydicom.Dataset, out_path: str | os.PathLike) -> None:
    """Write atomically: a killed job leaves the previous file or none, never part of one."""
    with atomic.atomic_open(out_path, "wb") as handle:
        dataset.save_as(handle, enforce_file_format=True)


def _algorithm(algorithm_version: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=MANUFACTURER,
        version=algorithm_version,
        family=codes.cid7162.ArtificialIntelligence,
    )


def write_segmentation(
    source: pydicom.Dataset | str | os.PathLike,
    mask: np.ndarray,
    out_path: str | os.PathLike,
    *,
    algorithm_version: str,
    series_number: int = SEG_SERIES_NUMBER,
) -> hd.seg.Segmentation:
    """Write a binary DICOM Segmentation of ``mask`` (bool, the source's Rows x Columns).

    One segment, "Pneumothorax" (SCT 36118008, category SCT 49755003 "Morphologically Abnormal
    Structure"), found automatically by the algorithm ptxseg ``algorithm_version`` (family
    Artificial Intelligence), referencing the source image. An all-zero mask gives one all-zero
    frame. Returns the dataset written.
    """
    dataset, where = _load(source)
    mask = _as_mask(mask, dataset, where)
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Pneumothorax,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(algorithm_version),
    )
    with _quiet_person_names():
        seg = hd.seg.Segmentation(
            source_images=[_header_for_highdicom(dataset)],
            pixel_array=mask,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=MANUFACTURER,
            software_versions=algorithm_version,
            device_serial_number=algorithm_version,  # software: its version, no serial
            content_label="PNEUMOTHORAX",
            content_description="Pneumothorax segmentation by ptxseg",
            # False: one frame always, also for an empty mask, without highdicom's warning
            # that it falls back to writing the empty frame.
            omit_empty_frames=False,
        )
    seg.SeriesDescription = "ptxseg pneumothorax segmentation"
    # dciodvfy refuses a SEG's series Laterality in any form, body part known or not, paired or
    # not (a segment's side would be a modifier of its segmented property, not the series').
    _keep_orientation_and_anatomy(seg, dataset, laterality=False)
    _save(seg, out_path)
    return seg


def text_height(shape: tuple[int, ...]) -> int:
    """The height in pixels of a capital letter drawn on an image of ``shape``: 1/28 of its
    shorter side (37 px at 1024), at least 9 px, below which Hershey letters are not legible."""
    return max(_MIN_TEXT_PX, round(min(shape[:2]) / _TEXT_FRACTION))


def _wrapped(text: str, width: int, scale: float, thickness: int) -> list[str]:
    """``text`` in lines no wider than ``width`` where its words allow (a longer word keeps a line)."""
    lines: list[str] = []
    for word in text.split():
        line = f"{lines[-1]} {word}" if lines else word
        fits = cv2.getTextSize(line, _FONT, scale, thickness)[0][0] <= width
        if lines and fits:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def _draw_text(colour: np.ndarray, text: str, *, bottom: bool = False) -> None:
    """White text edged in black (legible on any grey), at the top-left corner or the bottom-left,
    wrapped to the image's width, in place."""
    height, width = colour.shape[:2]
    cap = text_height(colour.shape)
    scale = cap / _CAP_AT_SCALE_1
    thickness = max(1, round(cap / 12))
    margin = max(2, cap // 2)
    lines = _wrapped(text, width - 2 * margin, scale, thickness)
    step = round(cap * 1.6)  # line pitch: room for descenders and the black edge
    top = height - margin - step * (len(lines) - 1) if bottom else margin + cap
    for k, line in enumerate(lines):
        origin = (margin, top + k * step)
        cv2.putText(colour, line, origin, _FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(colour, line, origin, _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def outline_thickness(shape: tuple[int, ...]) -> int:
    """The outline's width in pixels: 1 up to 799 px on the shorter side, 2 at 1024."""
    return max(1, min(shape[:2]) // 400)


def outline_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    probability: float | None = None,
    *,
    fill: bool = False,
    note: str | None = None,
) -> np.ndarray:
    """The radiograph in colour with the region outlined in red, the probability as text.

    ``image`` is uint8 greyscale, ``mask`` bool of its shape; the result is uint8 BGR, as OpenCV
    orders channels (``ptxseg.io.png.encode_png`` writes it as is). Inside the outline the
    radiograph stays as it is, for the reader to see the lung under the prediction; ``fill``
    tints it red. Without ``probability`` no probability is written; ``note`` is written at the
    bottom-left. An empty mask leaves the image grey.
    """
    mask = np.asarray(mask, dtype=bool)  # an integer mask would index, not select
    colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if mask.any():
        if fill:
            colour[mask] = (0.6 * colour[mask] + 0.4 * np.array(_OUTLINE_BGR)).astype(np.uint8)
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(colour, contours, -1, _OUTLINE_BGR, outline_thickness(image.shape))
    if probability is not None:
        _draw_text(colour, f"Pneumothorax probability {probability:.2f}")
    if note is not None:
        _draw_text(colour, note, bottom=True)
    return colour


def _source_image_item(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """A Source Image Sequence item: the radiograph this image was derived from."""
    item = pydicom.Dataset()
    item.ReferencedSOPClassUID = dataset.SOPClassUID
    item.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [
        hd.sr.CodedConcept("121322", "DCM", "Source image for image processing operation")
    ]
    return item


def _referenced_series(dataset: pydicom.Dataset) -> list[pydicom.Dataset]:
    """A Referenced Series Sequence (Common Instance Reference) naming the source image."""
    instance = pydicom.Dataset()
    instance.ReferencedSOPClassUID = dataset.SOPClassUID
    instance.ReferencedSOPInstanceUID = dataset.SOPInstanceUID
    series = pydicom.Dataset()
    series.SeriesInstanceUID = dataset.SeriesInstanceUID
    series.ReferencedInstanceSequence = [instance]
    return [series]


def write_secondary_capture(
    source: pydicom.Dataset | str | os.PathLike,
    mask: np.ndarray,
    probability: float | None,
    out_path: str | os.PathLike,
    *,
    algorithm_version: str,
    image: np.ndarray | None = None,
    fill: bool = False,
    series_number: int = SC_SERIES_NUMBER,
) -> hd.sc.SCImage:
    """Write an RGB Secondary Capture of the radiograph with the mask outlined and ``probability``.

    For viewers that show no SEG on projection radiographs. ``image`` is the radiograph as
    ``ptxseg.io.dicom.read_image`` decodes it (uint8 after the header's LUTs); without it the
    source's pixel data are decoded the same way. The region is outlined (``fill``: tinted too),
    the probability written at the top and "NOT FOR DIAGNOSTIC USE" at the bottom, in letters
    scaled to the image (`outline_overlay`); Burned In Annotation says so. Returns the dataset
    written.
    """
    dataset, where = _load(source)
    mask = _as_mask(mask, dataset, where)
    if image is None:
        if "PixelData" not in dataset:
            raise dicom.DicomError(f"{where}: no Pixel Data element to draw the capture from")
        # The decoder read_image picks for the transfer syntax: JPEG decoders differ by a grey
        # level here and there, and the capture should show the pixels the model was given.
        image = dicom.to_uint8(dicom._pixels(dataset, where), dataset, where=where)
    _check_shape(image, dataset, "image", where)
    if probability is not None and not 0.0 <= probability <= 1.0:
        raise ValueError(f"{where}: probability {probability} is outside 0..1")
    drawn = outline_overlay(image, mask, probability, fill=fill, note=NOT_FOR_DIAGNOSTIC_USE)
    rgb = cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB)
    header = _header_for_highdicom(dataset)
    with _quiet_person_names():
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=header,
            pixel_array=rgb,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            # Replaced below by the source's own: highdicom wants a value, SIIM headers have none.
            patient_orientation=("L", "F"),
            transfer_syntax_uid=pydicom.uid.ExplicitVRLittleEndian,
        )
    _keep_orientation_and_anatomy(sc, dataset)
    sc.SeriesDescription = "ptxseg pneumothorax overlay"
    sc.ManufacturerModelName = MANUFACTURER
    sc.SoftwareVersions = algorithm_version
    # The outline, the probability and the not-for-diagnostic-use note are drawn into the pixels.
    sc.BurnedInAnnotation = "YES"
    sc.DerivationDescription = "Radiograph with the pneumothorax predicted by ptxseg outlined"
    sc.SourceImageSequence = [_source_image_item(dataset)]
    sc.ReferencedSeriesSequence = _referenced_series(dataset)
    _save(sc, out_path)
    return sc


def write_probability_map(
    source: pydicom.Dataset | str | os.PathLike,
    probability: np.ndarray,
    out_path: str | os.PathLike,
    *,
    algorithm_version: str,
    series_number: int = PM_SERIES_NUMBER,
) -> hd.pm.ParametricMap:
    """Write a Parametric Map of pixel probabilities (float in 0..1, the source's Rows x Columns).

    Stored as 32-bit floats (Float Pixel Data) with an identity real world value mapping (unit
    UCUM "{probability}"), so each value reads back exactly as its float32. Returns the dataset
    written.
    """
    dataset, where = _load(source)
    probability = np.asarray(probability)
    _check_shape(probability, dataset, "probability map", where)
    if probability.dtype.kind != "f" or not np.isfinite(probability).all():
        raise ValueError(f"{where}: the probability map must be finite floats")
    if probability.size and (probability.min() < 0.0 or probability.max() > 1.0):
        raise ValueError(
            f"{where}: probabilities span {probability.min()}..{probability.max()}, not 0..1"
        )
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="PROBABILITY",
        lut_explanation="Pneumothorax probability per pixel",
        unit=_PROBABILITY_UNIT,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
    )
    header = _header_for_highdicom(dataset)
    _own_frame_of_reference(header, dataset)
    with _quiet_person_names():
        pm = hd.pm.ParametricMap(
            source_images=[header],
            pixel_array=probability.astype(np.float32),
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=MANUFACTURER,
            software_versions=algorithm_version,
            device_serial_number=algorithm_version,  # software: its version, no serial
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            # Shown as 0 (black) to 1 (white) by viewers that ignore the mapping.
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
            content_label="PROBABILITY",
            content_description="Pneumothorax probability map by ptxseg",
        )
    pm.SeriesDescription = "ptxseg pneumothorax probability"
    _keep_orientation_and_anatomy(pm, dataset)
    _save(pm, out_path)
    return pm


def read_segmentation_mask(path: str | os.PathLike) -> np.ndarray:
    """The Pneumothorax segment of a SEG as a bool mask at its source image's size.

    Frames the SEG omits read as empty, so a SEG without any frame for the image is all False.
    Segments are found by their property type (SCT 36118008); several are united.
    """
    seg = hd.seg.segread(path)
    numbers = seg.get_segment_numbers(segmented_property_type=codes.SCT.Pneumothorax)
    if not numbers:
        raise ValueError(f"{path}: no segment of type Pneumothorax (SCT 36118008)")
    sources = seg.get_source_image_uids()
    if len(sources) != 1:
        raise ValueError(f"{path}: references {len(sources)} source images, expected one")
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[sources[0][2]],
        segment_numbers=numbers,
        assert_missing_frames_are_empty=True,
    )
    return pixels[0].any(axis=-1)


def validate_with_dciodvfy(path: str | os.PathLike) -> list[str]:
    """The errors dicom3tools' ``dciodvfy`` reports for a file (its lines starting "Error").

    Warnings are not returned. Raises FileNotFoundError where ``dciodvfy`` is not on PATH.
    """
    program = shutil.which("dciodvfy")
    if program is None:
        raise FileNotFoundError(
            "dciodvfy (dicom3tools; Debian/Ubuntu package dicom3tools) is not on PATH"
        )
    # dciodvfy reports on stderr and exits non-zero on errors; the report is what counts.
    result = subprocess.run(
        [program, str(Path(path))], capture_output=True, text=True, errors="replace", check=False
    )
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]
