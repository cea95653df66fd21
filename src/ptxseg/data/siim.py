"""The SIIM-ACR label file and the index of train and test images.

The index is the gate every later stage trusts: each listed DICOM has a complete pixel data
element, each label row parses and fits its image, and every ImageId is safe as a file name.
What fails the gate is either an error naming file and line (a malformed label row) or a
reject (a file without its counterpart, a damaged DICOM), listed with its reason.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ptxseg.data.ids import check_image_id, printable
from ptxseg.data.layouts import (
    COMPETITION_SIZE,
    MIRROR_HINT,
    MIRROR_LABELS,
    MIRROR_TRAIN,
    SIIM_HEADER,
    SiimLayout,
)
from ptxseg.io import atomic, rle
from ptxseg.io.dicom import DicomError, DicomHeader, check_pixel_data, find_dicoms
from ptxseg.io.files import find_by_stem, twin_note
from ptxseg.io.png import ImageError, read_grey
from ptxseg.parallel import parallel_map

log = logging.getLogger(__name__)

INDEX_COLUMNS = [
    "image_id",
    "split",
    "path",
    "has_pneumothorax",
    "n_regions",
    "patient_id",
    "patient_age",
    "patient_sex",
    "view_position",
    "rows",
    "columns",
    "photometric",
    "transfer_syntax",
]
REJECT_COLUMNS = ["image_id", "split", "path", "reason"]


class LabelFileError(ValueError):
    """A label file that cannot be used; the message names the file and line."""


@dataclass
class ImageLabels:
    """The label rows of one image: its RLE strings (none when ``-1``) and their line numbers."""

    rles: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    empty: bool = False


def _data_rows(reader, path: Path, width: int, last_col: int) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of a label CSV's rows after its header: blank rows skipped, a row too short
    to hold column ``last_col`` an error naming file and line (``width``: the header's)."""
    for line, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) <= last_col:
            raise LabelFileError(f"{path}: line {line}: {len(row)} fields, expected {width}")
        yield line, row


def read_rle_csv(path: str | os.PathLike) -> dict[str, ImageLabels]:
    """Read ``train-rle.csv`` (header ``ImageId, EncodedPixels``, the space included).

    Rows of one image are gathered (one per region). Raises LabelFileError naming file and line
    for: a missing column, an unsafe ImageId, an empty EncodedPixels cell (the release marks an
    image without a pneumothorax ``-1``), a malformed RLE, an image both empty and not, an exact
    duplicate row, or a second ``-1`` row.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise LabelFileError(
                f"{path}: the file is empty; expected a header 'ImageId, EncodedPixels'"
            )
        names = [name.strip() for name in header]
        try:
            id_col, rle_col = names.index("ImageId"), names.index("EncodedPixels")
        except ValueError:
            raise LabelFileError(
                f"{path}: line 1: columns {header!r}; expected 'ImageId' and 'EncodedPixels'"
            ) from None
        labels: dict[str, ImageLabels] = {}
        seen_rows: dict[tuple[str, str], int] = {}
        for line, row in _data_rows(reader, path, len(names), max(id_col, rle_col)):
            where = f"{path}: line {line}"
            image_id = check_image_id(row[id_col].strip(), where)
            encoded = row[rle_col].strip()
            if not encoded:  # rle.parse reads "" as no runs: a positive image with no region
                raise LabelFileError(
                    f"{where}: ImageId {image_id}: EncodedPixels is empty; an image without "
                    f"a pneumothorax is marked '{rle.EMPTY}'"
                )
            try:
                rle.parse(encoded)
            except ValueError as error:
                raise LabelFileError(f"{where}: ImageId {image_id}: {error}") from None
            if (image_id, encoded) in seen_rows:
                raise LabelFileError(
                    f"{where}: duplicate of line {seen_rows[image_id, encoded]} (ImageId {image_id})"
                )
            seen_rows[image_id, encoded] = line
            entry = labels.setdefault(image_id, ImageLabels())
            is_empty = encoded == rle.EMPTY
            if entry.lines and (is_empty or entry.empty):
                raise LabelFileError(
                    f"{where}: ImageId {image_id} is marked empty ('-1') on one line and has a region "
                    f"on another (line {entry.lines[0]})"
                )
            entry.lines.append(line)
            entry.empty = is_empty
            if not is_empty:
                entry.rles.append(encoded)
    if not labels:
        raise LabelFileError(f"{path}: no label rows after the header")
    return labels


def read_mapping(path: str | os.PathLike) -> dict[str, str]:
    """A vbookshelf mapping CSV (``new_filename, ImageId, has_pneumo``): file name -> ImageId."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        names = [name.strip() for name in next(reader, [])]
        try:
            file_col, id_col = names.index("new_filename"), names.index("ImageId")
        except ValueError:
            raise LabelFileError(
                f"{path}: line 1: columns {names!r}; expected 'new_filename' and 'ImageId'"
            ) from None
        mapping: dict[str, str] = {}
        for line, row in _data_rows(reader, path, len(names), max(file_col, id_col)):
            where = f"{path}: line {line}"
            mapping[row[file_col].strip()] = check_image_id(row[id_col].strip(), where)
    return mapping


