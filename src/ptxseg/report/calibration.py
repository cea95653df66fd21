"""The reliability diagram of the gate's probability, before and after calibration.

The bins come from ``ptxseg.scoring.calibration.reliability_table``; the figure is drawn on a
headless Agg canvas (no pyplot state) and written through a temporary file, as the report's other
file-writing plot (``figures.plot_score_vs_flops``).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ptxseg.io.atomic import atomic_open
from ptxseg.report.figures import _check_png

COLUMNS = ("lower", "upper", "count", "mean_probability", "observed_frequency")


def reliability_diagram(
    tables: dict[str, pd.DataFrame], eces: dict[str, float], path: str | os.PathLike
) -> str | os.PathLike:
    """Observed frequency against mean probability per bin, one line per table (e.g. "before",
    "after"), each bin's marker sized by its count, the diagonal for perfect calibration, the ECE
    in the legend; under it, each table's count per bin (log scale). Written as a PNG through a
    temporary file, so a killed job leaves no partial file. Returns ``path``.
    """
    if not tables:
        raise ValueError("nothing to plot: no reliability tables")
    for name, table in tables.items():
        missing = [column for column in COLUMNS if column not in table]
        if missing:
            raise ValueError(f"reliability table {name!r}: missing column(s) {missing}")
        if name not in eces:
            raise ValueError(f"eces: no ECE for table {name!r}")
    largest = max(int(table["count"].max()) for table in tables.values())
    fig = Figure(figsize=(6, 7), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)  # headless: no pyplot, no global backend
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", c="0.5", lw=1, label="perfect calibration")
    for i, (name, table) in enumerate(tables.items()):
        filled = table[table["count"] > 0]
        colour = f"C{i}"
        top.plot(
            filled["mean_probability"],
            filled["observed_frequency"],
            "-",
            c=colour,
            lw=1.2,
            label=f"{name} (ECE {eces[name]:.3f})",
        )
        top.scatter(
            filled["mean_probability"],
            filled["observed_frequency"],
            s=15 + 185 * filled["count"].to_numpy(float) / max(largest, 1),
            c=colour,
            alpha=0.7,
            edgecolors="white",
            zorder=3,
        )
        lower, upper = table["lower"].to_numpy(float), table["upper"].to_numpy(float)
        width = (upper - lower) / len(tables)
        bottom.bar(
            lower + i * width,
            table["count"].to_numpy(float),
            width=width,
            align="edge",
            color=colour,
            alpha=0.8,
            label=name,
        )
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency (non-empty mask)")
    top.set_title("Gate probability: reliability (marker area: images in the bin)")
    top.grid(True, alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_yscale("log")
    bottom.set(xlabel="predicted probability (points: a bin's mean)", ylabel="images (log)")
    bottom.set_xticks(np.linspace(0, 1, 11))
    bottom.grid(True, alpha=0.3)
    with atomic_open(path, "wb", validate=_check_png) as handle:
        fig.savefig(handle, format="png")
    return path
