"""Checkpoints: the training state for resuming, and exported models; all writes atomic.

Only tensors and plain Python values go in, so every file loads with ``weights_only=True``:
a checkpoint from elsewhere cannot run code when it is read.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ptxseg.io.atomic import atomic_open
from ptxseg.models.weights import CheckpointError

__all__ = ["CheckpointError", "export_model", "load", "model_payload", "remove", "save"]

log = logging.getLogger(__name__)


def save(path: str | os.PathLike, payload: dict) -> None:
    """``torch.save`` to a temporary file, then rename: a killed job leaves the previous file."""
    with atomic_open(path, "wb") as handle:
        torch.save(payload, handle)


def load(path: str | os.PathLike, mmap: bool = False) -> dict:
    """The payload of ``path`` (tensors and plain values only); `CheckpointError` (the models'
    one, whichever layer reads the file) when it cannot be loaded safely. ``mmap``: the tensors
    stay in the file's pages, read when used (a model that only predicts needs no copy)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as error:  # a pickle payload, a damaged file
        raise CheckpointError(
            f"{path}: cannot be loaded safely ({type(error).__name__}: {error})"
        ) from error


def model_payload(model: torch.nn.Module, meta: dict) -> dict:
    """What a model file holds: a copy of the state dict (training goes on changing the model's own
    tensors) under "model" and plain metadata (architecture, epoch, metrics) under "meta"."""
    state = {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}
    return {"model": state, "meta": meta}


def export_model(path: str | os.PathLike, model: torch.nn.Module, meta: dict) -> None:
    save(path, model_payload(model, meta))


def remove(path: str | os.PathLike) -> None:
    Path(path).unlink(missing_ok=True)
