"""`ptxseg predict`'s inputs, found and checked before any model loads.

Folders are walked recursively for ``*.dcm``, ``*.png`` and extensionless DICOMs (the 'DICM'
marker at byte 128); every file's header is read and its pixels decoded (then dropped), so a
truncated DICOM, a text file among the images or an unreadable PNG is a reject with its reason,
found in seconds rather than after the models have loaded. Each input's ImageId (a DICOM's
SOPInstanceUID, else the file's stem) names its outputs, so two inputs with one ImageId are an
error naming both: either could be the image meant, and their outputs would overwrite each other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptxseg.data.ids import check_image_id
from ptxseg.io.dicom import read_header, read_image
from ptxseg.io.png import read_grey_noted

log = logging.getLogger(__name__)

FOLDER_SUFFIXES = (".dcm", ".png")  # what a folder is searched for, besides extensionless DICOMs
_CHECK_THREADS = 8  # the decoders release the GIL; more threads than this gain nothing on disk


class InputError(ValueError):
    """Inputs that cannot be predicted together (two with one ImageId); names the files."""


def is_dicom(path: str | os.PathLike) -> bool:
    """A DICOM by its ``.dcm`` suffix or the 'DICM' marker after its 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def image_id_of(path: str | os.PathLike) -> str:
    """A file's ImageId from its header alone (a DICOM's SOPInstanceUID, else the file's stem),
    checked as a file name; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    uid = read_header(path).sop_instance_uid if is_dicom(path) else ""
    return check_image_id(uid or path.stem, str(path))


def read_input(path: str | os.PathLike) -> tuple[np.ndarray, str, str | None]:
    """A DICOM (by ``is_dicom``) or any image OpenCV reads, as uint8 grey, with its ImageId and,
    for an image made grey or 8-bit on the way, what was done (``io.png.conversion_of``)."""
    path = Path(path)
    if is_dicom(path):
        image, header = read_image(path)
        uid, note = header.sop_instance_uid, None
    else:
        (image, note), uid = read_grey_noted(path), ""
    return image, check_image_id(uid or path.stem, str(path)), note


def reason_of(path: str | os.PathLike, error: BaseException) -> str:
    """An error's message without the file name it starts with (every reader's does), else with
    its type, so a reject line reads '<file>: <reason>' either way."""
    text, prefix = str(error), f"{path}: "
    if text.startswith(prefix):
        return text[len(prefix) :]
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {text}"


@dataclass(frozen=True)
class Reject:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Input:
    path: str
    image_id: str


@dataclass
class Inputs:
    """The pre-flight's answer: inputs to predict, inputs already done (``--resume``), rejects,
    and the conversions worth logging, each as '<file>: <what>'."""

    todo: list[Input] = field(default_factory=list)
    done: list[Input] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _in_folder(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(files):
            # hidden files: macOS's '._x.dcm' resource forks, '.DS_Store'
            if name.startswith("."):
                continue
            path = Path(root, name)
            suffix = path.suffix.lower()
            if suffix in FOLDER_SUFFIXES or (not suffix and _has_dicom_marker(path)):
                found.append(path)
    return sorted(found)  # by path, folder by folder, as a listing shows them


def _has_dicom_marker(path: Path) -> bool:
    try:
        return is_dicom(path)
    except OSError:
        return True  # unreadable: the check reports it


def expand(arguments: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Reject]]:
    """Files from the command's arguments (a folder's found files in name order), each once,
    and the arguments that are neither a file nor a folder holding inputs."""
    files, rejects, seen = [], [], set()
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = _in_folder(path)
            if not found:
                rejects.append(Reject(str(path), "a folder with no .dcm, .png or DICOM file"))
        elif path.exists():
            found = [path]
        else:
            rejects.append(Reject(str(path), "no such file or folder"))
            found = []
        for file in found:
            if (key := os.path.realpath(file)) not in seen:
                seen.add(key)
                files.append(file)
    return files, rejects


def _check(path: Path, done: frozenset[str]) -> tuple[Input | Reject, str | None]:
    try:
        if (
            path.is_file() and path.stat().st_size == 0
        ):  # said plainly: each reader words it its way
            return Reject(str(path), "empty file"), None
        # Resuming, an image already done is known by its header alone; every other input is
        # decoded once (its ImageId comes with it) to be sure, and dropped.
        if done and (image_id := image_id_of(path)) in done:
            return Input(str(path), image_id), None
        _, image_id, note = read_input(path)
    # Hostile and damaged files make the decoders raise errors of many kinds; each is a reject.
    except Exception as error:
        return Reject(str(path), reason_of(path, error)), None
    return Input(str(path), image_id), note


def check_inputs(arguments: Iterable[str | os.PathLike], done: Iterable[str] = ()) -> Inputs:
    """Expand ``arguments`` (files and folders) and check every file (``done``: ImageIds already
    predicted, whose pixels are not decoded again); raise InputError where two inputs share an
    ImageId (or one differing only in case, as on a case-insensitive disk)."""
    files, rejects = expand(arguments)
    done = frozenset(done)
    result = Inputs(rejects=rejects)
    with ThreadPoolExecutor(min(_CHECK_THREADS, os.cpu_count() or 1)) as pool:
        for checked, note in pool.map(lambda path: _check(path, done), files):
            if isinstance(checked, Reject):
                result.rejects.append(checked)
            else:
                (result.done if checked.image_id in done else result.todo).append(checked)
            if note is not None:
                result.notes.append(f"{checked.path}: {note}")
    _check_unique([*result.done, *result.todo])
    return result


def _check_unique(inputs: list[Input]) -> None:
    first: dict[str, Input] = {}
    clashes = []
    for item in inputs:
        other = first.setdefault(item.image_id.casefold(), item)
        if other is not item:
            clashes.append(f"{other.path} and {item.path} (ImageId {item.image_id!r})")
    if clashes:
        raise InputError(
            "inputs whose outputs would overwrite each other's, as both have one ImageId; "
            "leave one of each pair out: " + "; ".join(clashes)
        )
