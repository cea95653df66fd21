"""Test-set prediction of one architecture: every fold model (its kept members averaged) in turn.

Segmenters write one compressed uint8 map file per fold (see ``ptxseg.layout``; images in the order of
``ids.csv``; see ``ptxseg.io.maps``): the members' mean by the cascade's own steps
(``ptxseg.scoring.cascade``: each member's map quantised, their integer sum, its rounded mean).
The sum goes member by member through an uncompressed uint16 scratch memory map beside the output
(a compressed chunk rewritten in place would leave dead space in the file; two bytes a pixel, as
the exact sum needs), whose mean is then copied into the map file a chunk at a time, so memory
does not grow with the number of test images. Classifiers write one probability column per fold
into a CSV.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ptxseg.data.datasets import RepackedImages
from ptxseg.data.repack import read_manifest, read_stats
from ptxseg.io import atomic, maps
from ptxseg.layout import fold_name
from ptxseg.models import build_shell
from ptxseg.models.weights import StateDict, assign_state, fit_state, state_dict_of
from ptxseg.runtime import checkpoint
from ptxseg.runtime.device import pick_device
from ptxseg.runtime.options import Runtime
from ptxseg.runtime.predict import mark_trained
from ptxseg.scoring.cascade import MemberSum, ProbabilitySum, quantise_probabilities

log = logging.getLogger(__name__)

COPY_CHUNK = 64  # images copied from the scratch map into the compressed file at a time


def load_member(path: str | os.PathLike, device: torch.device) -> torch.nn.Module:
    """A kept model, a module of its own, rebuilt from the architecture and options recorded in
    its file, with the scales it was trained at (`ptxseg.runtime.predict.mark_trained`).

    The file is read once, memory-mapped, and the model built without initialising its weights
    (`ModelShells`): on the CPU its tensors are the file's pages, read as it runs and released
    with the model, so loading costs a tenth of a second where building, initialising and copying
    cost seconds."""
    shells = ModelShells(device)
    return shells.holding(shells.read(path))


@dataclass(frozen=True)
class MemberWeights:
    """A kept model's file, read (memory-mapped) and fitted to its architecture's layout: what a
    `ModelShells` module takes to become that model."""

    path: str
    arch: str
    options: dict[str, Any]
    meta: dict[str, Any]
    state: StateDict


class ModelShells:
    """One module per architecture and options, built once without weights (`build_shell`), into
    which a member's tensors are put at each use (`holding`): an ensemble of tens of fold models
    of a few architectures builds each architecture once (a build costs up to half a second,
    densenet169's; putting tensors in, milliseconds). A module returned by `holding` is every
    member of its architecture in turn: use it before asking for the next. `read` may run on
    another thread than `holding` (the shells are built under a lock)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._shells: dict[tuple[str, str], tuple[torch.nn.Module, dict]] = {}
        self._lock = threading.Lock()
        self._in_use: tuple[torch.nn.Module, dict] | None = None

    def _shell(self, arch: str, options: dict[str, Any]) -> tuple[torch.nn.Module, dict]:
        """The module of ``arch`` with ``options``, and its state dict as built (the meta tensors'
        shapes and layouts, which `fit_state` reads while the module may hold another's)."""
        key = (arch, json.dumps(options, sort_keys=True))
        with self._lock:
            if key not in self._shells:
                shell = build_shell(arch, 1, **options)
                self._shells[key] = (shell, dict(shell.state_dict()))
            return self._shells[key]

    def read(self, path: str | os.PathLike) -> MemberWeights:
        payload = checkpoint.load(path, mmap=True)
        meta = payload.get("meta", {}) if isinstance(payload, dict) else {}
        if "arch" not in meta:
            raise ValueError(f"{path}: no architecture recorded in the model file's meta")
        options = meta.get("options", {})
        _, own = self._shell(meta["arch"], options)
        state = fit_state(own, state_dict_of(payload, path), path)
        if self.device.type != "cpu":
            state = {k: v.to(self.device) for k, v in state.items()}
        return MemberWeights(str(path), meta["arch"], options, meta, state)

    def holding(self, member: MemberWeights) -> torch.nn.Module:
        """The architecture's module with ``member``'s tensors and trained scales (its sizes
        decide its TTA passes). The module used before, if of another architecture, lets go of
        its tensors: a model not kept is freed once the next is in use."""
        entry = self._shell(member.arch, member.options)
        shell = entry[0]
        if self._in_use is not None and self._in_use[0] is not shell:
            previous, own = self._in_use
            previous.load_state_dict(own, strict=True, assign=True)  # meta again
        self._in_use = entry
        assign_state(shell, member.state, member.path)
        if self.device.type != "cpu":
            shell.to(self.device)  # a buffer a real build computed, outside the state dict
        return mark_trained(shell, member.meta)


def test_dataset(
    manifest_csv: str | os.PathLike, stats_json: str | os.PathLike, size: int
) -> RepackedImages:
    manifest = read_manifest(manifest_csv)
    rows = manifest[(manifest["split"] == "test") & (manifest["size"] == size)].sort_values(
        "image_id"
    )
    if rows.empty:
        raise ValueError(f"{manifest_csv}: no test images at {size}px")
    mean, std = read_stats(stats_json, size)
    return RepackedImages(
        rows["image_id"].tolist(),
        [Path(manifest_csv).parent / p for p in rows["image"]],  # relative to the manifest
        mean=mean,
        std=std,
    )


def _member_average(
    models: Sequence[str | os.PathLike],
    dataset: RepackedImages,
    batch_size: int,
    device: torch.device,
    runtime: Runtime,
    running: MemberSum | ProbabilitySum,
) -> np.ndarray | None:
    """Add every member's predictions to ``running``, one model at a time (a segmenter's uint8 maps
    to a `MemberSum`, a classifier's probabilities to a `ProbabilitySum`: the cascade's own
    steps); return the members' mean head probability per image where the segmenters have a
    classification head (None otherwise)."""
    head = None
    for path in models:
        model = load_member(path, device)
        for indices, probabilities, image_p in runtime.predict_batches(
            model, dataset, device, batch_size
        ):
            if isinstance(running, ProbabilitySum):
                running.add(probabilities[:, 0], indices)
            else:
                running.add(quantise_probabilities(probabilities), indices)
            if image_p is not None:
                head = ProbabilitySum(len(dataset)) if head is None else head
                head.add(image_p, indices)
        running.next_member()
        if head is not None:
            head.next_member()
        del model
    return None if head is None else head.mean()


def predict_classifier(
    *,
    fold_models: dict[int, list[str]],
    manifest_csv,
    stats_json,
    size: int,
    out_csv: str | os.PathLike,
    runtime: Runtime | None = None,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Probability per test image and fold (members averaged): columns image_id, fold0, fold1, ..."""
    runtime = runtime or Runtime()
    torch.set_num_threads(max(1, runtime.threads))
    device = pick_device(runtime.device)
    dataset = test_dataset(manifest_csv, stats_json, size)
    table = pd.DataFrame({"image_id": dataset.image_ids})
    for fold, models in sorted(fold_models.items()):
        running = ProbabilitySum(len(dataset))
        _member_average(models, dataset, batch_size, device, runtime, running)
        table[fold_name(fold)] = running.mean()
    atomic.write_csv(out_csv, table)
    log.info(
        "classifier test predictions: %d images x %d folds -> %s",
        len(table),
        len(fold_models),
        out_csv,
    )
    return table


def predict_segmenter(
    *,
    fold_models: dict[int, list[str]],
    manifest_csv,
    stats_json,
    size: int,
    out_maps: dict[int, str | os.PathLike],
    out_ids: str | os.PathLike,
    runtime: Runtime | None = None,
    batch_size: int = 16,
) -> list[Path]:
    """uint8 maps per fold (members averaged) in ``out_maps[fold]``; image order in ``out_ids``,
    with the classification heads' probability per fold where the segmenters have one."""
    runtime = runtime or Runtime()
    torch.set_num_threads(max(1, runtime.threads))
    device = pick_device(runtime.device)
    dataset = test_dataset(manifest_csv, stats_json, size)
    if set(out_maps) != set(fold_models):
        raise ValueError(
            f"maps asked for folds {sorted(out_maps)}, models of {sorted(fold_models)}"
        )
    written, heads = [], {}
    shape = (len(dataset), size, size)
    for fold, models in sorted(fold_models.items()):
        path = Path(out_maps[fold])
        path.parent.mkdir(parents=True, exist_ok=True)
        # One scratch name per output: a killed job's leftover is overwritten by its rerun.
        scratch = path.parent / f".{path.name}.scratch"
        try:
            total = np.memmap(scratch, dtype=np.uint16, mode="w+", shape=shape)
            running = MemberSum(out=total)
            head = _member_average(models, dataset, batch_size, device, runtime, running)
            with maps.create(path, shape) as out:
                for start in range(0, len(dataset), COPY_CHUNK):
                    rows = slice(start, min(start + COPY_CHUNK, len(dataset)))
                    out[rows] = running.mean(rows)
            del running, total
        finally:
            scratch.unlink(missing_ok=True)
        written.append(path)
        if head is not None:
            heads[fold_name(fold)] = head
    # The classification heads' probabilities (members averaged), one column per fold, beside
    # the image order; none where the segmenters have no head.
    atomic.write_csv(out_ids, pd.DataFrame({"image_id": dataset.image_ids, **heads}))
    log.info(
        "segmenter test maps: %d images x %d folds at %dpx -> %s",
        len(dataset),
        len(written),
        size,
        Path(out_ids).parent,
    )
    return written
