"""The compound-scaling search on the shipped configs' grids: distinct networks, measured FLOPs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ptxseg import config as cfg
from ptxseg.models.flops import flops_per_image, parameter_count
from ptxseg.models.grey import GreyInput
from ptxseg.models.scaled_unet.compound import network
from ptxseg.models.scaled_unet.model import SIZE_MULTIPLE, ScaledUNet
from ptxseg.models.scaled_unet.search import measure, screen_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("configs/full.yaml", "configs/tiny.yaml", "config.yaml")


def _scaling(path: str) -> dict:
    return cfg.load(ROOT / path, cfg.load_schema())["scaling"]


@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_grids_give_distinct_candidates_within_the_measured_flops_window(path):
    scaling = _scaling(path)
    kept, left = screen_config(scaling)
    grid = scaling["grid"]
    assert len(kept) + len(left) == len(list(itertools.product(*grid.values())))
    assert kept, f"{path}: no candidate survives the screen"
    base = scaling["base_resolution"]
    networks = [c.network(1, base) for c in kept]
    assert len(set(networks)) == len(kept)  # one job per network
    assert network(1, 1, 1, 0, base) not in networks  # and none is B0 again
    b0 = measure(network(1, 1, 1, 0, base))[1]
    target, tolerance = scaling["target"], scaling["tolerance"]
    for candidate, net in zip(kept, networks, strict=True):
        assert candidate.flops_ratio == measure(net)[1] / b0
        assert abs(candidate.flops_ratio - target) <= tolerance * target + 1e-9, candidate.name
    # every grid point is a candidate, merged into one, or left out with its reason
    merged = {name for c in kept for name in c.merged}
    assert merged == {e.name for e in left if e.reason.startswith("same network as")}


def test_the_full_grid_searches_within_ten_percent_of_twice_b0():
    """The paper's constraint, alpha * beta^2 * gamma^2 ~ 2, held by the networks themselves."""
    scaling = _scaling("configs/full.yaml")
    assert (scaling["target"], scaling["tolerance"]) == (2.0, 0.1)
    kept, _ = screen_config(scaling)
    assert len(kept) >= 10
    assert all(1.8 <= c.flops_ratio <= 2.2 for c in kept)
    # every step of 0.1 in alpha changes the depths
    depths = {c.alpha: c.network(1, 256).depths for c in kept}
    assert len(set(depths.values())) == len(depths) == 5


def test_measure_scales_the_count_at_32_px_exactly_by_area():
    net = network(1.3, 1.15, 1.2, 1, 256)
    model = GreyInput(ScaledUNet(1, net.widths, net.depths), size_multiple=SIZE_MULTIPLE)
    assert measure(net) == (parameter_count(model), flops_per_image(model, net.resolution))


def test_b1_and_b2_of_the_papers_coefficients_are_distinct_and_grow():
    """alpha 1.2, beta 1.1, gamma 1.15 (Tan & Le 2019): depth, width and side grow each step,
    and so do the measured FLOPs, by about the factor the search held B1 to."""
    b0, b1, b2 = (network(1.2, 1.1, 1.15, phi, 256) for phi in (0, 1, 2))
    assert b0.depths == (1, 2, 2, 6, 5) and b1.depths == (2, 3, 3, 8, 6)
    assert b2.depths == (2, 3, 3, 9, 8)
    assert b1.widths == (16, 32, 72, 144, 280) and b2.widths == (24, 40, 80, 152, 312)
    assert (b0.resolution, b1.resolution, b2.resolution) == (256, 288, 352)
    for small, large in ((b0, b1), (b1, b2)):
        grown = zip(small.depths + small.widths, large.depths + large.widths, strict=True)
        assert all(a <= b for a, b in grown)
        assert small.depths != large.depths and small.widths != large.widths
        assert small.resolution < large.resolution
    flops = [measure(n)[1] for n in (b0, b1, b2)]
    assert 1.8 <= flops[1] / flops[0] <= 2.2
    assert 1.8 <= flops[2] / flops[1] <= 2.4


@pytest.mark.parametrize("path", SHIPPED)
def test_b1_and_b2_of_every_candidate_are_distinct_and_grow(path):
    scaling = _scaling(path)
    base = scaling["base_resolution"]
    for candidate in screen_config(scaling)[0]:
        b0, b1, b2 = (candidate.network(phi, base) for phi in (0, 1, 2))
        assert len({b0, b1, b2}) == 3, candidate.name
        flops = [measure(n)[1] for n in (b0, b1, b2)]
        assert flops[0] < flops[1] < flops[2], candidate.name
