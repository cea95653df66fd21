"""Images in, model inputs out: reading, the repack's normalisation and resizing, intensity scaling.

Each image is read and histogram-normalised once, at full resolution, then resized to each stage's
side, as the repack did for training. Batches are prepared one ahead in a thread (OpenCV and the
DICOM decoders release the GIL), so reading overlaps the models' work. No torch.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.data.ids import check_image_id
from ptxseg.data.intensity import scale_intensities
from ptxseg.data.repack import normalise_histogram, resize_image
from ptxseg.io.dicom import read_image
from ptxseg.io.png import read_grey, scale_to_uint8

ImageInput = str | os.PathLike | np.ndarray


@dataclass
class PreparedImage:
    image_id: str
    source: str | None  # the file, None for an array
    image: np.ndarray  # uint8 grey as read
    inputs: dict[int, np.ndarray]  # side -> (1, side, side) float32, scaled as in training


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(132)
    return path.suffix.lower() == ".dcm" or head[128:132] == b"DICM"


def image_id_of(path: str | os.PathLike) -> str:
    """A file's ImageId from its header alone (a DICOM's SOPInstanceUID, else the file name's
    stem), checked: ``ptxseg predict`` looks at every input this way before loading any model, so a
    missing file or a hostile identifier stops it at once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if _is_dicom(path):
        uid = pydicom.dcmread(path, stop_before_pixels=True).get("SOPInstanceUID")
        return check_image_id(str(uid) if uid else path.stem, str(path))
    return check_image_id(path.stem, str(path))


def read_any(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """A DICOM (by its header) or any image OpenCV reads, as uint8 grey, with its ImageId."""
    path = Path(path)
    if _is_dicom(path):
        image, header = read_image(path)
        image_id = header.sop_instance_uid or path.stem
    else:
        image, image_id = read_grey(path), path.stem
    return image, check_image_id(image_id, str(path))


def as_grey(array: np.ndarray, where: str) -> np.ndarray:
    """A 2-D array as uint8 grey: uint8 as it is, other numbers stretched over their own range."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2 or array.dtype.kind not in "uif" or min(array.shape) < 1:
        raise ValueError(
            f"{where}: expected a 2-D grey image (uint8, or numbers stretched to 8 bits), "
            f"got {array.dtype} {array.shape}"
        )
    return np.ascontiguousarray(array) if array.dtype == np.uint8 else scale_to_uint8(array)


def prepare(item: ImageInput, index: int, spec: EnsembleSpec, sides: list[int]) -> PreparedImage:
    """Read (a path) or take (an array, named ``image_<index>``) one image and make its inputs."""
    if isinstance(item, np.ndarray):
        image_id, source = f"image_{index}", None
        image = as_grey(item, f"image {index}")
    else:
        source = str(item)
        image, image_id = read_any(item)
    normalised = normalise_histogram(image, spec.normalisation)
    inputs = {}
    for side in sides:
        mean, std = spec.stats[side]
        inputs[side] = scale_intensities(resize_image(normalised, side), mean, std)[None]
    return PreparedImage(image_id, source, image, inputs)


def stage_sides(spec: EnsembleSpec) -> list[int]:
    """The input sides the ensemble's models read (the classifiers' only where there are any)."""
    return sorted({spec.sizes[stage] for stage in spec.sizes if spec.archs(stage)})


def prepared_batches(
    items: Iterable[ImageInput], spec: EnsembleSpec, batch_size: int
) -> Iterator[list[PreparedImage]]:
    """Batches of prepared images in input order, the next one read while this one is used."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sides = stage_sides(spec)
    numbered = enumerate(items)

    def prepare_chunk(chunk: list[tuple[int, ImageInput]]) -> list[PreparedImage]:
        return [prepare(item, index, spec, sides) for index, item in chunk]

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptxseg-read") as pool:
        pending = None
        while chunk := list(itertools.islice(numbered, batch_size)):
            ahead = pool.submit(prepare_chunk, chunk)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()
