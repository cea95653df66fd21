"""The compound-scaling search's grid screened by the FLOPs its networks measure (needs torch).

`compound.screen` rounds the grid to networks; this module measures them with torch's
FlopCounterMode (`ptxseg.models.flops`) and binds the config's ``scaling`` section to it: the
Snakefile (only when a scaling target is planned), the candidate jobs and the summary ask here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch

from ptxseg.models.flops import flops_per_image, parameter_count
from ptxseg.models.grey import GreyInput
from ptxseg.models.scaled_unet.compound import Candidate, Excluded, Network, find, screen
from ptxseg.models.scaled_unet.model import MIN_SIZE, SIZE_MULTIPLE, ScaledUNet


@functools.cache
def _measured_at_min_size(depths: tuple[int, ...], widths: tuple[int, ...]) -> tuple[int, int]:
    # On the meta device: shapes only, so no weights are drawn and no arithmetic is done.
    with torch.device("meta"):
        model = GreyInput(ScaledUNet(1, widths, depths), size_multiple=SIZE_MULTIPLE)
    return parameter_count(model), flops_per_image(model, MIN_SIZE)


def measure(network: Network) -> tuple[int, int]:
    """(parameters, forward FLOPs per grey image) of the scaled U-Net ``network`` (one class).

    Counted once per (depths, widths) at the smallest side, 32, and scaled by the area: at a side
    that is a multiple of the output stride 32 every convolution's output, at every stride, has
    exactly (side / 32)**2 times the pixels, and the counter counts nothing else (a test checks
    the product against a count at the full side).
    """
    params, flops = _measured_at_min_size(network.depths, network.widths)
    return params, flops * (network.resolution // MIN_SIZE) ** 2


def network_flops(network: Network) -> int:
    return measure(network)[1]


def screen_config(scaling: Mapping[str, Any]) -> tuple[list[Candidate], list[Excluded]]:
    """`compound.screen` of the config's ``scaling`` section with measured FLOPs."""
    return screen(
        scaling["grid"],
        scaling["base_resolution"],
        network_flops,
        scaling["target"],
        scaling["tolerance"],
    )


def find_candidate(name: str, scaling: Mapping[str, Any]) -> tuple[Candidate, int]:
    """(candidate, phi) of a job's name in the config's ``scaling`` section (``b0``: phi 0)."""
    return find(name, screen_config(scaling)[0])
