"""The report of the compound-scaling search: one table of the candidates, the plot, the choice.

Every candidate's training job (`ptxseg.train.scaling_job.train_candidate`) leaves a row.json;
`write_summary` reads them all and writes summary.csv (the candidates with B0, B1 and B2
labelled), score_vs_flops.png, best.yaml (the config entries of the chosen B1, its resolution
multiplier applied to the config's segment.size and stages, and B2 in a comment) and
search.json (the choice, with a warning for every multiplier chosen on the edge of its grid).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ptxseg.grids import edge_warnings
from ptxseg.io import atomic
from ptxseg.models.catalog import CATALOG
from ptxseg.models.scaled_unet.compound import (
    AXES,
    Candidate,
    Network,
    candidate_name,
    check_phi,
    compound,
    flops_factor,
    network,
    scaled_resolution,
)
from ptxseg.models.scaled_unet.search import measure as measure_network
from ptxseg.report.figures import plot_score_vs_flops
from ptxseg.train.scaling_job import grown_rates

log = logging.getLogger(__name__)

COLUMNS = ("alpha", "beta", "gamma", "phi", "params", "flops", "oof_score", "train_seconds")
# Kept where the rows have them: the score on the candidate's own maps, where oof_score was taken,
# and the grid points that round to the candidate's network (trained once, under its name).
OPTIONAL_COLUMNS = ("oof_score_at_resolution", "scored_at", "merged")


def _rows_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = list(rows)
    if not rows:
        raise ValueError("no result rows to summarise")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {i} is not a mapping: {row!r}")
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"row {i} lacks {', '.join(missing)} (rows need {', '.join(COLUMNS)})")
        check_phi(row["phi"])
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
    measure: Callable[[Network], tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """One table of the training results, with the best candidate scaled to B1, B2, ...

    ``rows`` are the training jobs' results (keys `COLUMNS`): B0 (phi 0; its alpha, beta, gamma
    are ignored), the grid's candidates at phi 1, and any later steps already trained. The best
    phi-1 candidate (`select_best`) is labelled B1; for each other ``phi`` in ``phis`` the row of
    the same (alpha, beta, gamma) is labelled B<phi>, or, where it has not been trained yet, is
    added with its parameters and FLOPs from ``measure(network)`` (default: `search.measure`),
    no score, and ``planned`` True.

    Columns: label ("B0", "B1", ... or "" for the other candidates), name, alpha, beta, gamma,
    phi, depth and width (the builder's multipliers), depths and widths (per stage, as
    ``1-2-2-6-5``), resolution, nominal_flops_ratio ((alpha * beta^2 * gamma^2)^phi),
    flops_ratio (the measured FLOPs over B0's), params, flops, oof_score, train_seconds, merged
    (where the rows have it), planned. Sorted by phi, then FLOPs.
    """
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
    for phi in sorted({check_phi(p) for p in phis} - {0}):
        same = (table["name"] == best.name) & (table["phi"] == phi)
        if same.any():
            continue
        params, flops = (measure or measure_network)(best.network(phi, base_resolution))
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
    networks = [
        network(a, b, g, int(phi), base_resolution).description
        for a, b, g, phi in table[[*AXES, "phi"]].itertuples(index=False)
    ]
    table["depths"] = [n[0] for n in networks]
    table["widths"] = [n[1] for n in networks]
    table["resolution"] = [n[2] for n in networks]
    table["nominal_flops_ratio"] = [
        flops_factor(a, b, g) ** int(phi)
        for a, b, g, phi in table[[*AXES, "phi"]].itertuples(index=False)
    ]
    base = table.loc[table["phi"] == 0, "flops"]
    b0_flops = (
        base.iloc[0]
        if len(base)
        else (measure or measure_network)(network(1, 1, 1, 0, base_resolution))[1]
    )
    table["flops_ratio"] = table["flops"] / b0_flops
    if "merged" in table:
        table["merged"] = table["merged"].fillna("")
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
        "depths",
        "widths",
        "resolution",
        "nominal_flops_ratio",
        "flops_ratio",
        "params",
        "flops",
        "oof_score",
        *[c for c in OPTIONAL_COLUMNS if c in table],
        "train_seconds",
        "planned",
    ]
    table = table[order].astype({"phi": "int64", "params": "int64", "flops": "int64"})
    return table.sort_values(["phi", "flops", "name"], kind="stable").reset_index(drop=True)


def size_multiple(archs: Iterable[str]) -> int:
    """The side every one of ``archs`` accepts: the least common multiple of their size rules."""
    return math.lcm(*(CATALOG[arch][2] for arch in archs))


def scaled_resolution_keys(keys: dict, gamma: float, phi: int) -> dict:
    """The config's resolution keys (`ptxseg.recipes.resolution_keys`) at step ``phi`` of the
    searched resolution multiplier: ``segment.size`` times ``gamma**phi``, and every stage and
    crop keeping its ratio to it (512 -> 1024 with 512 crops becomes S/2 -> S with S/2 crops),
    each rounded to a side every segmenter of the config and the scaled U-Net accept. The search
    ran at ``scaling.base_resolution`` (a cheap stand-in for the recipe's own size); what carries
    over to the recipe is the multiplier, as EfficientNet's B1 takes B0's resolution times gamma."""
    size = int(keys["segment"]["size"])
    multiple = size_multiple([*keys["segment"].get("archs", {}), "scaled_unet_b1"])
    target = scaled_resolution(size, gamma, phi, multiple)

    def side(value: int) -> int:
        return max(multiple, math.floor(value * target / size / multiple + 0.5) * multiple)

    def crop(entry: dict, limit: int) -> dict:
        if not entry.get("size"):
            return dict(entry)
        return {**entry, "size": min(side(entry["size"]), limit)}

    def stage(entry: dict) -> dict:
        scaled = {**entry, "size": side(entry["size"])}
        if entry.get("crop"):
            scaled["crop"] = crop(entry["crop"], scaled["size"])
        return scaled

    def walk(node: dict) -> dict:
        out = {}
        for key, value in node.items():
            if key == "stages":
                out[key] = [stage(entry) for entry in value]
            elif key == "crop":
                out[key] = crop(value, target)
            elif isinstance(value, dict):
                if inner := walk(value):
                    out[key] = inner
            else:
                out[key] = value
        return out

    scaled = walk(keys)
    scaled["segment"]["size"] = target
    return scaled


def best_fragment(
    table: pd.DataFrame,
    best: pd.Series,
    resolution_keys: dict,
    b0_recipe: dict | None = None,
    dropout_by_phi: Sequence[float] | None = None,
) -> str:
    """best.yaml: a config fragment that adds the searched B1 as a segmenter and validates beside
    the config it was searched for (``snakemake --configfile my.yaml results/scaling/best.yaml``;
    a stage's size is repacked on demand). Its resolution multiplier gamma is applied to that
    config's ``segment.size`` and every stage and crop keeps its ratio to it
    (`scaled_resolution_keys`; ``resolution_keys`` is `ptxseg.recipes.resolution_keys` of the
    config), so a staged recipe keeps its stages. ``b0_recipe`` holds the search recipe's
    dropout rate, which grows to B1's phi by ``dropout_by_phi`` (`grown_rates`), and its drop path
    rate and activation, which B1 keeps. B2 is in a comment."""
    options = {"alpha": float(best["alpha"]), "beta": float(best["beta"])}
    gamma = float(best["gamma"])

    def regularised(phi: int) -> dict:
        rates = grown_rates(b0_recipe or {}, phi, dropout_by_phi)
        grown = {k: v for k, v in rates.items() if v is not None}
        return {"recipe": grown} if grown else {}

    def sides(keys: dict) -> str:
        stages = keys["segment"].get("recipe", {}).get("stages")
        size = keys["segment"]["size"]
        return f"{' -> '.join(str(s['size']) for s in stages)} px" if stages else f"{size} px"

    b1 = scaled_resolution_keys(resolution_keys, gamma, 1)
    lines = [
        "# The compound-scaling search's B1 as a segmenter: name this file after your config",
        "# (--configfile my.yaml results/scaling/best.yaml). B1's resolution multiplier "
        f"(gamma {gamma:g}) scales",
        f"# segment.size {resolution_keys['segment']['size']} to {b1['segment']['size']}; "
        f"stages and crops keep their ratio to it ({sides(b1)}).",
    ]
    if len(table[table["label"] == "B2"]):
        b2 = scaled_resolution_keys(resolution_keys, gamma, 2)
        lines.append(
            f"# B2: segment.size {b2['segment']['size']} ({sides(b2)}), "
            f"segment.archs.scaled_unet_b2: {json.dumps({'options': options, **regularised(2)})}"
        )
    entry = {"weights": "none", "options": options, **regularised(1)}
    b1["segment"]["archs"] = {**b1["segment"].get("archs", {}), "scaled_unet_b1": entry}
    return "\n".join(lines) + "\n" + yaml.safe_dump(b1, sort_keys=False)


def write_summary(
    rows: Sequence[str | os.PathLike],
    base_resolution: int,
    phis: Sequence[int],
    grid: dict,
    out_csv: str | os.PathLike,
    out_png: str | os.PathLike,
    out_best: str | os.PathLike,
    out_search: str | os.PathLike,
    resolution_keys: dict,
    b0_recipe: dict | None = None,
    dropout_by_phi: Sequence[float] | None = None,
):
    """summary.csv, the score-against-FLOPs plot, the config entries of the chosen B1 and B2, and
    the search's choice with a warning for every multiplier chosen on the edge of its grid."""
    table = summarise([json.loads(Path(p).read_text()) for p in rows], base_resolution, phis)
    atomic.write_csv(out_csv, table)
    plot_score_vs_flops(table, out_png)
    best = table[table["label"] == "B1"].iloc[0]
    chosen = {axis: float(best[axis]) for axis in AXES}
    warnings = edge_warnings(
        chosen,
        grid,
        {axis: (f"scaling.grid.{axis}", 1.0, None) for axis in AXES},
    )
    for warning in warnings:
        log.warning("%s", warning)
    atomic.write_json(
        out_search,
        {
            "best": {"name": str(best["name"]), **chosen, "oof_score": float(best["oof_score"])},
            "scored_at": str(best.get("scored_at", "")),
            "grid": {axis: list(map(float, grid[axis])) for axis in AXES},
            "warnings": warnings,
        },
    )
    atomic.write_text(
        out_best, best_fragment(table, best, resolution_keys, b0_recipe, dropout_by_phi)
    )
    log.info(
        "scaling: best %s (alpha %.2f beta %.2f gamma %.2f), OOF %.4f",
        best["name"],
        best["alpha"],
        best["beta"],
        best["gamma"],
        best["oof_score"],
    )
    return table
