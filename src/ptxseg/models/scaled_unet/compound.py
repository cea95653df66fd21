"""Compound scaling (EfficientNet, Tan & Le 2019) of the scaled U-Net: the rounding rules and the grid.

EfficientNet scales a base network ("B0") by depth ``d = alpha**phi``, width ``w = beta**phi``
and input resolution ``r = gamma**phi``. A convolutional network's FLOPs grow roughly as
``d * w**2 * r**2`` (the nominal factor); the rounding rules make the built network differ from
it: depths (blocks per stage) are rounded *up*, widths (channels) to a multiple of 8
(``round_filters``), and sides to a multiple of the U-Net's output stride. So the grid search
(`screen`) rounds every grid point to its network (`Network`), trains each distinct network once
(grid points that round to the same one are merged under the first), and keeps those whose
*measured* FLOPs are within the tolerance of ``target`` times B0's: the measurement is a
function the caller passes (`ptxseg.models.scaled_unet.search.network_flops`), so these rules
import no torch.

Plain Python: the network's blocks (`ptxseg.models.scaled_unet.model`) are built from the stage
depths and widths computed here, and the search's summary is `ptxseg.report.scaling`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# EfficientNet's published grid-search result (Tan & Le 2019, section 4): 1.2 * 1.1**2 * 1.15**2.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
TARGET = 2.0  # FLOPs factor per step of phi
TOLERANCE = 0.1  # relative
CHANNEL_DIVISOR = 8
RESOLUTION_MULTIPLE = 32  # the scaled U-Net's output stride (model.SIZE_MULTIPLE)
AXES = ("alpha", "beta", "gamma")
_EPS = 1e-9  # float slack: 2 * 1.0000000000000002 must still round up to 2

# B0's stages, at output strides 2, 4, 8, 16 and 32. Channels double as the side halves, so a
# block costs the same FLOPs in every stage. The depths are EfficientNet-B0's stage repeats
# (1, 2, 2, 3, 3, 4, 1) summed by output stride: with 5 and 6 blocks in the deep stages every
# step of 0.1 in alpha from 1.0 to 1.4 adds a block somewhere (ceil(6 * 1.1) = 7, ceil(6 * 1.2)
# = 8, ceil(5 * 1.3) = 7, ceil(6 * 1.4) = 9), where (1, 1, 2, 2, 2) gave all four the same net.
BASE_WIDTHS = (16, 32, 64, 128, 256)
BASE_DEPTHS = (1, 2, 2, 6, 5)


# ----------------------------------------------------------------------------- rounding rules


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_phi(phi: int) -> int:
    """``phi`` itself when it is a non-negative integer (a step of the compound scaling)."""
    if isinstance(phi, bool) or not isinstance(phi, int) or phi < 0:
        raise ValueError(f"phi must be a non-negative integer, got {phi!r}")
    return phi


def round_filters(channels: float, width: float = 1.0, divisor: int = CHANNEL_DIVISOR) -> int:
    """EfficientNet's ``round_filters``: ``channels * width`` to the nearest multiple of
    ``divisor``, never below ``divisor`` and never more than 10% below the unrounded value."""
    scaled = _positive("channels", channels) * _positive("width", width)
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """EfficientNet's ``round_repeats``: ``ceil(repeats * depth)`` blocks (at least one)."""
    scaled = _positive("repeats", repeats) * _positive("depth", depth)
    return max(1, math.ceil(scaled - _EPS))


def scaled_widths(width: float = 1.0, base: Sequence[int] = BASE_WIDTHS) -> tuple[int, ...]:
    return tuple(round_filters(c, width) for c in base)


def scaled_depths(depth: float = 1.0, base: Sequence[int] = BASE_DEPTHS) -> tuple[int, ...]:
    return tuple(round_repeats(n, depth) for n in base)


def scaled_resolution(
    base_resolution: int, gamma: float, phi: int = 1, multiple: int = RESOLUTION_MULTIPLE
) -> int:
    """``base_resolution * gamma**phi`` to the nearest multiple of ``multiple`` (at least one)."""
    value = _positive("base_resolution", base_resolution) * _positive("gamma", gamma) ** check_phi(
        phi
    )
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)