@dataclass
class Sources:
    """What a layout's folders hold, before any pixel is read: images by split and ImageId,
    the label rows by ImageId (empty ones for mask PNGs, filled from the masks), and the masks."""

    images: dict[str, dict[str, Path]]
    labels: dict[str, ImageLabels]
    masks: dict[str, Path]
    notes: list[str]


def gather(layout: SiimLayout) -> Sources:
    """List a layout's images, labels and masks (file names and the label file; no pixels)."""
    twins: list[tuple[Path, Path]] = []
    masks: dict[str, Path] = {}
    if layout.image_kind == "dicom":
        images = {
            "train": find_dicoms(layout.train, twins),
            "test": find_dicoms(layout.test, twins),
        }
    elif layout.mapping:  # vbookshelf: one folder, its file names mapped by two CSVs
        images = {}
        for split, csv_path, folder in zip(
            ("train", "test"), layout.mapping, (layout.train[0], layout.test[0]), strict=True
        ):
            names = read_mapping(csv_path)
            images[split] = {i: Path(folder, name) for name, i in names.items()}
            if split == "train":  # the masks of test images are not used
                masks = {
                    i: Path(layout.labels, name)
                    for name, i in names.items()
                    if Path(layout.labels, name).is_file()
                }
    else:  # iafoss: PNGs named by ImageId
        images = {
            "train": find_by_stem(layout.train, ".png", ImageError, twins),
            "test": find_by_stem(layout.test, ".png", ImageError, twins),
        }
    if layout.label_kind == "rle":
        labels = read_rle_csv(layout.labels)
    else:
        if not layout.mapping:
            masks = find_by_stem(layout.labels, ".png", ImageError, twins)
        labels = {image_id: ImageLabels() for image_id in masks}
    note = twin_note(twins)
    return Sources(images, labels, masks, [note] if note else [])


def _label_place(layout: SiimLayout) -> str:
    return layout.labels if layout.label_kind == "rle" else f"the masks in {layout.labels}"


def match(layout: SiimLayout, sources: Sources) -> list[dict]:
    """Reject what lacks its counterpart (an image without a label or the reverse, an ImageId in
    both splits, an unsafe ImageId), taking it out of ``sources.images``; return the rejects."""
    found, labels = sources.images, sources.labels
    rejects: list[dict] = []
    for split, files in found.items():
        for image_id in list(files):
            try:
                check_image_id(image_id, str(files[image_id]))
            except ValueError as error:
                rejects.append(_reject(image_id, split, files.pop(image_id), str(error)))
    for image_id in sorted(set(found["train"]) & set(found["test"])):
        rejects.append(
            _reject(
                image_id,
                "test",
                found["test"].pop(image_id),
                f"also in the train folder ({found['train'][image_id]})",
            )
        )
    train_place = ", ".join(layout.train)
    for image_id in sorted(set(labels) - set(found["train"])):
        where = (
            f"label row (line {labels[image_id].lines[0]} of {layout.labels})"
            if labels[image_id].lines
            else f"mask {sources.masks.get(image_id, image_id)}"
        )
        kind = "DICOM" if layout.image_kind == "dicom" else "PNG"
        rejects.append(_reject(image_id, "train", "", f"{where} but no {kind} in {train_place}"))
    for image_id in sorted(set(found["train"]) - set(labels)):
        what = "label row in" if layout.label_kind == "rle" else "mask in"
        rejects.append(
            _reject(image_id, "train", found["train"].pop(image_id), f"no {what} {layout.labels}")
        )
    return rejects


class EmptyTrainError(RuntimeError):
    """No train image has both an image file and a label: nothing could be trained."""

    rejects: pd.DataFrame | None = None


