"""Checks on identifiers and header text that come from files the pipeline does not control.

ImageIds become file names (``<id>.png``), so one holding ``/`` or ``..`` could write outside the
results folder; header strings end up in CSV files and logs, where control characters would
corrupt lines or terminals.
"""

from __future__ import annotations

import re

# SIIM ImageIds are DICOM UIDs (digits and dots); NIH ones are file names like 00000001_000.png.
_IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}", re.ASCII)


class BadImageId(ValueError):
    """An ImageId that is unsafe as a file name."""


def check_image_id(image_id: object, where: str) -> str:
    """Return ``image_id`` if it is safe as a file name, else raise naming ``where`` it came from."""
    text = image_id if isinstance(image_id, str) else ""
    if not _IMAGE_ID.fullmatch(text) or ".." in text:
        raise BadImageId(
            f"{where}: ImageId {printable(str(image_id))!r} is not a valid image id "
            "(1-200 letters, digits, '.', '_' or '-', not starting with '.', no '..')"
        )
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\x1b``), safe for a CSV cell or a log line."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)
