"""Reading chest X-ray DICOMs into 8-bit greyscale arrays, with the header fields the pipeline uses.

The SIIM-ACR files are JPEG-baseline compressed; Pillow decodes that syntax fastest, so it is asked
for by name (pydicom would otherwise prefer GDCM where installed, about four times slower).
JPEG-lossless and JPEG 2000 go to pylibjpeg's decoders; anything else to pydicom's own choice.

Hospital exports are deeper than 8 bits and say in their header how to display them (Rescale
Slope/Intercept or a Modality LUT, then a window or a VOI LUT); ``to_uint8`` applies those through
pydicom before quantising to 8 bits, and stretches deeper images without them over their own
range. The SIIM files (8-bit, no VOI) pass through untouched.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
)

from ptxseg.io import atomic
from ptxseg.io.files import find_by_stem
from ptxseg.io.png import scale_to_uint8

log = logging.getLogger(__name__)

# Decoder plugin per transfer syntax; syntaxes not listed use pydicom's default order.
_PREFERRED_PLUGIN = {
    JPEGBaseline8Bit: "pillow",
    JPEGExtended12Bit: "pylibjpeg",
    JPEGLossless: "pylibjpeg",
    JPEGLosslessSV1: "pylibjpeg",
    JPEG2000Lossless: "pylibjpeg",
    JPEG2000: "pylibjpeg",
}


# The SIIM release stores ages as bare numbers ("58"), which pydicom flags on every read; the
# values are parsed leniently below, so value validation would only flood the logs.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) in little-endian byte order


class DicomError(ValueError):
    """A DICOM file that cannot be read; the message starts with the file's path."""


@dataclass(frozen=True)
class DicomHeader:
    """The header fields the index keeps; strings exactly as stored (validate before use as paths)."""

    sop_instance_uid: str
    patient_id: str
    patient_age: int | None
    patient_sex: str
    view_position: str
    rows: int
    columns: int
    photometric: str
    bits_stored: int
    transfer_syntax: str

    def as_dict(self) -> dict:
        return asdict(self)


def _text(dataset: pydicom.Dataset, keyword: str) -> str:
    value = dataset.get(keyword, "")
    return "" if value is None else str(value).strip()


