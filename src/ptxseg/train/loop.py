"""One training loop for classifiers and segmenters.

Per epoch: reseed everything from (seed, epoch) so a resumed run repeats the uninterrupted one
bit for bit; sample the epoch's images; train with warm-up / cosine restarts / plateau /
exponential decay, gradient accumulation and clipping, bf16 autocast on a GPU, the encoder frozen
for a stage's first epochs where asked; evaluate on the
held-out images; keep the best model, the snapshot at the end of each cosine cycle, a stochastic
weight average, and an exponential moving average of the weights (updated after every optimiser
step); write the metrics CSV every epoch and the training state (for resuming) every epoch or, with
``runtime.checkpoint_every_s``, at most that often and after the last epoch; all atomically.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn
from torch.utils.data import DataLoader, Subset

from ptxseg.data.datasets import RepackedImages, worker_init
from ptxseg.io import atomic
from ptxseg.layout import BEST, EMA, SWA, snapshot_member
from ptxseg.models.outputs import as_float
from ptxseg.models.parts import encoder_of, freeze
from ptxseg.parallel import progress
from ptxseg.runtime import checkpoint
from ptxseg.runtime.device import pick_device, seed_everything
from ptxseg.runtime.precision import autocast
from ptxseg.train.kept import KeptCopies
from ptxseg.train.sampling import epoch_indices
from ptxseg.train.schedules import LrSchedule, build_optimiser, parameter_groups
from ptxseg.train.settings import FitSettings

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Members:
    """Where the kept models go: best on the held-out images, SWA, EMA, and cycle-end snapshots."""

    best: Path
    swa: Path | None = None
    ema: Path | None = None
    snapshots: list[Path] = field(default_factory=list)
    metrics_csv: Path | None = None
    state: Path | None = None  # the training state, for resuming


@dataclass
class Task:
    """What differs between model kinds: the loss, how predictions are scored, and whether
    a training image counts as positive (for sampling)."""

    loss: nn.Module
    evaluate: Callable[[nn.Module, RepackedImages], dict]
    positive: np.ndarray | None = None
    # Weaves a second training set into the epoch's order (pseudo-labels: sampling.mixed_order).
    mix: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    # A consistency loss on unlabelled images beside the task's own (train.mean_teacher).
    consistency: Any = None


def _improved(value: float, best: float | None, mode: str) -> bool:
    if value is None or math.isnan(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def _loader(dataset, indices: np.ndarray | None, settings: FitSettings, seed: int):
    subset = Subset(dataset, indices.tolist()) if indices is not None else dataset
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(settings.batch_size, len(subset))
    # A last batch of one image breaks BatchNorm; drop it when the epoch has more than one batch.
    return DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=settings.runtime.num_workers,
        worker_init_fn=worker_init,
        generator=generator,
        drop_last=len(subset) > batch_size,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


@dataclass
class _Progress:
    """What a run has done so far: what its resume state holds beside the weights."""

    history: list[dict] = field(default_factory=list)
    best: float | None = None
    start_epoch: int = 0


@dataclass
class _Parts:
    """The moving parts of one run, built once by ``_parts``."""

    optimiser: torch.optim.Optimizer
    schedule: LrSchedule
    snapshot_epochs: list[int]
    swa: AveragedModel | None
    ema: AveragedModel | None
    kept: KeptCopies
    fingerprint: dict
    consistency: Any = None  # Task.consistency: its state is saved and resumed with the run's


def fit(
    model: nn.Module,
    train_set: RepackedImages,
    val_set: RepackedImages,
    task: Task,
    settings: FitSettings,
    members: Members,
    meta: dict,
    device: torch.device | None = None,
    stop_after_epoch: int | None = None,
) -> pd.DataFrame:
    """Train ``model``; write the kept members, metrics and training state; return the metrics table.

    ``stop_after_epoch`` ends the run after that many epochs, as if the job were killed there
    (for tests of resuming).
    """
    device = device or pick_device()
    model.to(device)
    if settings.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    parts = _parts(model, settings, members, meta)
    parts.consistency = task.consistency
    progress_ = _resume(model, parts, members)
    if progress_.history and members.metrics_csv is not None:
        # A job killed after its last epoch's state (e.g. while predicting) resumes with no epoch
        # left to run: its metrics table, which the failed job's cleanup removed, is rewritten.
        atomic.write_csv(members.metrics_csv, pd.DataFrame(progress_.history))
    loss_fn = task.loss.to(device)
    positive = task.positive if task.positive is not None else np.zeros(len(train_set), dtype=bool)
    state_written = time.monotonic()
    for epoch in range(progress_.start_epoch, settings.epochs):
        started = time.perf_counter()
        epoch_seed = seed_everything(settings.seed, epoch)
        train_set.reseed(epoch_seed)
        rng = np.random.default_rng(epoch_seed)
        indices = epoch_indices(
            positive,
            settings.sampling,
            settings.sampling_offset + epoch,  # a stage's place in a slide over the whole run
            settings.sampling_epochs or settings.epochs,
            rng,
            settings.sampling_start,
            settings.sampling_end,
        )
        if task.mix is not None:
            indices = task.mix(indices, rng)
        if parts.consistency is not None:
            parts.consistency.start_epoch(epoch, epoch_seed)
        if settings.steps_per_epoch is not None:
            indices = indices[: settings.steps_per_epoch * settings.batch_size]
        loader = _loader(train_set, indices, settings, epoch_seed)
        train_loss = _train_epoch(model, loader, loss_fn, parts, settings, epoch, device, members)
        if parts.swa is not None and epoch >= settings.swa_start:
            parts.swa.update_parameters(model)
        metrics = task.evaluate(model, val_set)
        row = {
            "epoch": epoch + 1,
            "lr": parts.schedule.lr,
            "train_loss": train_loss,
            **metrics,
            "images": len(indices),
            "seconds": round(time.perf_counter() - started, 2),
            "snapshot": int(epoch + 1 in parts.snapshot_epochs),
        }
        _end_epoch(
            model, parts, progress_, row, metrics.get(settings.monitor), settings, members, meta
        )
        stopping = stop_after_epoch is not None and epoch + 1 >= stop_after_epoch
        due = time.monotonic() - state_written >= settings.runtime.checkpoint_every_s
        if members.state is not None and (due or stopping or epoch + 1 == settings.epochs):
            state_written = time.monotonic()
            _save_state(model, parts, progress_, epoch, settings, members)
        if stopping and epoch + 1 < settings.epochs:
            return pd.DataFrame(progress_.history)
    _finish(model, parts, train_set, settings, members, meta, device)
    return pd.DataFrame(progress_.history)


def ema_average(model: nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """An exponential moving average of ``model``'s weights and buffers, to be updated after every
    optimiser step. With ``use_buffers`` the BatchNorm statistics are averaged too, so the average
    needs no ``update_bn`` pass at the end (unlike SWA).

    It starts from ``model``'s weights now, as TensorFlow's shadow variables start from the initial
    values: the k-th update after that then sees ``n_averaged == k`` (the global step). With
    ``warmup`` the decay is the official EfficientNet code's, min(decay, (1 + k) / (10 + k))
    (tf.train.ExponentialMovingAverage with num_updates), so the first weights do not linger;
    torch's ``get_ema_multi_avg_fn`` has a fixed decay only, hence the function below.
    """
    multi_avg_fn = _warmed_ema_fn(decay) if warmup else get_ema_multi_avg_fn(decay)
    average = AveragedModel(model, multi_avg_fn=multi_avg_fn, use_buffers=True)
    average.update_parameters(model)  # n_averaged 0: a copy of the initial weights
    return average


def _warmed_ema_fn(decay: float):
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        n = int(n_averaged)  # one host sync per step, as the loop's loss.item() already makes
        weight = 1.0 - min(decay, (1 + n) / (10 + n))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight)
        else:  # integer buffers (BatchNorm's num_batches_tracked): the model's own count
            torch._foreach_copy_(averaged, current)

    return update


def _parts(model: nn.Module, settings: FitSettings, members: Members, meta: dict) -> _Parts:
    optimiser = build_optimiser(
        parameter_groups(model, settings.weight_decay, settings.decay_norm_and_bias),
        settings.optimiser,
        settings.lr,
        settings.weight_decay,
        settings.rmsprop,
    )
    schedule = LrSchedule(optimiser, settings.schedule, settings.epochs)
    cycle_ends = schedule.cycle_ends()
    if settings.snapshots > len(cycle_ends):
        raise ValueError(
            f"{settings.snapshots} snapshots asked for, but the schedule ends only "
            f"{len(cycle_ends)} cosine cycle(s) within {settings.epochs} epochs"
        )
    snapshot_epochs = (
        cycle_ends[len(cycle_ends) - settings.snapshots :] if settings.snapshots else []
    )
    if len(members.snapshots) != len(snapshot_epochs):
        raise ValueError(
            f"{len(members.snapshots)} snapshot paths for {len(snapshot_epochs)} snapshots"
        )
    return _Parts(
        optimiser,
        schedule,
        snapshot_epochs,
        AveragedModel(model) if settings.swa_start is not None else None,
        (
            ema_average(model, settings.ema_decay, settings.ema_warmup)
            if settings.ema_decay is not None
            else None
        ),
        KeptCopies(members.state),
        {**settings.fingerprint(), **meta},
    )


def _resume(model: nn.Module, parts: _Parts, members: Members) -> _Progress:
    """The progress of an interrupted run with the same settings, its state loaded; else none."""
    if members.state is None or not Path(members.state).exists():
        return _Progress()
    state = checkpoint.load(members.state)
    if state.get("fingerprint") != parts.fingerprint:
        log.warning("%s was written with other settings; starting over", members.state)
        return _Progress()
    model.load_state_dict(state["model"])
    parts.optimiser.load_state_dict(state["optimiser"])
    parts.schedule.load_state_dict(state["schedule"])
    if parts.swa is not None and state.get("swa") is not None:
        parts.swa.load_state_dict(state["swa"])
    if parts.ema is not None and state.get("ema") is not None:
        parts.ema.load_state_dict(state["ema"])
    if parts.consistency is not None and state.get("consistency") is not None:
        parts.consistency.load_state_dict(state["consistency"])
    progress_ = _Progress(state["history"], state["best"], state["epoch"] + 1)
    log.info("resuming from %s after epoch %d", members.state, progress_.start_epoch)
    member_paths = {BEST: members.best} | {
        snapshot_member(k): path for k, path in enumerate(members.snapshots)
    }
    restored = parts.kept.restore(state.get("kept", {}), member_paths)
    if restored:
        log.info("restored %s from the copies beside the state", ", ".join(restored))
    return progress_


def _end_epoch(
    model: nn.Module,
    parts: _Parts,
    progress_: _Progress,
    row: dict,
    monitored: float | None,
    settings: FitSettings,
    members: Members,
    meta: dict,
) -> None:
    """Log the epoch; keep the best model and a snapshot where one is due; step the schedule;
    write the metrics table."""
    progress_.history.append(row)
    epoch = row["epoch"]
    log.info(
        "epoch %d/%d %s",
        epoch,
        settings.epochs,
        " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
    )
    if _improved(monitored, progress_.best, settings.monitor_mode):
        progress_.best = monitored
        parts.kept.export(
            BEST,
            members.best,
            model,
            {**meta, "member": BEST, "epoch": epoch, settings.monitor: monitored},
        )
    if epoch in parts.snapshot_epochs:
        k = parts.snapshot_epochs.index(epoch)
        parts.kept.export(
            snapshot_member(k),
            members.snapshots[k],
            model,
            {**meta, "member": snapshot_member(k), "epoch": epoch},
        )
    parts.schedule.step_epoch(monitored)
    if members.metrics_csv is not None:
        atomic.write_csv(members.metrics_csv, pd.DataFrame(progress_.history))


def _save_state(
    model: nn.Module,
    parts: _Parts,
    progress_: _Progress,
    epoch: int,
    settings: FitSettings,
    members: Members,
) -> None:
    checkpoint.save(
        members.state,
        {
            "fingerprint": parts.fingerprint,
            "epoch": epoch,
            "best": progress_.best,
            "history": progress_.history,
            "model": model.state_dict(),
            "optimiser": parts.optimiser.state_dict(),
            "schedule": parts.schedule.state_dict(),
            "swa": parts.swa.state_dict() if parts.swa is not None else None,
            "ema": parts.ema.state_dict() if parts.ema is not None else None,
            "consistency": (
                parts.consistency.state_dict() if parts.consistency is not None else None
            ),
            "kept": parts.kept.record(),
        },
    )
    parts.kept.prune()
    log.info(
        "resume state saved at epoch %d (runtime.checkpoint_every_s=%g)",
        epoch + 1,
        settings.runtime.checkpoint_every_s,
    )


def _finish(
    model: nn.Module,
    parts: _Parts,
    train_set: RepackedImages,
    settings: FitSettings,
    members: Members,
    meta: dict,
    device: torch.device,
) -> None:
    """The last kept models: the final weights where no evaluation was finite, the SWA (its
    BatchNorm statistics recomputed) and the EMA (its BatchNorm statistics averaged with it)."""
    if not Path(members.best).exists():  # every evaluation was NaN: keep the last model
        checkpoint.export_model(
            members.best, model, {**meta, "member": BEST, "epoch": settings.epochs}
        )
    if parts.swa is not None and members.swa is not None:
        _finish_swa(parts.swa, train_set, settings, device)
        checkpoint.export_model(
            members.swa, parts.swa.module, {**meta, "member": SWA, "epoch": settings.epochs}
        )
    if parts.ema is not None and members.ema is not None:
        checkpoint.export_model(
            members.ema, parts.ema.module, {**meta, "member": EMA, "epoch": settings.epochs}
        )


def _train_epoch(model, loader, loss_fn, parts, settings, epoch, device, members) -> float:
    optimiser, schedule = parts.optimiser, parts.schedule
    model.train()
    if settings.freeze_encoder_epochs:
        # After train(): a frozen encoder's BatchNorm layers stay in eval mode. Set every epoch
        # from the epoch alone, so a resumed run freezes exactly as the uninterrupted one.
        frozen = epoch < settings.freeze_encoder_epochs
        freeze(encoder_of(model), frozen)
        if frozen or epoch == settings.freeze_encoder_epochs:
            log.info("epoch %d: encoder %s", epoch + 1, "frozen" if frozen else "unfrozen")
    total, count = 0.0, 0
    batches = len(loader)
    optimiser.zero_grad(set_to_none=True)
    for step, batch in enumerate(progress(loader, batches, f"epoch {epoch + 1}")):
        schedule.step_batch(epoch, step, batches)
        if (
            settings.swa_lr is not None
            and settings.swa_start is not None
            and epoch >= settings.swa_start
        ):
            for group in optimiser.param_groups:
                group["lr"] = settings.swa_lr
        images = batch["image"].to(device, non_blocking=True)
        if settings.runtime.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch["target"].to(device, non_blocking=True)
        with autocast(device, settings.runtime.amp):
            output = model(images)
        loss = loss_fn(as_float(output), target)
        if parts.consistency is not None:
            loss = loss + parts.consistency.loss(model, device, settings.runtime.amp)
        if not torch.isfinite(loss):
            kept = (
                members.state
                if members.state is not None and Path(members.state).exists()
                else "none yet"
            )
            raise NonFiniteLossError(
                f"the loss became {loss.item()} in epoch {epoch + 1}, batch {step + 1}: stopping. "
                f"Last good checkpoint: {kept}. Lower the learning rate or check the inputs."
            )
        (loss / settings.accumulate).backward()
        if (step + 1) % settings.accumulate == 0 or step + 1 == batches:
            if settings.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            if parts.ema is not None:
                parts.ema.update_parameters(model)
            if parts.consistency is not None:
                parts.consistency.update(model)
        total += loss.item() * images.shape[0]
        count += images.shape[0]
    return total / max(count, 1)


class _BatchNormInTraining(nn.Module):
    """``model`` for ``update_bn``: its ``train()`` puts only the BatchNorm layers in training mode.

    torch's ``update_bn`` calls ``model.train()``, which also turns dropout and drop path on, so
    the statistics it collects describe activations that inference never sees: dropout's
    rescaling shifts their variance (Li et al., "Understanding the Disharmony between Dropout and
    Batch Normalization by Variance Shift", CVPR 2019). Seen here: an SWA member whose
    statistics came from a few crops with dropout and drop path on gave logits of +-110 where
    its snapshots gave +-0.2. With the rest of the network as at inference, the statistics are
    those of the averaged weights as they will run.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> _BatchNormInTraining:
        self.training = mode
        self.model.eval()
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train(mode)
        return self

    def forward(self, images: torch.Tensor) -> Any:
        return self.model(images)


def _finish_swa(
    swa: AveragedModel, train_set: RepackedImages, settings: FitSettings, device: torch.device
) -> None:
    """Recompute BatchNorm statistics for the averaged weights over the training images, as
    training augments them, with dropout and drop path off (`_BatchNormInTraining`)."""
    seed = seed_everything(settings.seed, settings.epochs)
    train_set.reseed(seed)
    loader = _loader(train_set, None, settings, seed)
    images_only = ({"input": batch["image"].to(device)} for batch in loader)

    class _Inputs:
        def __iter__(self):
            for batch in images_only:
                yield batch["input"]

    update_bn(_Inputs(), _BatchNormInTraining(swa), device=device)
    swa.eval()
