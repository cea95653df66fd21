"""Optimisers and learning-rate schedules from config, built on torch.optim.

A linear warm-up (per batch) is followed by one main schedule: cosine annealing with warm
restarts (stepped per batch with fractional epochs; the end of each cycle is a snapshot point for
snapshot ensembling), ReduceLROnPlateau (per epoch, on the monitored metric), a constant rate, or
exponential decay (the EfficientNet paper's: the rate times ``decay_factor`` every ``decay_epochs``
counted from the run's first step, at once (staircase, the official code) or smoothly per batch;
no cycle ends, so no snapshots). Optimisers: Adam, AdamW, and timm's RMSpropTF (RMSProp as
TensorFlow computes it, which the EfficientNet paper trained with), with the weight decay on every
parameter or, as the official EfficientNet code, not on BatchNorm's (nor, here, on biases).
"""

from __future__ import annotations

import math
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


def parameter_groups(model: torch.nn.Module, weight_decay: float, decay_norm_and_bias: bool):
    """The model's parameters for the optimiser: all of them, or (``decay_norm_and_bias`` False)
    two groups, the one-dimensional parameters (BatchNorm's and other norms' scale and shift, every
    bias) without weight decay and the rest with ``weight_decay``. The official EfficientNet code
    adds the L2 term only for variables outside batch normalisation. Written here rather than
    timm's ``param_groups_weight_decay``, which leaves out parameters that do not require gradients
    at the time: a stage's encoder may be frozen then, and must still be trained after it thaws."""
    if decay_norm_and_bias:
        return model.parameters()
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    decay = [p for p in model.parameters() if p.ndim > 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimiser(
    parameters,
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    rmsprop: RmspropSpec | None = None,
) -> torch.optim.Optimizer:
    """``rmsprop_tf`` is timm's RMSpropTF as TensorFlow computes it: the mean square starts at one,
    epsilon is inside the square root, the rate is accumulated in the momentum buffer, and the
    weight decay is an L2 term added to the gradient (the official code adds it to the loss).
    ``parameters`` may be groups (`parameter_groups`), each with its own weight decay."""
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
    staircase: bool = False  # exponential: the factor at once every decay_epochs (official code)
    warmup_from: float = 0.05  # the warm-up's first rate, as a share of the peak (official: 0)
    # exponential: the run length warmup_epochs and decay_epochs are written for; each run (stage)
    # scales them by its own epochs / reference_epochs. None: epochs as written.
    reference_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.name!r}; valid: {', '.join(SCHEDULES)}")
        if self.reference_epochs is not None and self.name != "exponential":
            raise ValueError(
                f"schedule.reference_epochs ({self.reference_epochs}) applies to the exponential "
                f"schedule only; the {self.name!r} schedule counts epochs as written"
            )

    def scaled(self, epochs: int) -> tuple[float, float]:
        """(warm-up, decay interval) in epochs of a run of ``epochs``: as written, or scaled from
        ``reference_epochs`` to ``epochs``."""
        scale = 1.0 if self.reference_epochs is None else epochs / self.reference_epochs
        return self.warmup_epochs * scale, self.decay_epochs * scale


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
        warmup, decay_epochs = self.spec.scaled(self.epochs)
        at = epoch + batch / batches  # fractional epochs since the run's first step
        if at < warmup:
            # The k-th batch (1-based) of the warm-up gets k / (its batches) of the way up: the
            # official ramp step / warmup_steps, one step on, so that no batch trains at rate 0.
            progress = min(1.0, (at + 1 / batches) / warmup)
            start = self.spec.warmup_from
            self._set(lambda base: base * (start + (1 - start) * progress))
            return
        if isinstance(self.main, lr_scheduler.CosineAnnealingWarmRestarts):
            self.main.step(at - warmup)
        elif self.spec.name == "exponential":
            # tf.train.exponential_decay of the global step, as the official code builds it: counted
            # from step 0, warm-up included. A closed form, so the schedule holds no state to resume.
            steps = at / decay_epochs
            # (1e-9: a step that lands on a boundary, 7.2 / 2.4, is not floored to the one before)
            decays = math.floor(steps + 1e-9) if self.spec.staircase else steps
            factor = self.spec.decay_factor**decays
            self._set(lambda base: base * factor)

    def _set(self, rate) -> None:
        for group, base in zip(self.optimiser.param_groups, self.base_lrs, strict=True):
            group["lr"] = rate(base)

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
