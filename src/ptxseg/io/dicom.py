"""Reading chest X-ray DICOMs into 8-bit greyscale arrays, with the header fields the pipeline uses.

The SIIM-ACR files are JPEG-baseline compressed; Pillow decodes that syntax fastest, so it is asked
for by name (pydicom would otherwise prefer GDCM where installed, about four times slower).
JPEG-lossless and JPEG 2000 go to pylibjpeg's decoders; anything else to pydicom's own choice.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
)

from ptxseg.io import atomic

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


def to_uint8(pixels: np.ndarray, bits_stored: int, signed: bool, monochrome1: bool) -> np.ndarray:
    """Greyscale 8-bit from any stored depth: scaled by the stored bit range, MONOCHROME1 inverted.

    Scaling by the declared range (not the image's own min/max) keeps exposure differences
    between images; the repack's histogram normalisation evens them out where configured.
    """
    if pixels.ndim == 3:  # colour secondary captures: ITU-R BT.601 luma
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    bits = bits_stored if bits_stored > 0 else 8 * pixels.dtype.itemsize
    values = pixels.astype(np.float32)
    if signed:
        values += float(2 ** (bits - 1))
    if bits > 8:
        values *= 255.0 / float(2**bits - 1)
    image = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return 255 - image if monochrome1 else image


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, DicomHeader]:
    """Decode a single-frame greyscale DICOM to a (rows, columns) uint8 array and its header."""
    dataset = _open(path, stop_before_pixels=False)
    header = _header(dataset)
    _require_pixel_data(dataset, path)
    pixels = _pixels(dataset, path)
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"{path}: {frames} frames; a chest radiograph has one")
    image = to_uint8(
        pixels,
        bits_stored=header.bits_stored,
        signed=int(dataset.get("PixelRepresentation", 0) or 0) == 1,
        monochrome1=header.photometric == "MONOCHROME1",
    )
    if image.shape != (header.rows, header.columns):
        raise DicomError(
            f"{path}: decoded shape {image.shape} differs from Rows x Columns "
            f"({header.rows}x{header.columns})"
        )
    return image, header


def find_dicoms(folder: str | os.PathLike) -> dict[str, Path]:
    """Map each ``*.dcm`` below ``folder`` (any nesting) to its ImageId, the file's stem.

    Two files with one stem are an error naming both, as either could be the image meant.
    """
    found: dict[str, Path] = {}
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"DICOM folder {root} does not exist")
    for path in sorted(root.rglob("*.dcm")):
        image_id = path.stem
        if image_id in found:
            raise DicomError(f"{path}: ImageId {image_id!r} is also at {found[image_id]}")
        found[image_id] = path
    return found


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
