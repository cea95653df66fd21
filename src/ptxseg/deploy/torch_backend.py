"""The PyTorch backend: the results folder's fold models, each with its TTA (`TTAModule`), read
when first used and kept within a memory budget (`Resident`), the next read while one runs; each
architecture built once (`ModelShells`) and the fold models' tensors put into it in turn."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from ptxseg.contracts.ensemble_spec import EnsembleNotFoundError, EnsembleSpec, ModelKey
from ptxseg.deploy.combine import ModelOutput, output_names
from ptxseg.deploy.resident import BUDGET, Resident, in_order
from ptxseg.deploy.tta_module import TTAModule
from ptxseg.infer.test_set import MemberWeights, ModelShells
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


class ShellModules(Mapping[ModelKey, TTAModule]):
    """The fold models as TTA modules: each one's tensors (read, kept or not, by ``members``) put
    into its architecture's shell when it is asked for. A module is that model until the next is
    asked for."""

    def __init__(
        self,
        members: Mapping[ModelKey, MemberWeights],
        shells: ModelShells,
        passes: list[tuple[str, float]],
    ) -> None:
        self.members = members
        self.shells = shells
        self.passes = passes

    def _module(self, member: MemberWeights) -> TTAModule:
        return TTAModule(self.shells.holding(member), self.passes).eval()

    def __getitem__(self, key: ModelKey) -> TTAModule:
        return self._module(self.members[key])

    def in_order(self, keys: Iterable[ModelKey], ahead: int = 1) -> Iterator[TTAModule]:
        return (self._module(member) for member in in_order(self.members, keys, ahead))

    def __iter__(self) -> Iterator[ModelKey]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


class TorchBackend:
    def __init__(self, modules: Mapping[ModelKey, TTAModule], device: torch.device) -> None:
        self.modules = modules  # a dict, or `ShellModules` that read them as they are used
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
        """The ensemble's fold models, each read when first used (`ModelShells.read`); on the CPU,
        those beyond ``budget`` bytes of model files are read again at each use (None: all
        kept). On a GPU all are kept: a copy to the device at each use would cost more than
        the memory it saves."""
        if threads is not None:
            # A CPU's float sums depend on how the work is split: the same thread count (and batch)
            # as the test set's prediction job gives its maps bit for bit.
            torch.set_num_threads(threads)
        torch_device = pick_device(device)
        files = model_files(results, spec)

        shells = ModelShells(torch_device)
        sizes = {key: path.stat().st_size for key, path in files.items()}
        keep = budget if torch_device.type == "cpu" else None
        members = Resident(sizes, lambda key: shells.read(files[key]), keep)
        return cls(ShellModules(members, shells, spec.passes), torch_device)

    @torch.inference_mode()
    def outputs(
        self, keys: list[ModelKey], batches: list[np.ndarray]
    ) -> Iterator[list[ModelOutput]]:
        inputs = [torch.from_numpy(images).to(self.device) for images in batches]
        for key, module in zip(keys, in_order(self.modules, keys), strict=True):
            outputs = []
            for batch in inputs:
                arrays = [a.float().cpu().numpy() for a in module(batch)]
                outputs.append(ModelOutput.from_named(output_names(key.stage, len(arrays)), arrays))
            yield outputs