def compound_multipliers(alpha: float, beta: float, phi: int) -> tuple[float, float]:
    """(depth, width) multipliers ``(alpha**phi, beta**phi)``: the model builder's options."""
    return _positive("alpha", alpha) ** check_phi(phi), _positive("beta", beta) ** phi


def compound(
    alpha: float,
    beta: float,
    gamma: float,
    phi: int,
    base_resolution: int,
    multiple: int = RESOLUTION_MULTIPLE,
) -> tuple[float, float, int]:
    """(depth, width, resolution) of step ``phi``: build ``scaled_unet`` with ``depth`` and
    ``width`` and train it on ``resolution`` x ``resolution`` inputs."""
    depth, width = compound_multipliers(alpha, beta, phi)
    return depth, width, scaled_resolution(base_resolution, gamma, phi, multiple)


@dataclass(frozen=True)
class Network:
    """What a step of the compound scaling builds: blocks and channels per stage, input side."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    resolution: int

    @property
    def description(self) -> tuple[str, str, int]:
        """(depths, widths, resolution) as a table writes them: ``1-2-2-6-5``."""
        return "-".join(map(str, self.depths)), "-".join(map(str, self.widths)), self.resolution


def network(alpha: float, beta: float, gamma: float, phi: int, base_resolution: int) -> Network:
    """The network of step ``phi`` of (alpha, beta, gamma), rounded as the builder rounds it."""
    depth, width, resolution = compound(alpha, beta, gamma, phi, base_resolution)
    return Network(scaled_depths(depth), scaled_widths(width), resolution)


# ----------------------------------------------------------------------------- the grid


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """The FLOPs growth per step of phi that the scaling law predicts: alpha * beta² * gamma²."""
    return alpha * beta**2 * gamma**2


def candidate_name(alpha: float, beta: float, gamma: float) -> str:
    return f"a{alpha:.2f}_b{beta:.2f}_g{gamma:.2f}"


BASELINE = "b0"  # the unscaled base every candidate is scaled from
# Every name `candidate_name` writes, and B0's: the Snakefile constrains its wildcard with it
# without screening the grid (which measures FLOPs) at every DAG build.
NAME_PATTERN = r"b0|a\d+\.\d\d_b\d+\.\d\d_g\d+\.\d\d"


@dataclass(frozen=True)
class GridPoint:
    """A point (alpha, beta, gamma) of the search grid."""

    alpha: float
    beta: float
    gamma: float

    @property
    def name(self) -> str:
        return candidate_name(self.alpha, self.beta, self.gamma)

    @property
    def product(self) -> float:
        return flops_factor(self.alpha, self.beta, self.gamma)


@dataclass(frozen=True)
class Candidate(GridPoint):
    """A grid point whose network meets the FLOPs constraint: its measured FLOPs over B0's
    (``flops_ratio``) and the other grid points that round to the same network (``merged``)."""

    flops_ratio: float = field(default=math.nan, compare=False)
    merged: tuple[str, ...] = field(default=(), compare=False)

    def scaled(self, phi: int, base_resolution: int) -> tuple[float, float, int]:
        """(depth, width, resolution) of this candidate at step ``phi``."""
        return compound(self.alpha, self.beta, self.gamma, phi, base_resolution)

    def network(self, phi: int, base_resolution: int) -> Network:
        return network(self.alpha, self.beta, self.gamma, phi, base_resolution)


@dataclass(frozen=True)
class Excluded(GridPoint):
    """A grid point left out of the search, with the reason."""

    reason: str


def _grid_axes(grid: Mapping[str, Any]) -> list[list[float]]:
    if not isinstance(grid, Mapping):
        raise ValueError(f"grid must be a mapping with keys {', '.join(AXES)}, got {grid!r}")
    unknown = sorted(set(grid) - set(AXES))
    missing = [a for a in AXES if a not in grid]
    if unknown or missing:
        raise ValueError(
            f"grid must have exactly the keys {', '.join(AXES)}; "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unknown {', '.join(map(str, unknown))}" if unknown else "",
                )
                if part
            )
        )
    axes = []
    for axis in AXES:
        values = grid[axis]
        values = [values] if isinstance(values, int | float) else list(values)
        if not values:
            raise ValueError(f"grid.{axis} is empty")
        axes.append(sorted({_positive(f"grid.{axis}[{i}]", v) for i, v in enumerate(values)}))
    return axes


def _grid_points(grid: Mapping[str, Any]) -> list[GridPoint]:
    points: dict[str, GridPoint] = {}
    for alpha, beta, gamma in itertools.product(*_grid_axes(grid)):
        point = GridPoint(alpha, beta, gamma)
        if point.name in points:
            raise ValueError(
                f"grid points {_multipliers(points[point.name])} and {(alpha, beta, gamma)} share the "
                f"name {point.name!r}; use values that differ in the first two decimals"
            )
        points[point.name] = point
    return list(points.values())


def _multipliers(point: GridPoint) -> tuple[float, float, float]:
    return point.alpha, point.beta, point.gamma


def _check_window(target: float, tolerance: float) -> tuple[float, float]:
    target = _positive("target", target)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise ValueError(f"tolerance must be a number in [0, 1), got {tolerance!r}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    return target * (1 - tolerance), target * (1 + tolerance)


def screen(
    grid: Mapping[str, Any],
    base_resolution: int,
    flops: Callable[[Network], float],
    target: float = TARGET,
    tolerance: float = TOLERANCE,
) -> tuple[list[Candidate], list[Excluded]]:
    """Split the grid's Cartesian product into candidates and excluded points (grid order).

    Every point is rounded to its network at phi = 1 (`network`); points that give the same
    network are one candidate, the first in grid order (the smallest multipliers), which lists
    the others in ``merged`` (they are excluded as "same network as ..."). A candidate has alpha,
    beta, gamma >= 1 (scaling up never shrinks a dimension) and its network's FLOPs, as
    ``flops`` measures them, within ``tolerance * target`` of ``target`` times B0's: the rounding
    rules move the built network's FLOPs far from the nominal ``alpha * beta**2 * gamma**2``
    (the points of configs/full.yaml's grid with a nominal factor within 10 % of 2 measure 1.8
    to 3.0 times B0).
    """
    low, high = _check_window(target, tolerance)
    points = _grid_points(grid)
    base = flops(network(1.0, 1.0, 1.0, 0, base_resolution))
    groups: dict[Network, list[GridPoint]] = {}
    left: list[Excluded] = []
    for point in points:
        below = [a for a, v in zip(AXES, _multipliers(point), strict=True) if v < 1]
        if below:
            left.append(Excluded(*_multipliers(point), f"{', '.join(below)} < 1"))
        else:
            groups.setdefault(network(*_multipliers(point), 1, base_resolution), []).append(point)
    kept: list[Candidate] = []
    for net, (first, *others) in groups.items():
        ratio = flops(net) / base
        if low - _EPS <= ratio <= high + _EPS:
            kept.append(Candidate(*_multipliers(first), ratio, tuple(p.name for p in others)))
            left += [Excluded(*_multipliers(p), f"same network as {first.name}") for p in others]
            continue
        reason = (
            f"measured FLOPs {ratio:.3f} x B0 outside {target:g} ± {tolerance:.0%} "
            f"[{low:.3f}, {high:.3f}]"
        )
        for point in (first, *others):
            nominal = f" (nominal alpha*beta^2*gamma^2 = {point.product:.3f})"
            left.append(Excluded(*_multipliers(point), reason + nominal))
    order = {p.name: k for k, p in enumerate(points)}
    return kept, sorted(left, key=lambda e: order[e.name])


def find(name: str, kept: Sequence[Candidate]) -> tuple[Candidate, int]:
    """(candidate, phi) of a job's name: ``b0`` is the unscaled base at phi 0, any other name
    one of ``kept`` (`screen`'s candidates) at phi 1."""
    if name == BASELINE:
        return Candidate(1.0, 1.0, 1.0, 1.0), 0
    for candidate in kept:
        if candidate.name == name:
            return candidate, 1
    raise ValueError(
        f"{name!r} is not a candidate of the scaling grid (candidates: "
        f"{', '.join(c.name for c in kept) or 'none'})"
    )


def source_size(resolution: int, repack_sizes: Sequence[int]) -> int:
    """The repacked size a candidate reads (and resizes to its resolution on reading): the
    smallest at least as large, else the largest."""
    return min([s for s in repack_sizes if s >= resolution] or [max(repack_sizes)])
