"""What `ptxseg predict` writes: per image a mask, a probability map and an overlay (PNGs at the
image's size), and one predictions.csv row, appended and flushed as each image's files are
written, so a killed or interrupted run keeps every finished row; and its timings."""

from __future__ import annotations

import csv
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ptxseg.deploy.dicom_files import DicomOutputs
from ptxseg.deploy.prediction import Prediction
from ptxseg.io import atomic, rle
from ptxseg.io.dicom_outputs import outline_overlay
from ptxseg.io.png import encode_png, write_png

log = logging.getLogger(__name__)

COLUMNS = (
    "ImageId",
    "EncodedPixels",
    "source",
    "classifier_probability",
    "mask_pixels",
    "calibrated_probability",
    "uncertainty",
)
PREDICTIONS = "predictions.csv"
OUTPUT_SUFFIXES = ("_mask.png", "_probability.png", "_overlay.png")  # after the ImageId
PROGRESS_FROM = 4  # images; fewer get no progress bar


def overlay(image: np.ndarray, mask: np.ndarray, fill: bool = False) -> np.ndarray:
    """The radiograph in grey with the predicted region outlined in red (``fill``: tinted too),
    BGR, as the DICOM Secondary Capture draws it."""
    return outline_overlay(image, mask, fill=fill)


def _rounded(value: float | None) -> float | str:
    return "" if value is None else round(value, 4)


def row(prediction: Prediction) -> dict:
    return {
        "ImageId": prediction.image_id,
        "EncodedPixels": rle.encode(prediction.mask),
        "source": prediction.source or "",
        "classifier_probability": _rounded(prediction.probability),
        "mask_pixels": int(prediction.mask.sum()),
        "calibrated_probability": _rounded(prediction.calibrated_probability),
        "uncertainty": "" if prediction.uncertainty is None else round(prediction.uncertainty, 6),
    }


def write_images(prediction: Prediction, out_dir: Path, fill: bool = False) -> None:
    mask, probability, overlaid = (out_dir / f"{prediction.image_id}{s}" for s in OUTPUT_SUFFIXES)
    write_png(mask, prediction.mask.astype(np.uint8) * 255)
    write_png(probability, np.rint(prediction.probability_map * 255).astype(np.uint8))
    if prediction.image is not None:
        atomic.write_bytes(overlaid, encode_png(overlay(prediction.image, prediction.mask, fill)))


@dataclass
class Timings:
    """Seconds from the command's start (models loaded too) to the first image's files, and
    per image after it."""

    images: int
    first: float
    per_image: float | None  # None for a single image

    def __str__(self) -> str:
        after = "" if self.per_image is None else f", then {self.per_image:.2f} s an image"
        return f"time to the first image {self.first:.1f} s{after}"


def write_predictions(
    predictions: Iterable[Prediction],
    out_dir: str | os.PathLike,
    *,
    total: int | None = None,
    quiet: bool = False,
    started: float | None = None,
    dicom: DicomOutputs | None = None,
    fill: bool = False,
) -> tuple[list[dict], Timings]:
    """Write every prediction's files, then its row of predictions.csv (appended, with the header
    where the file is new or empty, and flushed, so a row on disk means its files are there too);
    with ``dicom``, a DICOM input's SEG, Secondary Capture (and Parametric Map) too; ``fill``
    tints the region in the overlay PNG besides outlining it. The rows
    written, and the timings."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter() if started is None else started
    rows, first = [], None
    show = not quiet and (total is None or total >= PROGRESS_FROM)
    with (
        open(out / PREDICTIONS, "a", newline="", encoding="utf-8") as handle,
        tqdm(total=total, disable=not show, unit="image", file=sys.stderr) as bar,
    ):
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        if handle.tell() == 0:  # append mode opens at the end: 0 is a new or empty file
            writer.writeheader()
        for prediction in predictions:
            write_images(prediction, out, fill)
            if dicom is not None:
                dicom.write(prediction)
            rows.append(row(prediction))
            writer.writerow(rows[-1])
            handle.flush()  # on disk (the OS's cache) whatever stops the process next
            first = time.perf_counter() if first is None else first
            bar.update()
            log.debug(
                "%s: %d pixels", prediction.source or prediction.image_id, rows[-1]["mask_pixels"]
            )
    end = time.perf_counter()
    n = len(rows)
    timings = Timings(
        n,
        (first or end) - started,
        (end - first) / (n - 1) if n > 1 else None,
    )
    return rows, timings