def _age_in_years(raw: str) -> int | None:
    # DICOM AS is "nnnD/W/M/Y"; the SIIM files store bare numbers ("58").
    text = raw.strip().upper()
    if not text:
        return None
    unit = text[-1] if text[-1] in "DWMY" else "Y"
    digits = text[:-1] if text[-1] in "DWMY" else text
    if not digits.isdigit():
        return None
    value = int(digits)
    return {"Y": value, "M": value // 12, "W": value // 52, "D": value // 365}[unit]


def _header(dataset: pydicom.Dataset) -> DicomHeader:
    meta = getattr(dataset, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return DicomHeader(
        sop_instance_uid=_text(dataset, "SOPInstanceUID"),
        patient_id=_text(dataset, "PatientID"),
        patient_age=_age_in_years(_text(dataset, "PatientAge")),
        patient_sex=_text(dataset, "PatientSex"),
        view_position=_text(dataset, "ViewPosition"),
        rows=int(dataset.get("Rows", 0) or 0),
        columns=int(dataset.get("Columns", 0) or 0),
        photometric=_text(dataset, "PhotometricInterpretation"),
        bits_stored=int(dataset.get("BitsStored", 0) or 0),
        transfer_syntax=syntax,
    )


def _open(path: str | os.PathLike, stop_before_pixels: bool) -> pydicom.Dataset:
    try:
        with warnings.catch_warnings():
            # pydicom warns about harmless header oddities; problems that matter raise below.
            warnings.simplefilter("ignore")
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as error:
        raise DicomError(f"{path}: not a DICOM file ({error})") from error
    except FileNotFoundError:
        raise
    except Exception as error:  # truncated or corrupt files raise many kinds of errors
        raise DicomError(f"{path}: unreadable DICOM ({type(error).__name__}: {error})") from error


def read_header(path: str | os.PathLike) -> DicomHeader:
    """The header alone, without reading pixel data."""
    return _header(_open(path, stop_before_pixels=True))


def _require_pixel_data(dataset: pydicom.Dataset, path: str | os.PathLike) -> None:
    if "PixelData" in dataset:
        return
    # pydicom drops an element the file ends inside of: tell truncation from absence.
    with open(path, "rb") as handle:
        if _PIXEL_DATA_TAG in handle.read():
            raise DicomError(f"{path}: pixel data is truncated (the file ends inside it)")
    raise DicomError(f"{path}: no Pixel Data element")


def check_pixel_data(path: str | os.PathLike) -> DicomHeader:
    """Cheap integrity check without decoding: pixel data present and complete.

    Native data must hold rows * columns * samples * bytes-per-sample bytes; encapsulated
    (compressed) data must parse into fragments whose last one ends with a JPEG or JPEG 2000
    end-of-image marker, which a truncated file lacks. Raises DicomError naming the file.
    """
    dataset = _open(path, stop_before_pixels=False)
    header = _header(dataset)
    _require_pixel_data(dataset, path)
    if header.rows <= 0 or header.columns <= 0:
        raise DicomError(f"{path}: Rows/Columns missing or zero ({header.rows}x{header.columns})")
    data = dataset.PixelData
    if dataset.file_meta.TransferSyntaxUID.is_encapsulated:
        try:
            frames = list(pydicom.encaps.generate_frames(data, number_of_frames=1))
        except Exception as error:
            raise DicomError(f"{path}: compressed pixel data is damaged ({error})") from error
        if not frames or not frames[0].rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise DicomError(f"{path}: compressed pixel data is truncated (no end-of-image marker)")
    else:
        samples = int(dataset.get("SamplesPerPixel", 1) or 1)
        bits = int(dataset.get("BitsAllocated", 8) or 8)
        expected = header.rows * header.columns * samples * max(bits // 8, 1)
        if len(data) < expected:
            raise DicomError(f"{path}: pixel data holds {len(data)} bytes, expected {expected}")
    return header


def _pixels(dataset: pydicom.Dataset, path: str | os.PathLike) -> np.ndarray:
    syntax = dataset.file_meta.TransferSyntaxUID
    plugin = _PREFERRED_PLUGIN.get(syntax, "")
    try:
        return (
            dataset.pixel_array
            if not plugin
            else pydicom.pixels.pixel_array(dataset, decoding_plugin=plugin)
        )
    except Exception as error:
        raise DicomError(
            f"{path}: pixel data cannot be decoded ({type(error).__name__}: {error})"
        ) from error


def _rescale(dataset: pydicom.Dataset) -> bool:
    """Whether the header's Modality LUT or Rescale Slope/Intercept changes the stored values."""
    if dataset.get("ModalityLUTSequence"):
        return True
    slope, intercept = dataset.get("RescaleSlope"), dataset.get("RescaleIntercept")
    if slope is None or intercept is None or slope == "" or intercept == "":
        return False
    return (float(slope), float(intercept)) != (1.0, 0.0)


def _voi_lut(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """A dataset holding only the first VOI LUT, as ``apply_voi`` reads it, 8-bit entries declared 16.

    pydicom 3.0's ``apply_voi`` looks the LUT up through indices of the entries' own type, so an
    8-bit LUT with more than 256 entries (a 12-bit image mapped to 8 bits, the usual case) wraps
    its indices round. Declaring 16 bits widens only that type: LUT Data is read as 16-bit words
    (OW) or as the listed numbers (US) either way, so the entries are unchanged.
    """
    item = copy.deepcopy(dataset.VOILUTSequence[0])
    entries, first, depth = (int(value) for value in item.LUTDescriptor)
    if depth == 8:
        item.LUTDescriptor = [entries, first, 16]
    lut = pydicom.Dataset()
    lut.VOILUTSequence = [item]
    meta = getattr(dataset, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        lut.file_meta = meta  # the byte order of OW LUT Data ...
    else:  # ... or, without one, the byte order the dataset was read in
        lut.set_original_encoding(*dataset.original_encoding)
    return lut


def _voi_to_uint8(values: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray | None:
    """The header's VOI transform applied and quantised to 8 bits; None where the header has none.

    A VOI LUT Sequence is preferred to Window Center/Width when both are given, as pydicom's
    ``apply_voi_lut`` does. Where the header offers several (alternative views of one image),
    the first is taken, as ``apply_voi_lut`` does by default: DICOM gives no ranking, and the
    first is the one viewers show. Raises ValueError (and the like) where pydicom refuses the
    header's values.
    """
    sequence = dataset.get("VOILUTSequence")
    if sequence and None not in (sequence[0].get("LUTDescriptor"), sequence[0].get("LUTData")):
        lut = _voi_lut(dataset)
        if values.dtype.kind == "f":  # rescaled values index the LUT as integers
            values = np.rint(values).astype(np.int64)
        entries, first = lut.VOILUTSequence[0].LUTDescriptor[:2]
        # The LUT's own lowest and highest entries become 0 and 255, not 0 and 2**bits - 1 of
        # its descriptor: some devices declare 16 bits for 12-bit entries (viewers such as
        # Horos and Cornerstone read the table's range too).
        table = apply_voi(np.arange(first, first + (entries or 2**16)), lut)
        return scale_to_uint8(apply_voi(values, lut), table.min(), table.max())
    if dataset.get("WindowCenter") is not None and dataset.get("WindowWidth") is not None:
        # pydicom maps the window onto the stored (or rescaled) value range; the window's
        # outputs for -inf and +inf are the ends of that range, which become 0 and 255.
        low, high = apply_windowing(np.array([-np.inf, np.inf]), dataset, index=0)
        return scale_to_uint8(apply_windowing(values, dataset, index=0), low, high)
    return None


def to_uint8(pixels: np.ndarray, dataset: pydicom.Dataset, where: str = "") -> np.ndarray:
    """Greyscale 8-bit from decoded pixels, as the header says to display them.

    In DICOM's order: the Modality LUT or Rescale Slope/Intercept; then the VOI transform (VOI
    LUT or window), whose output range becomes 0-255; MONOCHROME1 inverted last, on the 8-bit
    result. Without a VOI in the header, data deeper than 8 bits (or rescaled) are stretched
    over the image's own minimum..maximum (``scale_to_uint8``); 8-bit data keep their values
    (signed ones offset by 128). A VOI that pydicom refuses (e.g. a window width below 1) is
    logged naming ``where`` and the image is stretched instead: better a well-used image than
    a failed repack. Colour secondary captures: ITU-R BT.601 luma, no rescale or VOI.
    """
    bits = int(dataset.get("BitsStored", 0) or 0) or 8 * pixels.dtype.itemsize
    signed = int(dataset.get("PixelRepresentation", 0) or 0) == 1
    monochrome1 = _text(dataset, "PhotometricInterpretation") == "MONOCHROME1"
    grey = pixels.ndim == 2
    image = None
    try:
        rescaled = grey and _rescale(dataset)
        values = apply_modality_lut(pixels, dataset) if rescaled else pixels
    except (ValueError, TypeError, AttributeError, IndexError) as error:
        raise DicomError(
            f"{where or 'DICOM'}: the Modality LUT / Rescale Slope and Intercept cannot be "
            f"applied ({type(error).__name__}: {error})"
        ) from error
    if grey:
        try:
            image = _voi_to_uint8(values, dataset)
        # pydicom raises these for header values it cannot use (a width below 1, a field it
        # needs missing, a LUT depth or VOI LUT Function it does not know)
        except (
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
            IndexError,
            NotImplementedError,
        ) as error:
            log.warning(
                "%s: VOI in the header not applied (%s: %s); the image is stretched over its "
                "own range instead",
                where or "DICOM",
                type(error).__name__,
                error,
            )
    else:  # colour secondary captures: ITU-R BT.601 luma
        values = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if image is None:
        if bits > 8 or rescaled:
            image = scale_to_uint8(values)
        elif values.dtype == np.uint8:
            image = values  # the SIIM files: 8-bit, no VOI; no copy
        else:
            shifted = values.astype(np.float32)
            if signed:
                shifted += float(2 ** (bits - 1))
            image = np.clip(np.rint(shifted), 0, 255).astype(np.uint8)
    return 255 - image if monochrome1 else image


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, DicomHeader]:
    """Decode a single-frame greyscale DICOM to a (rows, columns) uint8 array and its header.

    Any depth, signedness, rescale, window or VOI LUT a hospital export carries is applied
    (``to_uint8``); colour secondary captures are read as their luma.
    """
    dataset = _open(path, stop_before_pixels=False)
    header = _header(dataset)
    _require_pixel_data(dataset, path)
    pixels = _pixels(dataset, path)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"{path}: {frames} frames; a chest radiograph has one")
    image = to_uint8(pixels, dataset, where=str(path))
    if image.shape != (header.rows, header.columns):
        raise DicomError(
            f"{path}: decoded shape {image.shape} differs from Rows x Columns "
            f"({header.rows}x{header.columns})"
        )
    return image, header


def find_dicoms(
    folders: str | os.PathLike | Iterable[str | os.PathLike],
    twins: list[tuple[Path, Path]] | None = None,
) -> dict[str, Path]:
    """Map each ``*.dcm`` below ``folders`` (any nesting, symlinked folders followed) to its
    ImageId, the file's stem.

    Identical copies of one file (a mirror's second copy) are read once, listed in ``twins``;
    two different files with one stem are an error naming both, as either could be the image meant.
    """
    return find_by_stem(folders, ".dcm", DicomError, twins)


def jpeg_baseline(image: np.ndarray, quality: int = 95) -> bytes:
    """Encode a uint8 greyscale image as a baseline (process 1) JPEG, as the SIIM release did."""
    from PIL import Image

    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"JPEG baseline needs a 2-D uint8 image, got {image.dtype} {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(
        buffer, format="JPEG", quality=quality, optimize=False, progressive=False, subsampling=0
    )
    return buffer.getvalue()


def write_dicom(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    sop_instance_uid: str,
    study_instance_uid: str,
    series_instance_uid: str,
    patient_id: str,
    patient_age: int | None,
    patient_sex: str,
    view_position: str,
    jpeg_quality: int | None = 95,
    photometric: str = "MONOCHROME2",
    pixel_spacing: float = 0.143,
) -> None:
    """Write a secondary-capture chest radiograph with the SIIM release's header fields, atomically.

    ``jpeg_quality`` set: 8-bit JPEG baseline encapsulated, as in the release; None: native
    (uncompressed) pixel data of the image's own dtype, e.g. uint16 with BitsStored 16.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = (
        JPEGBaseline8Bit if jpeg_quality is not None else ExplicitVRLittleEndian
    )
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate, ds.StudyTime = "19010101", "000000.00"
    ds.AccessionNumber = ""
    ds.Modality = "CR"
    ds.ConversionType = "WSD"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"view: {view_position}"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = patient_sex
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # the SIIM release stores bare ages ("58"), not DICOM's "058Y"
        ds.PatientAge = "" if patient_age is None else str(patient_age)
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.StudyID = ""
    ds.SeriesNumber = "1"
    ds.InstanceNumber = "1"
    ds.PatientOrientation = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = image.shape
    ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    bits = 8 * image.dtype.itemsize
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if jpeg_quality is not None:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds.PixelData = encapsulate([jpeg_baseline(image, jpeg_quality)])
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = np.ascontiguousarray(image).astype(f"<u{image.dtype.itemsize}").tobytes()
        ds["PixelData"].VR = "OW" if bits > 8 else "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    atomic.write_bytes(path, buffer.getvalue())
