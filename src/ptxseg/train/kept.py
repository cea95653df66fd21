"""Kept models (best, snapshots) that survive a killed training job.

Snakemake deletes a killed job's output folder before it reruns the job, so the best and snapshot
models written there before the kill would be gone while the training state (kept outside the
outputs) says they were written. Each kept model is therefore also written once beside the state,
named by its epoch; the state records which copies it stands for, and a resumed run puts back the
ones its output folder lost. Copies the state no longer names are pruned after each state save.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from ptxseg.runtime import checkpoint


class KeptCopies:
    def __init__(self, state_path: str | os.PathLike | None):
        self.folder = None if state_path is None else copies_folder(state_path)
        self.files: dict[str, str] = {}  # member name -> file name in self.folder

    def export(self, name: str, path: Path, model: torch.nn.Module, meta: dict) -> None:
        """Write the member file and, where there is a training state, its copy."""
        payload = checkpoint.model_payload(model, meta)
        checkpoint.save(path, payload)
        if self.folder is not None:
            file = f"{name}.epoch{meta['epoch']}.pt"
            checkpoint.save(self.folder / file, payload)
            self.files[name] = file

    def record(self) -> dict[str, str]:
        """What goes into the training state."""
        return dict(self.files)

    def restore(self, recorded: dict[str, str], paths: dict[str, Path]) -> list[str]:
        """Adopt a state's record; write back the members whose files are missing. Returns those."""
        self.files = dict(recorded)
        restored = []
        for name, file in recorded.items():
            if not Path(paths[name]).exists() and self.folder is not None:
                checkpoint.save(paths[name], checkpoint.load(self.folder / file))
                restored.append(name)
        return restored

    def prune(self) -> None:
        """Delete the copies that the last saved state does not name."""
        if self.folder is None or not self.folder.is_dir():
            return
        for path in self.folder.glob("*.pt"):
            if path.name not in self.files.values():
                path.unlink(missing_ok=True)


def copies_folder(state_path: str | os.PathLike) -> Path:
    return Path(state_path).with_suffix(".kept")


def remove_training_state(state_path: str | os.PathLike) -> None:
    """The run is complete: its resume state and the kept copies are no longer needed."""
    checkpoint.remove(state_path)
    shutil.rmtree(copies_folder(state_path), ignore_errors=True)
