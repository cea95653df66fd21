"""Compound scaling (EfficientNet, Tan & Le 2019) of the scaled U-Net: rules, grid, measurements.

EfficientNet scales a base network ("B0") by depth ``d = alpha**phi``, width ``w = beta**phi``
and input resolution ``r = gamma**phi``. A convolutional network's FLOPs grow as
``d * w**2 * r**2``, so the grid search keeps the candidates with ``alpha * beta**2 * gamma**2``
close to 2 (FLOPs roughly doubling per step of ``phi``), trains each at ``phi = 1``, and scales
the best one up to B1, B2, ... The rounding rules are EfficientNet's: depths (blocks per stage)
are rounded *up*, widths (channels) to a multiple of 8 (``round_filters``), and sides here to a
multiple of the U-Net's output stride.

The rules and the grid are plain Python, importable without torch (a Snakefile can enumerate
the grid's jobs at DAG build); torch, pandas and matplotlib are imported by the functions that
need them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os

    import pandas as pd
    from torch import nn

# EfficientNet's published grid-search result (Tan & Le 2019, section 4): 1.2 * 1.1**2 * 1.15**2.
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
TARGET = 2.0  # FLOPs factor per step of phi
TOLERANCE = 0.1  # relative
CHANNEL_DIVISOR = 8
RESOLUTION_MULTIPLE = 32  # the scaled U-Net's output stride (scaled_unet.SIZE_MULTIPLE)
AXES = ("alpha", "beta", "gamma")
COLUMNS = ("alpha", "beta", "gamma", "phi", "params", "flops", "oof_score", "train_seconds")
# Kept where the rows have them: the score on the candidate's own maps, and where oof_score was taken.
OPTIONAL_COLUMNS = ("oof_score_at_resolution", "scored_at")
_EPS = 1e-9  # float slack: 2 * 1.0000000000000002 must still round up to 2


# ----------------------------------------------------------------------------- rounding rules


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _phi(phi: int) -> int:
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
    value = _positive("base_resolution", base_resolution) * _positive("gamma", gamma) ** _phi(phi)
    return max(multiple, math.floor(value / multiple + 0.5) * multiple)


def compound_multipliers(alpha: float, beta: float, phi: int) -> tuple[float, float]:
    """(depth, width) multipliers ``(alpha**phi, beta**phi)``: the model builder's options."""
    return _positive("alpha", alpha) ** _phi(phi), _positive("beta", beta) ** phi


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


# ----------------------------------------------------------------------------- measurements


def input_channels(model: nn.Module) -> int:
    """1 for the registry's grey-input wrapper; else the first convolution's input channels."""
    from torch import nn

    from ptxseg.models.grey import GreyInput

    if isinstance(model, GreyInput):
        return 1
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return 3


