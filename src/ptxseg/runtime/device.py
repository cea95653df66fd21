"""Which device a job runs on, and the seeds that make its runs repeat."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from ptxseg.runtime.gpu import hold_gpu

log = logging.getLogger(__name__)


def seed_everything(seed: int, epoch: int = -1) -> int:
    """Seed Python, NumPy and torch from (seed, epoch); returns the derived seed."""
    derived = int(np.random.SeedSequence([seed, epoch + 1]).generate_state(1)[0])
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)
    return derived


def cuda_visible() -> bool:
    """Whether this process can use a CUDA GPU; where the machine has several and no scheduler
    chose one, a free one is claimed first (gpu.py), before CUDA starts."""
    index = hold_gpu()
    if index is not None:
        log.info("claimed GPU %d of this machine (CUDA_VISIBLE_DEVICES=%d)", index, index)
    return torch.cuda.is_available()


def no_gpu_reason() -> str:
    """Why no GPU is visible, for messages: the variable that hides them, where set."""
    return f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}"


def pick_device(requested: str = "auto") -> torch.device:
    """The GPU when there is one (SLURM sets CUDA_VISIBLE_DEVICES); else the CPU, with a warning if a GPU was asked for."""
    if requested not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device {requested!r}; expected auto, cuda or cpu")
    if requested != "cpu" and cuda_visible():
        # Said in every job's log: a GPU run's logs show where each job ran.
        log.info("device: cuda (%s)", torch.cuda.get_device_name())
        return torch.device("cuda")
    if requested == "cuda":
        # Training and prediction both come here: the message names neither.
        log.warning(
            "a GPU was asked for but none is visible (%s): running on the CPU", no_gpu_reason()
        )
    return torch.device("cpu")
