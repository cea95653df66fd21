"""Images in, model inputs out: reading, the repack's normalisation and resizing, intensity scaling.

Each image is read and histogram-normalised once, at full resolution, then resized to each stage's
side, as the repack did for training. Batches are prepared one ahead in a thread (OpenCV and the
DICOM decoders release the GIL), so reading overlaps the models' work. No torch.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.data.intensity import scale_intensities
from ptxseg.data.repack import normalise_histogram, resize_image
from ptxseg.deploy.inputs import read_input
from ptxseg.io.png import scale_to_uint8

ImageInput = str | os.PathLike | np.ndarray


@dataclass
class PreparedImage:
    image_id: str
    source: str | None  # the file, None for an array
    image: np.ndarray  # uint8 grey as read
    inputs: dict[int, np.ndarray]  # side -> (1, side, side) float32, scaled as in training


def read_any(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """A DICOM (by its header) or any image OpenCV reads, as uint8 grey, with its ImageId."""
    image, image_id, _ = read_input(path)
    return image, image_id


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
    items: Iterable[ImageInput],
    spec: EnsembleSpec,
    batch_size: int,
    on_error: Callable[[ImageInput, Exception], None] | None = None,
) -> Iterator[list[PreparedImage]]:
    """Batches of prepared images in input order, the next one read while this one is used.

    With ``on_error``, an image that cannot be read or prepared is handed to it (with the error)
    and left out of its batch, so one bad file does not end the stream; without, the error is
    raised.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    sides = stage_sides(spec)
    numbered = enumerate(items)

    def prepare_chunk(chunk: list[tuple[int, ImageInput]]) -> tuple[list, list]:
        prepared, failed = [], []
        for index, item in chunk:
            try:
                prepared.append(prepare(item, index, spec, sides))
            except Exception as error:  # a decoder's error on a damaged file, of any kind
                if on_error is None:
                    raise
                failed.append((item, error))
        return prepared, failed

    def ready(future) -> list[PreparedImage]:
        prepared, failed = future.result()
        for item, error in failed:  # reported here, in the caller's thread and order
            on_error(item, error)
        return prepared

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ptxseg-read") as pool:
        pending = None
        while chunk := list(itertools.islice(numbered, batch_size)):
            ahead = pool.submit(prepare_chunk, chunk)
            if pending is not None and (batch := ready(pending)):
                yield batch
            pending = ahead
        if pending is not None and (batch := ready(pending)):
            yield batch
