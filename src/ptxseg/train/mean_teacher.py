"""The mean teacher (Tarvainen and Valpola, 2017) on unlabelled NIH images: the second round's
alternative to pseudo-labels, as the 5th place of SIIM-ACR trained it.

The teacher is an exponential moving average of the student's weights (torch's ``AveragedModel``
with ``get_ema_multi_avg_fn``, BatchNorm statistics averaged too), updated after every optimiser
step. Each training step adds the mean squared difference between the student's and the teacher's
pixel probabilities on a batch of unlabelled images, each model seeing its own Gaussian input
noise, weighted by ``consistency_weight`` times the sigmoid ramp-up exp(-5 (1 - t)^2) over
``rampup_epochs``. The unlabelled batches follow a permutation drawn from the epoch's seed, and
the noise comes from torch's generator, which the loop seeds per epoch, so a resumed run repeats
the uninterrupted one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset

from ptxseg.data.datasets import RepackedImages
from ptxseg.models.outputs import split_logits
from ptxseg.runtime.precision import autocast
from ptxseg.train.settings import MeanTeacherSpec


def rampup(epoch: int, rampup_epochs: int) -> float:
    """The consistency weight's ramp-up factor in ``epoch`` (0-based): exp(-5 (1 - t)^2)."""
    if rampup_epochs <= 0:
        return 1.0
    t = min(1.0, epoch / rampup_epochs)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class MeanTeacher:
    """The teacher and its unlabelled batches; the loop asks it for each step's consistency loss
    and tells it after each optimiser step."""

    def __init__(
        self,
        model: nn.Module,
        unlabelled: RepackedImages,
        spec: MeanTeacherSpec,
        batch_size: int,
        num_workers: int = 0,
    ) -> None:
        if len(unlabelled) == 0:
            raise ValueError("the mean teacher needs unlabelled images; none were given")
        self.teacher = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(spec.ema_decay), use_buffers=True
        )
        # The first update copies (n_averaged 0): made now, so every later one averages.
        self.teacher.update_parameters(model)
        self.unlabelled, self.spec = unlabelled, spec
        self.batch_size, self.num_workers = min(batch_size, len(unlabelled)), num_workers
        self.weight = 0.0
        self._batches = None

    def start_epoch(self, epoch: int, seed: int) -> None:
        """The epoch's consistency weight and unlabelled order (from the epoch's seed)."""
        self.weight = self.spec.consistency_weight * rampup(epoch, self.spec.rampup_epochs)
        self.unlabelled.reseed(seed)
        order = np.random.default_rng(seed).permutation(len(self.unlabelled))
        self._order = order.tolist()
        self._batches = None

    def _next_images(self) -> torch.Tensor:
        if self._batches is not None:
            batch = next(self._batches, None)
            if batch is not None:
                return batch["image"]
        # A fresh pass over the unlabelled images, in the epoch's order (they may be fewer than
        # the labelled ones).
        loader = DataLoader(
            Subset(self.unlabelled, self._order),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            drop_last=len(self._order) > self.batch_size,
        )
        self._batches = iter(loader)
        return next(self._batches)["image"]

    def loss(self, student: nn.Module, device: torch.device, amp: bool = False) -> torch.Tensor:
        """weight x mean squared difference of the student's and the teacher's probabilities on
        the next unlabelled batch, each input with its own noise."""
        images = self._next_images().to(device, non_blocking=True)
        noise = self.spec.noise_std
        with autocast(device, amp):
            student_logits, _ = split_logits(student(images + noise * torch.randn_like(images)))
            with torch.no_grad():
                self.teacher.train(student.training)
                teacher_logits, _ = split_logits(
                    self.teacher(images + noise * torch.randn_like(images))
                )
        return self.weight * F.mse_loss(
            torch.sigmoid(student_logits.float()), torch.sigmoid(teacher_logits.float())
        )

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        self.teacher.update_parameters(student)

    def state_dict(self) -> dict:
        return self.teacher.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.teacher.load_state_dict(state)
