"""The onnxruntime backend: an export folder's fold models, each checked against its sha256 in
manifest.json before onnxruntime loads it. Imports no torch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ptxseg.contracts.ensemble_spec import EnsembleSpec, ModelKey
from ptxseg.deploy.combine import ModelOutput
from ptxseg.deploy.manifest import (
    INPUT_NAME,
    MANIFEST,
    ExportError,
    read_manifest,
    sha256,
)


def _key(entry: dict[str, Any], where: str) -> ModelKey:
    try:
        return ModelKey(entry["stage"], entry["arch"], int(entry["fold"]), entry["member"])
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{where}: a 'models' entry lacks {error}: {entry}") from error


def checked_file(folder: Path, entry: dict[str, Any]) -> Path:
    """The model file of a manifest entry, present and as the export wrote it."""
    name = str(entry.get("file", ""))
    if not name or Path(name).name != name:
        raise ExportError(f"{folder / MANIFEST}: model file name {name!r} is not a plain file name")
    path = folder / name
    if not path.is_file():
        raise ExportError(f"{path}: model file missing from the export (listed in {MANIFEST})")
    actual = sha256(path)
    if actual != entry.get("sha256"):
        raise ExportError(
            f"{path}: sha256 {actual} differs from {MANIFEST}'s {entry.get('sha256')}: the file "
            "is damaged or was replaced after the export; export again"
        )
    return path


class OnnxBackend:
    def __init__(self, spec: EnsembleSpec, sessions: dict[ModelKey, Any]) -> None:
        self.spec = spec
        self.sessions = sessions
        self.names = {key: [o.name for o in s.get_outputs()] for key, s in sessions.items()}

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> OnnxBackend:
        import onnxruntime as ort

        folder = Path(folder)
        manifest = read_manifest(folder)
        where = str(folder / MANIFEST)
        spec = EnsembleSpec.from_dict(manifest, where)
        entries = {_key(e, where): e for e in manifest["models"]}
        options = ort.SessionOptions()
        # Each session's arena keeps its peak activations for good: with tens of fold models that
        # was 2 GiB more at the demo's peak (8.3 against 6.4 GiB), for no measurable speed.
        options.enable_cpu_mem_arena = False
        if threads is not None:
            options.intra_op_num_threads = threads
        sessions = {}
        for key in spec.model_keys():
            if key not in entries:
                raise ExportError(f"{where}: no model file listed for {key}")
            path = checked_file(folder, entries[key])
            try:
                sessions[key] = ort.InferenceSession(
                    str(path), options, providers=providers or ["CPUExecutionProvider"]
                )
            except Exception as error:  # onnxruntime raises its own types for a bad file
                raise ExportError(f"{path}: onnxruntime cannot load it ({error})") from error
        return cls(spec, sessions)

    def outputs(self, keys: list[ModelKey], images: np.ndarray) -> Iterator[ModelOutput]:
        for key in keys:
            arrays = self.sessions[key].run(None, {INPUT_NAME: images})
            yield ModelOutput.from_named(self.names[key], arrays)
