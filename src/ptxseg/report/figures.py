"""The report's plots: matplotlib on the headless Agg backend, each returned as PNG bytes (the
scaling search's score-against-FLOPs plot is written to its own file)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ptxseg.io.atomic import atomic_open

plt.rcParams.update({"figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})


def to_png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def outlined(
    image: np.ndarray, masks: Sequence[tuple[np.ndarray, tuple[int, int, int]]]
) -> np.ndarray:
    """A grey image in RGB with each mask's outline drawn in its colour."""
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    for mask, colour in masks:
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(rgb, contours, -1, colour, max(1, image.shape[0] // 128))
    return rgb


def image_grid(
    tiles: Sequence[np.ndarray], titles: Sequence[str], columns: int = 4, title: str = ""
) -> bytes:
    rows = max(1, int(np.ceil(len(tiles) / columns)))
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, tile, text in zip(axes.ravel(), tiles, titles, strict=False):
        axis.imshow(tile, cmap="gray" if tile.ndim == 2 else None, vmin=0, vmax=255)
        axis.set_title(text, fontsize=8)
    if title:
        figure.suptitle(title)
    return to_png(figure)


def training_curves(
    histories: dict[str, pd.DataFrame], metric: str, title: str, label: str | None = None
) -> bytes:
    """Loss, the monitored metric (named ``label``) and the learning rate per epoch, one line per
    fold; snapshots marked."""
    label = label or metric
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for label, table in histories.items():
        for axis, column, style in (
            (axes[0], "train_loss", "-"),
            (axes[0], "val_loss", "--"),
            (axes[1], metric, "-"),
            (axes[2], "lr", "-"),
        ):
            if column in table:
                (line,) = axis.plot(
                    table["epoch"],
                    table[column],
                    style,
                    # one epoch is one point: a line through it draws nothing
                    marker="o" if len(table) == 1 else None,
                    label=f"{label} {column}" if axis is axes[0] else label,
                )
                if "snapshot" in table and column in (metric, "lr"):
                    marks = table[table["snapshot"] == 1]
                    axis.plot(marks["epoch"], marks[column], "o", color=line.get_color())
    axes[0].set(title="loss (solid: train, dashed: held-out)", xlabel="epoch", ylabel="loss")
    axes[1].set(title=f"held-out {label} (dots: snapshots)", xlabel="epoch", ylabel=label)
    axes[2].set(title="learning rate (last batch)", xlabel="epoch", ylabel="learning rate")
    axes[2].set_yscale("log")
    axes[1].legend(fontsize=7)
    figure.suptitle(title)
    return to_png(figure)


def score_bars(
    labels: Sequence[str], scores: Sequence[float], baseline: float | None, title: str, ylabel: str
) -> bytes:
    figure, axis = plt.subplots(figsize=(max(5, 0.6 * len(labels) + 2), 3.5))
    bars = axis.bar(range(len(labels)), scores, color="#4878a8")
    axis.bar_label(bars, fmt="%.3f", fontsize=7)
    if baseline is not None:
        axis.axhline(
            baseline, color="#c44", linestyle="--", label=f"all-empty baseline {baseline:.3f}"
        )
        axis.legend(loc="lower right")
    axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    axis.set(title=title, ylabel=ylabel)
    return to_png(figure)


def weight_bars(weights: dict[str, float], title: str) -> bytes:
    figure, axis = plt.subplots(figsize=(max(4, 0.8 * len(weights) + 2), 3))
    bars = axis.bar(list(weights), list(weights.values()), color="#5a9")
    axis.bar_label(bars, fmt="%.2f")
    axis.set(title=title, ylabel="weight (sum 1)", ylim=(0, 1.1))
    return to_png(figure)


def heatmap(
    table: pd.DataFrame,
    rows: str,
    columns: str,
    title: str,
    row_label: str,
    column_label: str,
    chosen: tuple[float, float] | None = None,
) -> bytes:
    """Mean score over two threshold axes (the other two fixed where the table says)."""
    pivot = table.pivot_table(index=rows, columns=columns, values="score", aggfunc="max")
    figure, axis = plt.subplots(figsize=(1.0 * pivot.shape[1] + 2.5, 0.5 * pivot.shape[0] + 1.8))
    image = axis.imshow(pivot.to_numpy(), cmap="viridis", aspect="auto", origin="lower")
    axis.set_xticks(range(pivot.shape[1]), [f"{c:g}" for c in pivot.columns])
    axis.set_yticks(range(pivot.shape[0]), [f"{r:g}" for r in pivot.index])
    axis.set(title=title, xlabel=column_label, ylabel=row_label)
    axis.grid(False)
    for i in range(pivot.shape[0]):
        for j in range(pivot.shape[1]):
            axis.text(
                j, i, f"{pivot.iat[i, j]:.3f}", ha="center", va="center", fontsize=7, color="white"
            )
    if chosen is not None and chosen[0] in pivot.index and chosen[1] in pivot.columns:
        axis.add_patch(
            plt.Rectangle(
                (
                    list(pivot.columns).index(chosen[1]) - 0.5,
                    list(pivot.index).index(chosen[0]) - 0.5,
                ),
                1,
                1,
                fill=False,
                edgecolor="red",
                linewidth=2,
            )
        )
    figure.colorbar(image, ax=axis, label="OOF competition score")
    return to_png(figure)


def runtime_bars(table: pd.DataFrame) -> bytes:
    """Total and mean seconds per rule (Snakemake's benchmark files)."""
    figure, axis = plt.subplots(figsize=(8, 0.32 * len(table) + 1.2))
    axis.barh(table.index, table["total_s"], color="#888", label="total over jobs")
    axis.barh(table.index, table["mean_s"], color="#4878a8", label="mean per job")
    axis.set(title="run time per rule", xlabel="seconds (wall clock)")
    axis.legend()
    return to_png(figure)


def finding_bars(counts: dict[str, int], title: str) -> bytes:
    figure, axis = plt.subplots(figsize=(8, 3))
    axis.bar(list(counts), list(counts.values()), color="#a86")
    axis.set_xticks(range(len(counts)), list(counts), rotation=40, ha="right")
    axis.set(title=title, ylabel="images")
    return to_png(figure)


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
