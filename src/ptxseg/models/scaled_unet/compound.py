"""Compound scaling (EfficientNet, Tan & Le 2019) of the scaled U-Net: the rounding rules and the grid.

EfficientNet scales a base network ("B0") by depth ``d = alpha**phi``, width ``w = beta**phi``
and input resolution ``r = gamma**phi``. A convolutional network's FLOPs grow as
``d * w**2 * r**2``, so the grid search keeps the candidates with ``alpha * beta**2 * gamma**2``
close to 2 (FLOPs roughly doubling per step of ``phi``), trains each at ``phi = 1``, and scales
the best one up to B1, B2, ... The rounding rules are EfficientNet's: depths (blocks per stage)
are rounded *up*, widths (channels) to a multiple of 8 (``round_filters``), and sides here to a
multiple of the U-Net's output stride.

Plain Python, importable without torch: the Snakefile enumerates the grid's jobs at DAG build
(`candidates`). The network is `ptxseg.models.scaled_unet.model`, its FLOPs and parameters are
counted by `ptxseg.models.flops`, and the search's summary is `ptxseg.report.scaling`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# EfficientNet's published grid-search result (Tan & Le 2019, section 4): 1.2 * 1.1**2 * 1.15**2.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
TARGET = 2.0  # FLOPs factor per step of phi
TOLERANCE = 0.1  # relative
CHANNEL_DIVISOR = 8
RESOLUTION_MULTIPLE = 32  # the scaled U-Net's output stride (model.SIZE_MULTIPLE)
AXES = ("alpha", "beta", "gamma")
_EPS = 1e-9  # float slack: 2 * 1.0000000000000002 must still round up to 2


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


# ----------------------------------------------------------------------------- the grid


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """The FLOPs growth per step of phi that the scaling law predicts: alpha * beta² * gamma²."""
    return alpha * beta**2 * gamma**2


def candidate_name(alpha: float, beta: float, gamma: float) -> str:
    return f"a{alpha:.2f}_b{beta:.2f}_g{gamma:.2f}"


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
    """A grid point that meets the FLOPs constraint."""

    def scaled(self, phi: int, base_resolution: int) -> tuple[float, float, int]:
        """(depth, width, resolution) of this candidate at step ``phi``."""
        return compound(self.alpha, self.beta, self.gamma, phi, base_resolution)


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


def screen(
    grid: Mapping[str, Any], target: float = TARGET, tolerance: float = TOLERANCE
) -> tuple[list[Candidate], list[Excluded]]:
    """Split the grid's Cartesian product into candidates and excluded points (each sorted).

    A candidate has alpha, beta, gamma >= 1 (scaling up never shrinks a dimension) and
    ``|alpha * beta**2 * gamma**2 - target| <= tolerance * target``.
    """
    target = _positive("target", target)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float):
        raise ValueError(f"tolerance must be a number in [0, 1), got {tolerance!r}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance!r}")
    low, high = target * (1 - tolerance), target * (1 + tolerance)
    kept: list[Candidate] = []
    left: list[Excluded] = []
    names: dict[str, tuple[float, ...]] = {}
    for alpha, beta, gamma in itertools.product(*_grid_axes(grid)):
        name = candidate_name(alpha, beta, gamma)
        if name in names:
            raise ValueError(
                f"grid points {names[name]} and {(alpha, beta, gamma)} share the name {name!r}; "
                f"use values that differ in the first two decimals"
            )
        names[name] = (alpha, beta, gamma)
        below = [a for a, v in zip(AXES, (alpha, beta, gamma), strict=True) if v < 1]
        product = flops_factor(alpha, beta, gamma)
        if below:
            left.append(Excluded(alpha, beta, gamma, f"{', '.join(below)} < 1"))
        elif not low - _EPS <= product <= high + _EPS:
            left.append(
                Excluded(
                    alpha,
                    beta,
                    gamma,
                    f"alpha*beta^2*gamma^2 = {product:.3f} outside {target:g} ± "
                    f"{tolerance:.0%} [{low:.3f}, {high:.3f}]",
                )
            )
        else:
            kept.append(Candidate(alpha, beta, gamma))
    return kept, left


def candidates(
    grid: Mapping[str, Any], target: float = TARGET, tolerance: float = TOLERANCE
) -> list[Candidate]:
    """The grid points that meet the constraint (see `screen`), sorted by (alpha, beta, gamma)."""
    return screen(grid, target, tolerance)[0]


def excluded(
    grid: Mapping[str, Any], target: float = TARGET, tolerance: float = TOLERANCE
) -> list[Excluded]:
    """The grid points left out, each with its reason (see `screen`)."""
    return screen(grid, target, tolerance)[1]


BASELINE = "b0"  # the unscaled base every candidate is scaled from


def candidate_multipliers(
    name: str, grid: Mapping[str, Any], target: float, tolerance: float
) -> tuple[float, float, float, int]:
    """(alpha, beta, gamma, phi) of a candidate name; ``b0`` is the unscaled base."""
    if name == BASELINE:
        return 1.0, 1.0, 1.0, 0
    for candidate in candidates(grid, target, tolerance):
        if candidate.name == name:
            return candidate.alpha, candidate.beta, candidate.gamma, 1
    raise ValueError(f"{name!r} is not a candidate of the scaling grid")


def candidate_shape(name: str, scaling: Mapping[str, Any]) -> tuple[float, float, int]:
    """(depth, width, resolution) of a candidate of the config's ``scaling`` section."""
    alpha, beta, gamma, phi = candidate_multipliers(
        name, scaling["grid"], scaling["target"], scaling["tolerance"]
    )
    return compound(alpha, beta, gamma, phi, scaling["base_resolution"])


def source_size(resolution: int, repack_sizes: Sequence[int]) -> int:
    """The repacked size a candidate reads (and resizes to its resolution on reading): the
    smallest at least as large, else the largest."""
    return min([s for s in repack_sizes if s >= resolution] or [max(repack_sizes)])
