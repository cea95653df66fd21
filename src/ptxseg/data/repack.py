"""Repacking: decode each image once, normalise its histogram, write 8-bit PNGs at every size.

Training reads small PNGs instead of decoding 1024x1024 JPEG-in-DICOM files every epoch. Each
source image is decoded and normalised once at full resolution, then resized to every configured
size; masks are the union of the image's RLE rows, resized by area and re-binarised at one half.
The decoded image's content fingerprint (``ptxseg.data.overlap``), taken before normalisation so
that it does not depend on the repack settings, is collected on the way.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ptxseg.data.overlap import fingerprint, fingerprint_table, write_fingerprints
from ptxseg.data.siim import labels_by_image, read_index
from ptxseg.io import atomic, rle
from ptxseg.io.dicom import read_image
from ptxseg.io.png import read_grey, write_png
from ptxseg.parallel import parallel_map

log = logging.getLogger(__name__)

NORMALISATIONS = ("clahe", "equalize", "none")


@dataclass(frozen=True)
class Normalisation:
    method: str = "clahe"
    clip_limit: float = 2.0
    tile_grid: int = 8

    @classmethod
    def from_config(cls, repack: dict) -> Normalisation:
        """From the config's ``repack`` section (or its normalisation keys)."""
        return cls(repack["normalisation"], repack["clahe_clip_limit"], repack["clahe_tile_grid"])

    def __post_init__(self) -> None:
        if self.method not in NORMALISATIONS:
            raise ValueError(
                f"normalisation {self.method!r} is not one of {', '.join(NORMALISATIONS)}"
            )


def normalise_histogram(image: np.ndarray, params: Normalisation) -> np.ndarray:
    """Histogram-normalise a uint8 image, then stretch it to the full [0, 255] range."""
    if params.method == "equalize":
        image = cv2.equalizeHist(image)
    elif params.method == "clahe":
        clahe = cv2.createCLAHE(clipLimit=params.clip_limit, tileGridSize=(params.tile_grid,) * 2)
        image = clahe.apply(image)
    low, high = int(image.min()), int(image.max())
    if high > low and (low, high) != (0, 255):
        lut = np.clip(np.rint((np.arange(256) - low) * (255.0 / (high - low))), 0, 255).astype(
            np.uint8
        )
        image = cv2.LUT(image, lut)
    return image


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape == (size, size):
        return image
    shrinking = size < min(image.shape)
    return cv2.resize(
        image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    )


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A 0/255 uint8 mask at ``size``: area-resized coverage, binarised at one half."""
    coverage = resize_image(mask.astype(np.uint8) * 255, size)
    return np.where(coverage >= 128, 255, 0).astype(np.uint8)


@dataclass(frozen=True)
class RepackTask:
    image_id: str
    source: str
    kind: str  # "dicom" or "png"
    subfolder: str  # "train", "test" or "" (NIH)
    rles: tuple[str, ...] | None  # None: no mask to write
    out_root: str
    sizes: tuple[int, ...]
    params: Normalisation


def kind_of(path: str) -> str:
    """'png' for a PNG (a PNG set's SIIM images, NIH's), 'dicom' else: how an index path is read."""
    return "png" if path.lower().endswith(".png") else "dicom"


def read_source(path: str, kind: str) -> np.ndarray:
    """An index's image as 8-bit grey: a DICOM as its header says to display it, a PNG as it is."""
    return read_image(path)[0] if kind == "dicom" else read_grey(path)


def _read_source(task: RepackTask) -> np.ndarray:
    return read_source(task.source, task.kind)


def repack_one(task: RepackTask) -> tuple[str, np.ndarray, np.ndarray]:
    """Write one image (and mask) at every size.

    Returns (image_id, per-size grey-level histograms, the decoded image's fingerprint).
    """
    decoded = _read_source(task)
    content = fingerprint(decoded)
    image = normalise_histogram(decoded, task.params)
    mask = rle.decode_union(task.rles, image.shape) if task.rles is not None else None
    # Histograms add up exactly over images and workers; mean and std follow from them.
    histograms = np.zeros((len(task.sizes), 256), dtype=np.int64)
    for k, size in enumerate(task.sizes):
        resized = resize_image(image, size)
        folder = Path(task.out_root) / str(size)
        write_png(folder / task.subfolder / f"{task.image_id}.png", resized)
        if mask is not None:
            write_png(folder / "masks" / f"{task.image_id}.png", resize_mask(mask, size))
        histograms[k] = np.bincount(resized.ravel(), minlength=256)
    return task.image_id, histograms, content


