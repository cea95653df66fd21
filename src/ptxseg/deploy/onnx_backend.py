"""The onnxruntime backend: an export folder's fold models, each checked against its sha256 in
manifest.json before onnxruntime first loads it; sessions are made when first used (the next while
one runs) and kept within a memory budget (`Resident`). Imports no torch."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
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
from ptxseg.deploy.resident import BUDGET, Resident, in_order

# Sessions made side by side while one runs: onnxruntime makes a session in native code without
# the GIL. On 2 cores, two loaders took the demo ensemble's first image from 16.0-17.3 to
# 10.4-12.0 s (alternated, 2026-12-07; benchmarks/README.md); PyTorch's reading gained nothing
# that way (its unpickler holds the GIL: 15.6-16.5 s either way), so its backend reads one ahead.
LOADERS = 2


def _key(entry: dict[str, Any], where: str) -> ModelKey:
    try:
        return ModelKey(entry["stage"], entry["arch"], int(entry["fold"]), entry["member"])
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{where}: a 'models' entry lacks {error}: {entry}") from error


def model_file(folder: Path, entry: dict[str, Any]) -> Path:
    """The model file of a manifest entry, present (its sha256 is checked when it is read)."""
    name = str(entry.get("file", ""))
    if not name or Path(name).name != name:
        raise ExportError(f"{folder / MANIFEST}: model file name {name!r} is not a plain file name")
    path = folder / name
    if not path.is_file():
        raise ExportError(f"{path}: model file missing from the export (listed in {MANIFEST})")
    return path


def check_file(path: Path, entry: dict[str, Any]) -> None:
    """``path`` as the export wrote it (its sha256 in the manifest)."""
    actual = sha256(path)
    if actual != entry.get("sha256"):
        raise ExportError(
            f"{path}: sha256 {actual} differs from {MANIFEST}'s {entry.get('sha256')}: the file "
            "is damaged or was replaced after the export; export again"
        )


class OnnxBackend:
    def __init__(self, spec: EnsembleSpec, sessions: Mapping[ModelKey, Any]) -> None:
        self.spec = spec
        self.sessions = sessions  # a dict, or a `Resident` that makes them as they are used

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
        budget: int | None = BUDGET,
    ) -> OnnxBackend:
        """The export's sessions, each made when first used; on the CPU, those beyond ``budget``
        bytes of model files are made again at each use (None: all
        kept)."""
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
        providers = providers or ["CPUExecutionProvider"]
        files = {}
        for key in spec.model_keys():
            if key not in entries:
                raise ExportError(f"{where}: no model file listed for {key}")
            files[key] = model_file(folder, entries[key])
        checked: set[ModelKey] = set()

        def load(key: ModelKey) -> Any:
            path = files[key]
            if key not in checked:  # checked when first read, not at every round
                check_file(path, entries[key])
                checked.add(key)
            try:
                # From the path, not its bytes: a copy of the file less at the peak.
                return ort.InferenceSession(str(path), options, providers=providers)
            except Exception as error:  # onnxruntime raises its own types for a bad file
                raise ExportError(f"{path}: onnxruntime cannot load it ({error})") from error

        # A session counted as its file's size: the demo's peak was 2.46 GiB at the default budget.
        sizes = {key: path.stat().st_size for key, path in files.items()}
        keep = budget if providers == ["CPUExecutionProvider"] else None
        return cls(spec, Resident(sizes, load, keep))

    def outputs(
        self, keys: list[ModelKey], batches: list[np.ndarray]
    ) -> Iterator[list[ModelOutput]]:
        # Two ahead only where loading is what the round waits for: its one batch (the first
        # image's). With a round of many batches one loader keeps up, and a second would hold one
        # more session (~0.4 GiB at the demo's peak) beside the round's outputs.
        ahead = LOADERS if len(batches) == 1 else 1
        for session in in_order(self.sessions, keys, ahead=ahead):
            names = [o.name for o in session.get_outputs()]
            outputs = [
                ModelOutput.from_named(names, session.run(None, {INPUT_NAME: images}))
                for images in batches
            ]
            del session  # one not kept is freed before the one after next is made
            yield outputs
