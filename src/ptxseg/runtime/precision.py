"""Numeric precision of a forward pass."""

from __future__ import annotations

import contextlib

import torch


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on a GPU when asked; full precision on the CPU (bf16 there is slow)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
