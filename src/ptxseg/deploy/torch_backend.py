"""The PyTorch backend: the results folder's fold models, each with its TTA (`TTAModule`), loaded
when first used and kept within a memory budget (`Resident`)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from ptxseg.contracts.ensemble_spec import EnsembleNotFoundError, EnsembleSpec, ModelKey
from ptxseg.deploy.combine import ModelOutput, output_names
from ptxseg.deploy.resident import BUDGET, Resident
from ptxseg.deploy.tta_module import TTAModule
from ptxseg.infer.test_set import load_member
from ptxseg.layout import Layout
from ptxseg.runtime.device import pick_device


def model_files(results: str | os.PathLike, spec: EnsembleSpec) -> dict[ModelKey, Path]:
    """Every fold model the ensemble runs, by key; an error listing those missing."""
    layout = Layout(str(results))
    files = {
        key: Path(layout.model(key.stage, key.arch, key.fold, key.member))
        for key in spec.model_keys()
    }
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise EnsembleNotFoundError(
            f"model file(s) missing from {results}: {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        )
    return files


class TorchBackend:
    def __init__(self, modules: Mapping[ModelKey, TTAModule], device: torch.device) -> None:
        self.modules = modules  # a dict, or a `Resident` that loads them as they are used
        self.device = device

    @classmethod
    def load(
        cls,
        results: str | os.PathLike,
        spec: EnsembleSpec,
        device: str = "auto",
        threads: int | None = None,
        budget: int | None = BUDGET,
    ) -> TorchBackend:
        """The ensemble's fold models, each loaded when first used (`load_member`); on the CPU,
        those beyond ``budget`` bytes of model files are loaded again at each use (None: all
        kept). On a GPU all are kept: a copy to the device at each use would cost more than
        the memory it saves."""
        if threads is not None:
            # A CPU's float sums depend on how the work is split: the same thread count (and batch)
            # as the test set's prediction job gives its maps bit for bit.
            torch.set_num_threads(threads)
        torch_device = pick_device(device)
        files = model_files(results, spec)

        def load(key: ModelKey) -> TTAModule:
            return TTAModule(load_member(files[key], torch_device), spec.passes).eval()

        sizes = {key: path.stat().st_size for key, path in files.items()}
        keep = budget if torch_device.type == "cpu" else None
        return cls(Resident(sizes, load, keep), torch_device)

    @torch.inference_mode()
    def outputs(
        self, keys: list[ModelKey], batches: list[np.ndarray]
    ) -> Iterator[list[ModelOutput]]:
        inputs = [torch.from_numpy(images).to(self.device) for images in batches]
        for key in keys:
            module = self.modules[key]
            outputs = []
            for batch in inputs:
                arrays = [a.float().cpu().numpy() for a in module(batch)]
                outputs.append(ModelOutput.from_named(output_names(key.stage, len(arrays)), arrays))
            del module  # one not kept is freed before the next loads
            yield outputs
