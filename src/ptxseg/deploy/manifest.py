"""manifest.json of an ONNX export: everything prediction needs, beside the model files.

It carries ensemble.json's prediction keys (`EnsembleSpec.prediction_dict`: the gate's and the
segmenters' weights, members, cascade, preprocessing with the normalisation, sizes, statistics and
TTA, and the calibration where there is one), so `EnsembleSpec` reads both files alike, and adds
the model files with their sha256, the TTA passes spelled out, the ptxseg version and
``config_hash``: the sha256 of ensemble.json's bytes.
No torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ptxseg.contracts.ensemble_spec import EnsembleSpecError

MANIFEST = "manifest.json"
FORMAT = "ptxseg-onnx"
FORMAT_VERSION = 1
INPUT_NAME = "images"


class ExportError(ValueError):
    """An export folder that cannot be used; the message names the file."""


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise ExportError(
            f"{folder}: no such folder (make one with `ptxseg export --out {folder}`)"
        )
    if not path.is_file():
        raise ExportError(
            f"{path} not found: {folder} is not a ptxseg ONNX export "
            f"(make one with `ptxseg export --results results --out {folder}`)"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ExportError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ExportError(f"{path}: key 'format' is not {FORMAT!r}: not a ptxseg ONNX export")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: format_version {manifest.get('format_version')!r}, this ptxseg reads "
            f"{FORMAT_VERSION}: export again with this version"
        )
    if not isinstance(manifest.get("models"), list):
        raise EnsembleSpecError(f"{path}: key 'models' missing or not a list")
    return manifest