def empty_train_reason(layout: SiimLayout, sources: Sources, rejects: list[dict]) -> str:
    """Why no train image is left, and what to do: the real reason, not a fold count."""
    found = len(sources.images["train"]) + sum(
        r["split"] == "train" and bool(r["path"]) for r in rejects
    )
    labelled = len(sources.labels)
    lines = [
        f"no train image is left to index, so nothing could be trained: {labelled} labelled "
        f"ImageId(s) in {_label_place(layout)}, {found} train image(s) found in "
        f"{', '.join(layout.train)}, {len(sources.images['train'])} of them usable."
    ]
    if found == 0:
        suffix = "*.dcm" if layout.image_kind == "dicom" else "*.png"
        lines.append(
            f"The train folder(s) hold no {suffix} files: {MIRROR_HINT}; give its folder in "
            "data.siim.root (beside the competition download where that is used)."
        )
    elif not set(sources.labels) & set(sources.images["train"]) and labelled:
        lines.append(
            "The label file names none of these images: check that it belongs to them (a label "
            f"file of another release?); the train DICOMs of {MIRROR_LABELS} are the mirror's "
            f"{MIRROR_TRAIN}/."
        )
    else:
        lines.append(
            "Every train image was rejected as unreadable; the rejects file lists each with its "
            "reason."
        )
    lines.append("Setting data.stop_on_rejects: false would not help: fix the data first.")
    return "\n".join(lines)


def _checked(item: tuple[str, str, Path, Path | None]) -> tuple[str, str, Path, object, list]:
    """Header (or the error) of one image, and the regions of its mask PNG where it has one."""
    image_id, split, path, mask = item
    try:
        header = check_pixel_data(path) if path.suffix == ".dcm" else png_header(path)
        regions = mask_regions(mask, (header.rows, header.columns)) if mask else []
        return image_id, split, path, header, regions
    except (DicomError, ImageError, OSError, ValueError) as error:
        return image_id, split, path, error, []


def png_header(path: Path) -> DicomHeader:
    """A PNG's size from its header (Pillow reads it without decoding), checked for damage; a
    PNG carries none of the DICOM fields, which stay empty."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            columns, rows = image.size
            image.verify()  # chunk checksums: a truncated or damaged file fails here
    except (UnidentifiedImageError, SyntaxError, OSError) as error:
        raise ImageError(f"{path}: not a readable PNG ({error})") from error
    return DicomHeader("", "", None, "", "", rows, columns, "", 8, "")


def mask_regions(path: Path, shape: tuple[int, int]) -> list[str]:
    """A mask PNG (any non-zero pixel inside) as one RLE string per connected region, as the
    SIIM label file has one row per region; empty for an empty mask."""
    mask = read_grey(path) > 0
    if mask.shape != shape:
        raise ImageError(
            f"{path}: mask {mask.shape[0]}x{mask.shape[1]}, its image {shape[0]}x{shape[1]}"
        )
    count, components = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return [rle.encode(components == k) for k in range(1, count)]


def build_index(
    train_dir: str | os.PathLike,
    test_dir: str | os.PathLike,
    rle_csv: str | os.PathLike,
    workers: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Index a train and a test folder of DICOMs with their label file (see `index_layout`)."""
    layout = SiimLayout.folders(str(train_dir), str(test_dir), str(rle_csv))
    index, rejects, _ = index_layout(layout, workers)
    return index, rejects


