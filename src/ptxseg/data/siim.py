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
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ptxseg.data.ids import check_image_id, printable
from ptxseg.io import atomic, rle
from ptxseg.io.dicom import DicomError, check_pixel_data, find_dicoms
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
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) <= max(id_col, rle_col):
                raise LabelFileError(
                    f"{path}: line {line}: {len(row)} fields, expected {len(names)}"
                )
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


def _checked_header(item: tuple[str, str, Path]) -> tuple[str, str, Path, object]:
    image_id, split, path = item
    try:
        return image_id, split, path, check_pixel_data(path)
    except (DicomError, OSError) as error:
        return image_id, split, path, error


def build_index(
    train_dir: str | os.PathLike,
    test_dir: str | os.PathLike,
    rle_csv: str | os.PathLike,
    workers: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Index every train and test DICOM; return (index, rejects) as DataFrames.

    Rejects: a label row without a train DICOM, a train DICOM without a label row, an ImageId
    in both folders, and DICOMs whose pixel data is missing or truncated.
    """
    labels = read_rle_csv(rle_csv)
    found = {"train": find_dicoms(train_dir), "test": find_dicoms(test_dir)}
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
    for image_id in sorted(set(labels) - set(found["train"])):
        rejects.append(
            _reject(
                image_id,
                "train",
                "",
                f"label row (line {labels[image_id].lines[0]} of "
                f"{rle_csv}) but no DICOM in {train_dir}",
            )
        )
    for image_id in sorted(set(found["train"]) - set(labels)):
        rejects.append(
            _reject(image_id, "train", found["train"].pop(image_id), f"no label row in {rle_csv}")
        )

    items = [(i, split, p) for split in ("train", "test") for i, p in sorted(found[split].items())]
    rows = []
    for image_id, split, path, header in parallel_map(
        _checked_header, items, workers, desc="index"
    ):
        if isinstance(header, Exception):
            rejects.append(_reject(image_id, split, path, str(header)))
            continue
        entry = labels.get(image_id) if split == "train" else None
        if entry is not None:
            _check_rles_fit(entry, image_id, header.rows, header.columns, rle_csv)
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
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    for column in ("has_pneumothorax", "n_regions", "patient_age"):
        index[column] = index[column].astype("Int64")
    index = index.sort_values(["split", "image_id"], key=_train_first, ignore_index=True)
    rejects_frame = pd.DataFrame(rejects, columns=REJECT_COLUMNS).sort_values(
        ["split", "image_id"], key=_train_first, ignore_index=True
    )
    return index, rejects_frame


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
    """Build the index and write it and its rejects; raise RejectsError if asked to stop on rejects."""
    index, rejects = build_index(train_dir, test_dir, rle_csv, workers)
    atomic.write_csv(rejects_path, rejects)
    if len(rejects):
        summary = reject_summary(rejects, rejects_path)
        if stop_on_rejects:
            raise RejectsError(summary)
        log.warning("%s", summary)
    atomic.write_csv(index_path, index)
    counts = index.groupby("split").size().to_dict()
    log.info("indexed %s; %d positive train images", counts, int(index["has_pneumothorax"].sum()))
    return index


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
