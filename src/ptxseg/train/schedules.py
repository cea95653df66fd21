"""Optimisers and learning-rate schedules from config, built on torch.optim.

A linear warm-up (per batch) is followed by one main schedule: cosine annealing with warm
restarts (stepped per batch with fractional epochs; the end of each cycle is a snapshot point for
snapshot ensembling), ReduceLROnPlateau (per epoch, on the monitored metric), a constant rate, or
exponential decay (the EfficientNet paper's: the rate times ``decay_factor`` every ``decay_epochs``,
per batch with fractional epochs; no cycle ends, so no snapshots). Optimisers: Adam, AdamW, and
timm's RMSpropTF (RMSProp as TensorFlow computes it, which the EfficientNet paper trained with).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.optim import RMSpropTF
from torch.optim import lr_scheduler

from ptxseg.recipes import cycle_ends

OPTIMISERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop_tf": RMSpropTF}
SCHEDULES = ("cosine_restarts", "plateau", "constant", "exponential")


@dataclass(frozen=True)
class RmspropSpec:
    """rmsprop_tf's own constants (the paper's values): TensorFlow's rho (torch's alpha), momentum,
    and epsilon (inside the square root, as TensorFlow adds it)."""

    decay: float = 0.9
    momentum: float = 0.9
    eps: float = 1e-3


def build_optimiser(
    parameters,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    rmsprop: RmspropSpec | None = None,
) -> torch.optim.Optimizer:
    """``rmsprop_tf`` is timm's RMSpropTF as TensorFlow computes it: the mean square starts at one,
    epsilon is inside the square root, the rate is accumulated in the momentum buffer, and the
    weight decay is an L2 term added to the gradient (the official code adds it to the loss)."""
    if name not in OPTIMISERS:
        raise ValueError(f"unknown optimiser {name!r}; valid: {', '.join(OPTIMISERS)}")
    if name == "rmsprop_tf":
        spec = rmsprop or RmspropSpec()
        return RMSpropTF(
            parameters,
            lr=lr,
            alpha=spec.decay,
            momentum=spec.momentum,
            eps=spec.eps,
            weight_decay=weight_decay,
        )
    return OPTIMISERS[name](parameters, lr=lr, weight_decay=weight_decay)


@dataclass(frozen=True)
class ScheduleSpec:
    name: str = "cosine_restarts"
    warmup_epochs: int = 0
    cycle_epochs: int = 10
    cycle_mult: int = 1
    min_lr: float = 1e-6
    plateau_patience: int = 2
    plateau_factor: float = 0.5
    decay_factor: float = 0.97  # exponential: the factor every decay_epochs
    decay_epochs: float = 2.4
    mode: str = "max"  # of the monitored metric, for plateau

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; valid: {', '.join(SCHEDULES)}")


class LrSchedule:
    """Drives the optimiser's learning rate: ``step_batch`` every batch, ``step_epoch`` every epoch."""

    def __init__(self, optimiser: torch.optim.Optimizer, spec: ScheduleSpec, epochs: int) -> None:
        self.spec = spec
        self.epochs = epochs
        # Warm-up is a linear ramp computed per batch: epochs can differ in length (positive-fraction
        # sampling), so a step-counted LinearLR would not know its total length in advance.
        self.base_lrs = [group["lr"] for group in optimiser.param_groups]
        self.main: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None = None
        if spec.name == "cosine_restarts":
            self.main = lr_scheduler.CosineAnnealingWarmRestarts(
                optimiser, T_0=spec.cycle_epochs, T_mult=spec.cycle_mult, eta_min=spec.min_lr
            )
        elif spec.name == "plateau":
            self.main = lr_scheduler.ReduceLROnPlateau(
                optimiser,
                mode=spec.mode,
                patience=spec.plateau_patience,
                factor=spec.plateau_factor,
                min_lr=spec.min_lr,
            )
        self.optimiser = optimiser

    def step_batch(self, epoch: int, batch: int, batches: int) -> None:
        """Set the rate for batch ``batch`` of ``batches`` in (0-based) ``epoch``."""
        if epoch < self.spec.warmup_epochs:
            progress = (epoch + (batch + 1) / batches) / self.spec.warmup_epochs
            for group, base in zip(self.optimiser.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * (0.05 + 0.95 * progress)
            return
        after_warmup = epoch - self.spec.warmup_epochs + batch / batches  # fractional epochs
        if isinstance(self.main, lr_scheduler.CosineAnnealingWarmRestarts):
            self.main.step(after_warmup)
        elif self.spec.name == "exponential":
            # A closed form of (epoch, batch), so the schedule holds no state to resume.
            factor = self.spec.decay_factor ** (after_warmup / self.spec.decay_epochs)
            for group, base in zip(self.optimiser.param_groups, self.base_lrs, strict=True):
                group["lr"] = base * factor

    def step_epoch(self, monitored: float | None) -> None:
        if isinstance(self.main, lr_scheduler.ReduceLROnPlateau) and monitored is not None:
            self.main.step(monitored)

    def cycle_ends(self) -> list[int]:
        """Epoch counts (1-based) after which a cosine cycle ends: the snapshot points (none for the
        other schedules, exponential included)."""
        spec = self.spec
        return cycle_ends(
            spec.name, self.epochs, spec.warmup_epochs, spec.cycle_epochs, spec.cycle_mult
        )

    @property
    def lr(self) -> float:
        return float(self.optimiser.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        """The main scheduler's state; warm-up and exponential decay are closed forms, stateless."""
        return {"main": self.main.state_dict() if self.main is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        if self.main is not None and state.get("main"):
            self.main.load_state_dict(state["main"])