def flops_per_image(
    model: nn.Module, size: int | Sequence[int], channels: int | None = None
) -> int:
    """Forward FLOPs (2 per multiply-add) of one ``size`` x ``size`` image, in eval mode.

    ``channels`` defaults to what the model takes: 1 behind `GreyInput` (the registry's models),
    else its first convolution's input channels. Convolutions and matrix products are counted
    (torch's FlopCounterMode); normalisation, activations and resampling are not.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if channels is None:
        channels = input_channels(model)
    reference = next(model.parameters(), None)
    kwargs = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
    x = torch.zeros(1, channels, height, width, **kwargs)
    training = model.training
    model.eval()  # BatchNorm statistics stay as they are
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(training)
    return int(counter.get_total_flops())


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def measure_scaled_unet(depth: float, width: float, resolution: int) -> tuple[int, int]:
    """(parameters, forward FLOPs per grey image) of ``scaled_unet`` with one output class."""
    from ptxseg.models.grey import GreyInput
    from ptxseg.models.scaled_unet import SIZE_MULTIPLE, build_scaled_unet

    model = GreyInput(build_scaled_unet(1, depth=depth, width=width), size_multiple=SIZE_MULTIPLE)
    return parameter_count(model), flops_per_image(model, resolution)


# ----------------------------------------------------------------------------- results


def _rows_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    rows = list(rows)
    if not rows:
        raise ValueError("no result rows to summarise")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {i} is not a mapping: {row!r}")
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"row {i} lacks {', '.join(missing)} (rows need {', '.join(COLUMNS)})")
        _phi(row["phi"])
    columns = list(COLUMNS) + [c for c in OPTIONAL_COLUMNS if any(c in row for row in rows)]
    table = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
    for column in ("alpha", "beta", "gamma", "oof_score", "train_seconds"):
        table[column] = table[column].astype(float)
    for column in ("phi", "params", "flops"):
        table[column] = table[column].astype("int64")
    return table


def select_best(table: pd.DataFrame) -> Candidate:
    """The phi = 1 candidate with the highest OOF score (ties: fewer FLOPs, then the name)."""
    scored = table[(table["phi"] == 1) & table["oof_score"].notna()]
    if scored.empty:
        raise ValueError("no phi = 1 candidate has an OOF score; train the grid first")
    names = [candidate_name(*v) for v in scored[list(AXES)].itertuples(index=False)]
    order = scored.assign(_name=names).sort_values(
        ["oof_score", "flops", "_name"], ascending=[False, True, True], kind="stable"
    )
    best = order.iloc[0]
    return Candidate(float(best["alpha"]), float(best["beta"]), float(best["gamma"]))


def summarise(
    rows: Iterable[Mapping[str, Any]],
    base_resolution: int,
    phis: Sequence[int] = (1, 2),
    measure: Callable[[float, float, int], tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """One table of the training results, with the best candidate scaled to B1, B2, ...

    ``rows`` are the training jobs' results (keys `COLUMNS`): B0 (phi 0; its alpha, beta, gamma
    are ignored), the grid's candidates at phi 1, and any later steps already trained. The best
    phi-1 candidate (`select_best`) is labelled B1; for each other ``phi`` in ``phis`` the row of
    the same (alpha, beta, gamma) is labelled B<phi>, or, where it has not been trained yet, is
    added with its parameters and FLOPs from ``measure(depth, width, resolution)`` (default:
    `measure_scaled_unet`), no score, and ``planned`` True.

    Columns: label ("B0", "B1", ... or "" for the other candidates), name, alpha, beta, gamma,
    phi, depth, width, resolution, product, params, flops, oof_score, train_seconds, planned.
    Sorted by phi, then FLOPs.
    """
    import pandas as pd

    table = _rows_frame(rows)
    base = table["phi"] == 0
    table.loc[base, list(AXES)] = 1.0
    table["name"] = [
        "B0" if phi == 0 else candidate_name(a, b, g)
        for a, b, g, phi in table[[*AXES, "phi"]].itertuples(index=False)
    ]
    duplicated = table.duplicated(["name", "phi"], keep=False)
    if duplicated.any():
        twice = sorted(
            {f"{n} at phi {p}" for n, p in table.loc[duplicated, ["name", "phi"]].values}
        )
        raise ValueError(f"more than one result row for {', '.join(twice)}")
    table["planned"] = False
    best = select_best(table)
    added = []
    for phi in sorted({_phi(p) for p in phis} - {0}):
        same = (table["name"] == best.name) & (table["phi"] == phi)
        if same.any():
            continue
        depth, width, resolution = best.scaled(phi, base_resolution)
        params, flops = (measure or measure_scaled_unet)(depth, width, resolution)
        added.append(
            {
                "alpha": best.alpha,
                "beta": best.beta,
                "gamma": best.gamma,
                "phi": phi,
                "params": int(params),
                "flops": int(flops),
                "oof_score": math.nan,
                "train_seconds": math.nan,
                "name": best.name,
                "planned": True,
            }
        )
    if added:
        table = pd.concat([table, pd.DataFrame(added)], ignore_index=True)
    scaled = [
        compound(a, b, g, int(phi), base_resolution)
        for a, b, g, phi in table[[*AXES, "phi"]].itertuples(index=False)
    ]
    table["depth"] = [s[0] for s in scaled]
    table["width"] = [s[1] for s in scaled]
    table["resolution"] = [s[2] for s in scaled]
    table["product"] = [flops_factor(a, b, g) for a, b, g in table[list(AXES)].values]
    steps = set(phis) | {1}
    table["label"] = [
        "B0" if phi == 0 else (f"B{phi}" if name == best.name and phi in steps else "")
        for name, phi in table[["name", "phi"]].itertuples(index=False)
    ]
    order = [
        "label",
        "name",
        *AXES,
        "phi",
        "depth",
        "width",
        "resolution",
        "product",
        "params",
        "flops",
        "oof_score",
        *[c for c in OPTIONAL_COLUMNS if c in table],
        "train_seconds",
        "planned",
    ]
    table = table[order].astype({"phi": "int64", "params": "int64", "flops": "int64"})
    return table.sort_values(["phi", "flops", "name"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- plot

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MARKERS = {"B0": "s", "B1": "^", "B2": "D"}


def _check_png(path: os.PathLike) -> None:
    with open(path, "rb") as handle:
        if handle.read(8) != _PNG_SIGNATURE:
            raise ValueError(f"{path}: not a PNG file")


def plot_score_vs_flops(table: pd.DataFrame, path: str | os.PathLike, title: str | None = None):
    """OOF score against forward GFLOPs per image, one labelled point per row; B0, B1, B2 marked.

    Rows without a score (planned, not yet trained) are drawn as dotted vertical lines at their
    FLOPs. Written as a PNG through a temporary file, so a killed job leaves no partial file.
    Returns ``path``.
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    from ptxseg.io.atomic import atomic_open

    if table.empty:
        raise ValueError("nothing to plot: the table is empty")
    labels = table["label"] if "label" in table else [""] * len(table)
    names = table["name"] if "name" in table else [""] * len(table)
    gflops = table["flops"].to_numpy(float) / 1e9
    scores = table["oof_score"].to_numpy(float)
    fig = Figure(figsize=(8, 5.5), dpi=120)
    FigureCanvasAgg(fig)  # headless: no pyplot, no global backend
    ax = fig.add_subplot()
    other = np.array([not lab for lab in labels]) & np.isfinite(scores)
    if other.any():
        ax.scatter(gflops[other], scores[other], c="0.55", s=30, label="grid candidates (phi = 1)")
    path_x, path_y = [], []
    for lab in sorted({lab for lab in labels if lab}):
        at = np.array([x == lab for x in labels])
        if np.isfinite(scores[at]).any():
            ax.scatter(
                gflops[at],
                scores[at],
                marker=_MARKERS.get(lab, "o"),
                s=70,
                zorder=3,
                label=lab,
            )
            path_x.append(float(gflops[at][0]))
            path_y.append(float(scores[at][0]))
        else:
            for x in gflops[at]:
                ax.axvline(x, ls=":", c="0.3", lw=1)
                ax.annotate(
                    f"{lab} (not trained)",
                    (x, 0.02),
                    xycoords=("data", "axes fraction"),
                    rotation=90,
                    fontsize=8,
                    ha="right",
                    va="bottom",
                )
    if len(path_x) > 1:
        ax.plot(path_x, path_y, c="0.3", lw=1, ls="--", zorder=2, label="compound scaling")
    for x, y, lab, name in zip(gflops, scores, labels, names, strict=True):
        if np.isfinite(y):
            text = f"{lab} {name}".strip() if lab != "B0" else "B0"
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 3, 4, 6, 10 rather than 3x10^0
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("forward FLOPs per image (GFLOPs, log scale)")
    ax.set_ylabel("OOF score (competition metric, higher is better)")
    ax.set_title(title or "Compound-scaled U-Net: OOF score vs forward FLOPs")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb", validate=_check_png) as handle:
        fig.savefig(handle, format="png")
    return path