def _stats(histograms: np.ndarray, sizes: Sequence[int], images: int) -> dict:
    """Mean and std of intensities scaled to [0, 1], per size, from summed histograms."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    stats = {}
    for k, size in enumerate(sizes):
        count = histograms[k].sum()
        mean = float(levels @ histograms[k] / count) if count else float("nan")
        var = float(np.square(levels - mean) @ histograms[k] / count) if count else float("nan")
        stats[str(size)] = {"mean": round(mean, 6), "std": round(var**0.5, 6), "images": images}
    return stats


def run_repack(
    tasks: Sequence[RepackTask],
    out_root: str | os.PathLike,
    manifest_path: str | os.PathLike,
    stats_path: str | os.PathLike,
    workers: int = 1,
    stats_from: str | None = "train",
    fingerprints_path: str | os.PathLike | None = None,
) -> dict:
    """Run tasks over ``workers`` processes; write the manifest, mean/std per size (of ``stats_from``
    images) and, where ``fingerprints_path`` is given, every image's fingerprint in task order."""
    sizes = tasks[0].sizes if tasks else ()
    for size in sizes:
        Path(out_root, str(size)).mkdir(parents=True, exist_ok=True)
    by_id = {task.image_id: task for task in tasks}
    totals = np.zeros((len(sizes), 256), dtype=np.int64)
    counted = 0
    manifest = []
    fingerprints = fingerprint_table(
        [task.image_id for task in tasks], [task.subfolder or "nih" for task in tasks], 0
    )
    results = parallel_map(repack_one, tasks, workers, desc="repack")
    for position, (image_id, histograms, content) in enumerate(results):
        task = by_id[image_id]
        fingerprints["fingerprint"][position] = content
        if stats_from is None or task.subfolder == stats_from:
            totals += histograms
            counted += 1
        for size in sizes:
            manifest.append(
                {
                    "image_id": image_id,
                    "split": task.subfolder or "nih",
                    "size": size,
                    "image": f"{size}/{task.subfolder + '/' if task.subfolder else ''}{image_id}.png",
                    "mask": f"{size}/masks/{image_id}.png" if task.rles is not None else "",
                }
            )
    stats = _stats(totals, sizes, counted)
    atomic.write_csv(
        manifest_path,
        pd.DataFrame(manifest, columns=["image_id", "split", "size", "image", "mask"]),
    )
    atomic.write_json(stats_path, stats)
    if fingerprints_path is not None:
        write_fingerprints(fingerprints_path, fingerprints)
    log.info("repacked %d images at sizes %s; stats %s", len(tasks), list(sizes), stats)
    return stats


def read_stats(stats_json: str | os.PathLike, size: int) -> tuple[float, float]:
    """Mean and std of the repacked images at ``size`` (what inputs are normalised with)."""
    stats = json.loads(Path(stats_json).read_text())
    entry = stats[str(size)]
    return entry["mean"], entry["std"]


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """The repack manifest: image_id, split, size, image and mask paths relative to its folder."""
    return pd.read_csv(
        path,
        dtype={"image_id": str, "split": str, "image": str, "mask": str},
        keep_default_na=False,
    )


def siim_tasks(
    index: pd.DataFrame,
    labels: dict[str, list[str]],
    out_root: str | os.PathLike,
    sizes: Sequence[int],
    params: Normalisation,
) -> list[RepackTask]:
    tasks = []
    for row in index.itertuples(index=False):
        is_train = row.split == "train"
        tasks.append(
            RepackTask(
                image_id=row.image_id,
                source=row.path,
                kind=kind_of(row.path),
                subfolder=row.split,
                rles=tuple(labels[row.image_id]) if is_train else None,
                out_root=str(out_root),
                sizes=tuple(sizes),
                params=params,
            )
        )
    return tasks


def repack_siim(
    index_path: str | os.PathLike,
    rle_csv: str | os.PathLike,
    out_root: str | os.PathLike,
    sizes: Sequence[int],
    params: Normalisation,
    manifest_path: str | os.PathLike,
    stats_path: str | os.PathLike,
    workers: int = 1,
    fingerprints_path: str | os.PathLike | None = None,
) -> dict:
    """SIIM train and test images of the index (DICOMs, or a PNG set's PNGs) and the masks of
    ``rle_csv`` (the index's label file) -> ``out_root/<size>/{train,test,masks}/<id>.png``
    (and their fingerprints, split 'train' or 'test', to ``fingerprints_path`` where given)."""
    index = read_index(index_path)
    tasks = siim_tasks(index, labels_by_image(rle_csv), out_root, sizes, params)
    return run_repack(
        tasks, out_root, manifest_path, stats_path, workers, "train", fingerprints_path
    )


def _fingerprint_image(path: str) -> np.ndarray:
    return fingerprint(read_source(path, kind_of(path)))


def fingerprint_siim(
    index_path: str | os.PathLike, fingerprints_path: str | os.PathLike, workers: int = 1
) -> int:
    """Every SIIM image of the index (train and test; DICOM or PNG) -> its content fingerprint, as the repack takes
    it. A job of its own, not part of a repack size: adding a size then leaves the NIH chain alone."""
    index = read_index(index_path)
    table = fingerprint_table(index["image_id"].tolist(), index["split"].tolist(), 0)
    contents = parallel_map(
        _fingerprint_image, index["path"].tolist(), workers, desc="fingerprints"
    )
    for position, content in enumerate(contents):
        table["fingerprint"][position] = content
    write_fingerprints(fingerprints_path, table)
    log.info("fingerprints of %d SIIM images -> %s", len(table), fingerprints_path)
    return len(table)


def repack_nih(
    index_path: str | os.PathLike,
    out_root: str | os.PathLike,
    size: int,
    params: Normalisation,
    manifest_path: str | os.PathLike,
    stats_path: str | os.PathLike,
    workers: int = 1,
    fingerprints_path: str | os.PathLike | None = None,
) -> dict:
    """NIH PNGs of the NIH index -> ``out_root/<size>/<image>.png`` (grey, normalised like SIIM;
    their fingerprints, split 'nih', to ``fingerprints_path`` where given)."""
    index = pd.read_csv(index_path, dtype={"image_id": str}, keep_default_na=False)
    tasks = [
        RepackTask(
            image_id=Path(row.image_id).stem,
            source=row.path,
            kind="png",
            subfolder="",
            rles=None,
            out_root=str(out_root),
            sizes=(size,),
            params=params,
        )
        for row in index.itertuples(index=False)
    ]
    return run_repack(tasks, out_root, manifest_path, stats_path, workers, None, fingerprints_path)