def index_layout(
    layout: SiimLayout, workers: int = 1
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, ImageLabels]]:
    """Index every train and test image of a layout; return (index, rejects, labels).

    Rejects: a label without a train image, a train image without a label, an ImageId in both
    splits, and images whose pixel data is missing or truncated. Raises EmptyTrainError where no
    train image is left. The labels are those of the indexed train images, mask PNGs turned
    into one RLE row per region.
    """
    sources = gather(layout)
    for note in sources.notes:
        log.info("%s", note)
    labels = sources.labels
    rejects = match(layout, sources)
    found = sources.images
    items = [
        (i, split, p, sources.masks.get(i) if split == "train" else None)
        for split in ("train", "test")
        for i, p in sorted(found[split].items())
    ]
    rows = []
    for image_id, split, path, header, regions in parallel_map(
        _checked, items, workers, desc="index"
    ):
        if isinstance(header, Exception):
            rejects.append(_reject(image_id, split, path, str(header)))
            found[split].pop(image_id, None)
            continue
        entry = labels.get(image_id) if split == "train" else None
        if entry is not None and layout.label_kind == "masks":
            entry.rles = regions
            entry.empty = not regions
        if entry is not None:
            _check_rles_fit(entry, image_id, header.rows, header.columns, layout.labels)
        rows.append(
            {
                "image_id": image_id,
                "split": split,
                "path": str(path),
                "has_pneumothorax": (int(bool(entry.rles)) if entry else pd.NA),
                "n_regions": (len(entry.rles) if entry else pd.NA),
                "patient_id": printable(header.patient_id),
                "patient_age": header.patient_age if header.patient_age is not None else pd.NA,
                "patient_sex": printable(header.patient_sex),
                "view_position": printable(header.view_position),
                "rows": header.rows,
                "columns": header.columns,
                "photometric": printable(header.photometric),
                "transfer_syntax": header.transfer_syntax,
            }
        )
    rejects_frame = pd.DataFrame(rejects, columns=REJECT_COLUMNS).sort_values(
        ["split", "image_id"], key=_train_first, ignore_index=True
    )
    if not any(row["split"] == "train" for row in rows):
        error = EmptyTrainError(empty_train_reason(layout, sources, rejects))
        error.rejects = rejects_frame
        raise error
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    for column in ("has_pneumothorax", "n_regions", "patient_age"):
        index[column] = index[column].astype("Int64")
    index = index.sort_values(["split", "image_id"], key=_train_first, ignore_index=True)
    kept = set(index.loc[index["split"] == "train", "image_id"])
    return index, rejects_frame, {i: labels[i] for i in sorted(kept)}


def _train_first(column: pd.Series) -> pd.Series:
    return column.map({"train": 0, "test": 1}) if column.name == "split" else column


def _reject(image_id: str, split: str, path: object, reason: str) -> dict:
    return {
        "image_id": printable(str(image_id)),
        "split": split,
        "path": printable(str(path)),
        "reason": printable(reason),
    }


def _check_rles_fit(
    entry: ImageLabels, image_id: str, rows: int, columns: int, rle_csv: object
) -> None:
    for encoded, line in zip(entry.rles, entry.lines, strict=False):
        try:
            rle.parse(encoded, rows * columns)
        except ValueError as error:
            raise LabelFileError(
                f"{rle_csv}: line {line}: ImageId {image_id} ({rows}x{columns}): {error}"
            ) from None


class RejectsError(RuntimeError):
    """Rejects were found and the config says to stop."""


def reject_summary(rejects: pd.DataFrame, rejects_path: object, limit: int = 20) -> str:
    lines = [f"{len(rejects)} rejected image(s), listed in {rejects_path}:"]
    for row in rejects.head(limit).itertuples():
        lines.append(f"  {row.split} {row.image_id}: {row.reason}")
    if len(rejects) > limit:
        lines.append(f"  ... and {len(rejects) - limit} more")
    lines.append("Fix the data, or set data.stop_on_rejects: false to leave them out.")
    return "\n".join(lines)


def write_index(
    train_dir: str | os.PathLike,
    test_dir: str | os.PathLike,
    rle_csv: str | os.PathLike,
    index_path: str | os.PathLike,
    rejects_path: str | os.PathLike,
    stop_on_rejects: bool = True,
    workers: int = 1,
) -> pd.DataFrame:
    """`write_layout_index` of a train and a test folder of DICOMs and their label file."""
    layout = SiimLayout.folders(str(train_dir), str(test_dir), str(rle_csv))
    return write_layout_index(layout, index_path, rejects_path, None, stop_on_rejects, workers)


