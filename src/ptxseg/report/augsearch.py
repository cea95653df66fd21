"""The report of the RandAugment policy search: one table of the (n, m) points, the heat map, the
choice.

Every point's training job (`ptxseg.train.augsearch_job.train_point`) leaves a row.json;
`write_summary` reads them all and writes summary.csv, heatmap.png (score over n and m),
best.yaml (the best policy as a config fragment) and search.json (the choice, with a warning where
it lies on the edge of the grid); `build_augsearch_report` the search's own page.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ptxseg.grids import edge_warnings
from ptxseg.io import atomic
from ptxseg.report import figures
from ptxseg.report.build import Section, page_html

log = logging.getLogger(__name__)

COLUMNS = (
    "point",
    "n",
    "m",
    "arch",
    "fold",
    "oof_score",
    "scored_at",
    "oof_score_at_resolution",
    "size",
    "top",
    "min_area",
    "bottom",
    "train_seconds",
)


def summarise(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per point (`COLUMNS`), best first (ties: fewer operations, then lower magnitude)."""
    rows = list(rows)
    if not rows:
        raise ValueError("no result rows to summarise")
    for i, row in enumerate(rows):
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"row {i} lacks {', '.join(missing)}")
    table = pd.DataFrame([{c: row[c] for c in COLUMNS} for row in rows], columns=list(COLUMNS))
    if table["point"].duplicated().any():
        raise ValueError(
            f"more than one row for {sorted(table['point'][table['point'].duplicated()])}"
        )
    if table["scored_at"].nunique() != 1:
        log.warning("points scored at different sizes: %s", sorted(set(table["scored_at"])))
    table = table.astype({"n": "int64", "m": "int64", "oof_score": float, "train_seconds": float})
    return table.sort_values(
        ["oof_score", "n", "m"], ascending=[False, True, True], kind="stable"
    ).reset_index(drop=True)


def best_fragment(best: Mapping[str, Any], augment: dict) -> str:
    """best.yaml: a config fragment that validates as it is, the best policy as the searched
    architecture's own recipe augmentation (``segment.archs.<arch>.recipe.augment``).

    Per architecture, not ``segment.recipe.augment``: both validate, but the search tuned this
    architecture only, and a second --configfile merges into the user's entry (its weights and
    options stay), leaving the other segmenters' augmentation as it was."""
    arch = str(best["arch"])
    lines = [
        f"# The RandAugment search's best policy for {arch}: n={int(best['n'])}, m={int(best['m'])}, "
        f"OOF {float(best['oof_score']):.4f} at {best['scored_at']} (fold {int(best['fold'])}).",
        "# Add it after your config: --configfile my.yaml results/augsearch/best.yaml",
    ]
    fragment = {"segment": {"archs": {arch: {"recipe": {"augment": augment}}}}}
    return "\n".join(lines) + "\n" + yaml.safe_dump(fragment, sort_keys=False)


def write_summary(
    rows: Sequence[str | os.PathLike],
    grid: Mapping[str, Sequence[int]],
    out_csv: str | os.PathLike,
    out_png: str | os.PathLike,
    out_best: str | os.PathLike,
    out_search: str | os.PathLike,
) -> pd.DataFrame:
    """summary.csv, the heat map, best.yaml and search.json from the points' row.json files;
    ``grid`` the config's ``augsearch`` n and m (for the edge warnings)."""
    loaded = [json.loads(Path(p).read_text()) for p in rows]
    table = summarise(loaded)
    atomic.write_csv(out_csv, table)
    best = table.iloc[0]
    chosen = {"n": int(best["n"]), "m": int(best["m"])}
    png = figures.heatmap(
        table.rename(columns={"oof_score": "score"}),
        "n",
        "m",
        f"RandAugment: OOF score of {best['arch']} (fold {int(best['fold'])})",
        "N (operations per image)",
        "M (magnitude, 0-30)",
        chosen=(chosen["n"], chosen["m"]),
    )
    atomic.write_bytes(out_png, png)
    warnings = edge_warnings(
        chosen,
        {axis: list(grid[axis]) for axis in ("n", "m")},
        {"n": ("augsearch.n", 0, 10), "m": ("augsearch.m", 0, 30)},
    )
    for warning in warnings:
        log.warning("%s", warning)
    augment = next(row["augment"] for row in loaded if row["point"] == best["point"])
    atomic.write_json(
        out_search,
        {
            "best": {**chosen, "point": str(best["point"]), "oof_score": float(best["oof_score"])},
            "arch": str(best["arch"]),
            "fold": int(best["fold"]),
            "scored_at": str(best["scored_at"]),
            "grid": {axis: [int(v) for v in grid[axis]] for axis in ("n", "m")},
            "warnings": warnings,
        },
    )
    atomic.write_text(out_best, best_fragment(best, augment))
    log.info(
        "augsearch: best n=%d m=%d, OOF %.4f at %s",
        chosen["n"],
        chosen["m"],
        best["oof_score"],
        best["scored_at"],
    )
    return table


def build_augsearch_report(
    summary_csv: str | os.PathLike,
    search_json: str | os.PathLike,
    heatmap_png: str | os.PathLike,
    out_html: str | os.PathLike,
) -> None:
    """The RandAugment search's own page (the search is not part of every run)."""
    summary = pd.read_csv(summary_csv)
    search = json.loads(Path(search_json).read_text())
    section = Section("augsearch", "RandAugment policy search")
    section.warnings(search.get("warnings", []))
    best = search["best"]
    section.text(
        f"{search['arch']} trained on every fold but {search['fold']}, one model per point, "
        f"RandAugment(n, m) after a horizontal flip; each scored on fold {search['fold']} at "
        f"{search['scored_at']}, with the triplet searched on its own maps. Best: n={best['n']}, "
        f"m={best['m']} (OOF {best['oof_score']:.4f})."
    )
    section.figure(Path(heatmap_png).read_bytes(), "OOF score over n and m")
    section.table(summary)
    atomic.write_text(out_html, page_html([section], "ptxseg RandAugment policy search"))
