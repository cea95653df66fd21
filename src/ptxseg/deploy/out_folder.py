"""`ptxseg predict`'s output folders: another run's outputs are never overwritten unasked.

A folder holding predictions.csv or the files predict writes there is refused, unless ``resume``
(predictions.csv's ImageIds are done and skipped; new rows are appended) or ``overwrite`` (those
files, and nothing else, are removed first).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from ptxseg.data.ids import check_image_id
from ptxseg.deploy.dicom_files import SUFFIXES as DICOM_SUFFIXES
from ptxseg.deploy.files import COLUMNS, OUTPUT_SUFFIXES, PREDICTIONS

log = logging.getLogger(__name__)

NEW, RESUME, OVERWRITE = "new", "resume", "overwrite"


class OutFolderError(ValueError):
    """An output folder that cannot be used as asked; names the folder or file."""


def written_by_predict(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files directly in ``folder`` that predict writes there: predictions.csv and every
    '<ImageId><suffix>'."""
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and (path.name == PREDICTIONS or path.name.endswith(suffixes))
    )


def claim(out: Path, dicom_out: Path | None, mode: str, inputs: list[str] = ()) -> None:
    """Make ``out`` (and ``dicom_out``) ready for a run in ``mode``: NEW refuses a folder holding
    predict's files, OVERWRITE removes them (refusing where one is an input), RESUME keeps them
    (``read_done`` says what is done)."""
    earlier = written_by_predict(out, OUTPUT_SUFFIXES)
    if dicom_out is not None:
        earlier += written_by_predict(dicom_out, tuple(DICOM_SUFFIXES.values()))
    # A predictions.csv without rows is a run that stopped before its first image (a damaged model
    # file, say): nothing of it to lose, so it does not make the folder another run's.
    unfinished = [path for path in earlier if path.name == PREDICTIONS and not _has_rows(path)]
    earlier = [path for path in earlier if path not in unfinished]
    if mode == NEW:
        for path in unfinished:
            path.unlink()
            log.info("%s: an earlier run's file without rows (it predicted nothing) replaced", path)
    if mode == NEW and earlier:
        folders = " and ".join(sorted({str(path.parent) for path in earlier}))
        raise OutFolderError(
            f"{folders} holds another run's outputs ({len(earlier)} files, e.g. "
            f"{earlier[0].name}): --resume continues that run, --overwrite removes them (only "
            "the files ptxseg predict writes), or choose another --out"
        )
    if mode == OVERWRITE:
        inputs_here = {os.path.realpath(path) for path in inputs}
        for path in earlier:
            if os.path.realpath(path) in inputs_here:
                raise OutFolderError(f"{path} is an input: --overwrite would remove it")
        for path in earlier:
            path.unlink()
        if earlier:
            log.info("--overwrite: %d files of an earlier run removed", len(earlier))


def _has_rows(path: Path) -> bool:
    """Whether a predictions.csv holds a line after its header."""
    with open(path, "rb") as handle:
        lines = (line for line in handle if line.strip())
        next(lines, None)  # the header
        return next(lines, None) is not None


def read_done(path: Path) -> frozenset[str]:
    """The ImageIds in an earlier run's predictions.csv (none where there is no file). A last
    line cut off by a killed run is removed, so that image is predicted again."""
    if not path.is_file():
        return frozenset()
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)
            log.warning("%s: its last line was cut off (a killed run); that image is redone", path)
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return frozenset()
        if tuple(header) != COLUMNS:
            raise OutFolderError(
                f"{path}: not a ptxseg predict predictions.csv (header {','.join(header)}); "
                "--overwrite replaces it"
            )
        done = set()
        for line, row in enumerate(reader, start=2):
            if len(row) != len(COLUMNS):
                raise OutFolderError(
                    f"{path}, line {line}: {len(row)} fields, expected {len(COLUMNS)}"
                )
            done.add(check_image_id(row[0], f"{path}, line {line}"))
    return frozenset(done)