def write_layout_index(
    layout: SiimLayout,
    index_path: str | os.PathLike,
    rejects_path: str | os.PathLike,
    labels_path: str | os.PathLike | None = None,
    stop_on_rejects: bool = True,
    workers: int = 1,
) -> pd.DataFrame:
    """Build the index and write it and its rejects; raise RejectsError if asked to stop on
    rejects, EmptyTrainError (the rejects written) where no train image is left.

    ``labels_path``: the labels of the indexed train images in the release's own dialect
    (header ``ImageId, EncodedPixels``, one row per region, ``-1`` for none), whatever the
    layout gave (either header, or mask PNGs), and beside it (``.json``) where they came from,
    the text scores name as their truth: every later stage reads this one file.
    """
    log.info("%s", layout.describe())
    try:
        index, rejects, labels = index_layout(layout, workers)
    except EmptyTrainError as error:
        if error.rejects is not None:
            atomic.write_csv(rejects_path, error.rejects)
        raise
    atomic.write_csv(rejects_path, rejects)
    if len(rejects):
        summary = reject_summary(rejects, rejects_path)
        if stop_on_rejects:
            raise RejectsError(summary)
        log.warning("%s", summary)
    if labels_path is not None:
        write_labels(labels_path, labels)
        atomic.write_json(Path(labels_path).with_suffix(".json"), label_origin(layout))
    atomic.write_csv(index_path, index)
    counts = index.groupby("split").size().to_dict()
    log.info("indexed %s; %d positive train images", counts, int(index["has_pneumothorax"].sum()))
    return index


def write_labels(path: str | os.PathLike, labels: dict[str, ImageLabels]) -> None:
    """Label rows in the release's dialect: one per region, ``-1`` for an image without one."""
    lines = [SIIM_HEADER]
    for image_id, entry in labels.items():
        lines += [f"{image_id},{encoded}" for encoded in (entry.rles or [rle.EMPTY])]
    atomic.write_text(path, "\n".join(lines) + "\n")


def label_origin(layout: SiimLayout) -> dict:
    """Where the labels came from: the layout, its label file or masks, and the truth text."""
    return {
        "layout": layout.name,
        "labels": layout.labels,
        "dialect": layout.dialect,
        "mask_size": layout.mask_size,
        "truth": layout.truth(),
    }


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(
        path,
        dtype={
            "image_id": str,
            "patient_id": str,
            "has_pneumothorax": "Int64",
            "n_regions": "Int64",
            "patient_age": "Int64",
            "patient_sex": str,
            "view_position": str,
        },
        keep_default_na=False,
        na_values={"has_pneumothorax": [""], "n_regions": [""], "patient_age": [""]},
    )


def labels_by_image(rle_csv: str | os.PathLike) -> dict[str, list[str]]:
    """ImageId -> its RLE rows (empty list for a ``-1`` image)."""
    return {image_id: entry.rles for image_id, entry in read_rle_csv(rle_csv).items()}


@dataclass
class DataCheck:
    """What `check_data` found: notes to read, problems that would stop the index (or leave it
    empty), and the counts."""

    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def check_data(layout: SiimLayout, stop_on_rejects: bool = True, limit: int = 10) -> DataCheck:
    """The index's checks that need no pixel: every label row parsed, every image and label
    paired, ImageIds safe and each in one split, copies found by content. Seconds for the real
    release; damaged pixel data is left for the index to find."""
    result = DataCheck(notes=list(layout.notes))
    if layout.mask_size and layout.mask_size != COMPETITION_SIZE:
        result.notes.append(
            f"the masks in {layout.labels} are {layout.mask_size} px: images and masks are used at "
            f"that size, and scores are computed at it, not at the competition's "
            f"{COMPETITION_SIZE} px (their scored_at text says so)"
        )
    try:
        sources = gather(layout)
    except (ValueError, OSError) as error:  # a label row, a clash of two files: named in it
        result.problems.append(str(error))
        return result
    result.notes += sources.notes
    rejects = match(layout, sources)
    result.counts = {
        "train images": len(sources.images["train"]),
        "test images": len(sources.images["test"]),
        "labelled images": len(sources.labels),
        "rejects": len(rejects),
    }
    if not sources.images["train"]:
        result.problems.append(empty_train_reason(layout, sources, rejects))
    elif rejects:
        lines = [
            f"{len(rejects)} image(s) or label(s) without their counterpart; "
            + (
                "the index would stop on them. Fix the data, or set data.stop_on_rejects: false "
                f"to leave them out ({len(sources.images['train'])} train images remain)"
                if stop_on_rejects
                else "data.stop_on_rejects is false: the index leaves them out"
            )
        ]
        lines += [f"  {r['split']} {r['image_id']}: {r['reason']}" for r in rejects[:limit]]
        if len(rejects) > limit:
            lines.append(f"  ... and {len(rejects) - limit} more")
        (result.problems if stop_on_rejects else result.notes).append("\n".join(lines))
    if not sources.images["test"]:
        result.problems.append(
            f"no test image in {', '.join(layout.test)}: the submission would be empty; give "
            "the test images' folder"
        )
    return result
