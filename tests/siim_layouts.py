"""The SIIM-ACR distributions people download, rebuilt in a temporary folder from the real sample
files (PTXSEG_TEST_DATA's siim-sample/ and the real label file): links or renamed copies of the
real DICOMs, PNGs decoded from them and masks drawn from their real label rows."""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom

from ptxseg.data.repack import resize_mask
from ptxseg.io import rle
from ptxseg.io.dicom import read_image
from ptxseg.io.png import write_png

SIIM_HEADER = "ImageId, EncodedPixels"
COMPETITION_HEADER = "ImageId,EncodedPixels"


@dataclass
class Sample:
    """The real sample: DICOM paths by ImageId (sorted) and their real label rows."""

    paths: dict[str, Path]
    rows: dict[str, list[str]]  # ImageId -> its EncodedPixels cells, in file order

    @property
    def ids(self) -> list[str]:
        return list(self.paths)


def real_sample(real_data: Path) -> Sample:
    paths = {p.stem: p for p in sorted((real_data / "siim-sample").glob("*.dcm"))}
    rows: dict[str, list[str]] = {}
    with gzip.open(real_data / "labels" / "siim-train-rle.csv.gz", "rt", encoding="utf-8") as f:
        next(f)
        for line in f:
            image_id, _, encoded = line.rstrip("\n").partition(",")
            if image_id in paths:
                rows.setdefault(image_id, []).append(encoded.strip())
    missing = sorted(set(paths) - set(rows))
    assert not missing, f"sample DICOMs without a row in the real label file: {missing}"
    return Sample(paths, rows)


def label_csv(path: Path, sample: Sample, ids, header=SIIM_HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sep = ", " if header == SIIM_HEADER else ","
    lines = [header] + [f"{i}{sep}{cell}" for i in ids for cell in sample.rows[i]]
    path.write_text("\n".join(lines) + "\n")
    return path


def nest(folder: Path, sample: Sample, ids, copy=False) -> Path:
    """``folder/<study>/<series>/<sop>.dcm`` as the mirror nests them (links, or byte copies)."""
    for image_id in ids:
        source = sample.paths[image_id]
        header = pydicom.dcmread(source, stop_before_pixels=True)
        target = folder / str(header.StudyInstanceUID) / str(header.SeriesInstanceUID)
        target.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copyfile(source, target / source.name)
        else:
            os.symlink(source, target / source.name)
    return folder


def mirror(root: Path, sample: Sample, train, test, twin=False) -> Path:
    """The jesperdramsch mirror: dicom-images-train/, dicom-images-test/, train-rle.csv, and
    with ``twin`` an identical copy of all three under pneumothorax/."""
    for base in [root, root / "pneumothorax"] if twin else [root]:
        nest(base / "dicom-images-train", sample, train, copy=True)
        nest(base / "dicom-images-test", sample, test, copy=True)
        label_csv(base / "train-rle.csv", sample, train)
    return root


def competition(root: Path, sample: Sample, test, labelled) -> Path:
    """Kaggle's competition download: stage_2_images/ID_<n>.dcm (test images renamed by file
    stem) and stage_2_train.csv (header without the space); no train images."""
    images = root / "stage_2_images"
    images.mkdir(parents=True)
    for n, image_id in enumerate(test):
        os.symlink(sample.paths[image_id], images / f"ID_{n:09x}.dcm")
    label_csv(root / "stage_2_train.csv", sample, labelled, COMPETITION_HEADER)
    return root


def mask_of(sample: Sample, image_id: str) -> np.ndarray:
    """The image's real mask as a 0/255 PNG would hold it (255 = lesion)."""
    cells = [c for c in sample.rows[image_id] if c != rle.EMPTY]
    return rle.decode_union(cells).astype(np.uint8) * 255


def _grey(sample: Sample, image_id: str, size: int) -> np.ndarray:
    image = read_image(sample.paths[image_id])[0]
    return (
        image
        if size == image.shape[0]
        else cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    )


def _mask(sample: Sample, image_id: str, size: int) -> np.ndarray:
    mask = mask_of(sample, image_id)
    return mask if size == mask.shape[0] else resize_mask(mask > 0, size)


def vbookshelf(root: Path, sample: Sample, train, test) -> Path:
    """png_images/<n>_<train|test>_<0|1>_.png, png_masks/ of the same names, and the two CSVs."""
    for split, ids in (("train", train), ("test", test)):
        lines = ["new_filename,ImageId,has_pneumo"]
        for n, image_id in enumerate(ids):
            positive = int(mask_of(sample, image_id).any())
            name = f"{n}_{split}_{positive}_.png"
            write_png(root / "png_images" / name, _grey(sample, image_id, 1024))
            write_png(root / "png_masks" / name, _mask(sample, image_id, 1024))
            lines.append(f"{name},{image_id},{positive}")
        (root / f"stage_1_{split}_images.csv").write_text("\n".join(lines) + "\n")
    return root


def iafoss(root: Path, sample: Sample, train, test, size: int) -> Path:
    """train/, test/ and masks/ of PNGs named by ImageId, at ``size``."""
    for image_id in train:
        write_png(root / "train" / f"{image_id}.png", _grey(sample, image_id, size))
        write_png(root / "masks" / f"{image_id}.png", _mask(sample, image_id, size))
    for image_id in test:
        write_png(root / "test" / f"{image_id}.png", _grey(sample, image_id, size))
    return root
