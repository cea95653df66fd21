"""Blend weight search: Caruana's greedy ensemble selection (``ensemble.blend.method: greedy``)
against the exhaustive simplex grid it replaced (``exhaustive``, step 0.1), in one run.

(a) Synthetic OOF data, 3..10 members, with the search's own objectives: the gate's (ROC AUC of the
    blended probability over 12,047 images, the SIIM train set) and the segmenters' (the
    competition metric of each blend with its own best triplet, over small maps read from scratch
    map files, as ``ensemble.search`` scores them). For each: candidates scored and seconds of
    both searches, and the time the old grid spent only enumerating its candidates (all 11^n
    tuples of ``itertools.product``, filtered to the simplex). An exhaustive search that would take
    longer than ``--budget`` seconds is timed on its first candidates and extrapolated (marked
    ``~``). RATIO lines: greedy time / exhaustive time at the largest member count.
(b) With a results folder (``python benchmarks/bench_blend.py results/``): that run's OOF files
    searched twice by ``ensemble.search.run_search`` (the members, sizes, thresholds grid and
    positives-only segmenters read from its ensemble.json and threshold_search.csv), greedy and
    exhaustive; the weights each chose, and their OOF scores side by side, with a bootstrap standard
    error over images of the differences (the gate's AUC, the cascade's mean Dice at each image's own
    size); a difference within 2 standard errors is noise. Nothing in the results folder is written.

    python benchmarks/bench_blend.py [results/] [--steps 10] [--budget 5] [--rle train-rle.csv]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ptxseg.contracts.ensemble_spec import SEGMENT, EnsembleSpec
from ptxseg.contracts.scores import Kind, Level, ScoreTable
from ptxseg.ensemble.blend import BlendSearch, exhaustive_search, simplex_grid, simplex_size
from ptxseg.ensemble.oof import Gating, Grid, ScratchMaps, gate_objective, oof_files
from ptxseg.ensemble.search import run_search
from ptxseg.io import maps
from ptxseg.layout import Layout, head_arch

GATE_IMAGES = 12_047
MAP_IMAGES, MAP_SIZE = 400, 64  # the segmenters' synthetic small maps
GRID = Grid(gates=(0.0,), tops=(0.5, 0.7, 0.9), min_areas=(0, 1024, 4096), bottoms=(0.3, 0.5))
STEP = 0.1


# ----------------------------------------------------------------------------- (a) synthetic


def gate_data(n: int, seed: int = 0):
    """Labels (22 % positive) and n sources: the label seen through noise of growing strength,
    sharing part of it (correlated members, as fold models of related architectures are)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(GATE_IMAGES) < 0.22
    shared = rng.normal(0, 1, GATE_IMAGES)
    matrix = np.stack(
        [
            labels + (0.6 + 0.1 * k) * (0.5 * shared + rng.normal(0, 1, GATE_IMAGES))
            for k in range(n)
        ],
        axis=1,
    )
    return labels, 1 / (1 + np.exp(-matrix))


def small_maps(folder: Path, n: int, seed: int = 0) -> ScratchMaps:
    """Scratch map files as the search's first pass writes them: n architectures' mean maps (the
    truth through different noise) and the true masks, at MAP_SIZE."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((MAP_IMAGES, MAP_SIZE, MAP_SIZE), np.uint8)
    for k in range(0, MAP_IMAGES, 3):
        y, x = rng.integers(4, MAP_SIZE - 20, 2)
        truth[k, y : y + 16, x : x + 12] = 255
    small = ScratchMaps(folder, [f"arch{k}" for k in range(n)], MAP_IMAGES, MAP_SIZE, MAP_SIZE)
    for k, name in enumerate(small.names[:-1]):
        noise = rng.normal(40, 25 + 8 * k, truth.shape)
        maps.write(small.path(name), np.clip(truth * (0.6 + 0.03 * k) + noise, 0, 255))
    maps.write(small.path("truth"), truth)
    return small


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def exhaustive_seconds(n: int, score_many, budget: float) -> tuple[int, float, float | None]:
    """(candidates, seconds, best score): the whole grid where it fits the budget; else a random
    sample of its candidates timed (the grid's first ones are corners, cheaper to blend), the time
    scaled to the grid's size, and no score (None)."""
    count = simplex_size(n, STEP)
    grid = simplex_grid(n, STEP)
    order = np.random.default_rng(n).permutation(count)
    probe_size = min(count, 20)
    _, probe = timed(lambda: score_many(grid[order[:probe_size]]))
    if probe / probe_size * count <= budget:
        result, seconds = timed(lambda: exhaustive_search(n, score_many, STEP))
        return count, seconds, result.score
    sample = max(probe_size, min(count, int(budget / (probe / probe_size))))
    _, seconds = timed(lambda: score_many(grid[order[:sample]]))
    return count, seconds / sample * count, None


def old_enumeration_seconds(n: int, measured: dict) -> tuple[float, bool]:
    """Seconds the old grid spent enumerating (11^n tuples of itertools.product, kept where they
    sum to 10); measured up to 6 members, beyond that extrapolated per tuple."""
    units = round(1 / STEP)
    if n in measured:
        return measured[n], False
    if n <= 6:
        _, seconds = timed(
            lambda: [c for c in itertools.product(range(units + 1), repeat=n) if sum(c) == units]
        )
        measured[n] = seconds
        return seconds, False
    per_tuple = measured[6] / (units + 1) ** 6
    return per_tuple * (units + 1) ** n, True


def synthetic(steps: int, budget: float) -> None:
    greedy = BlendSearch(method="greedy", steps=steps)
    print(
        f"(a) synthetic OOF data: greedy ({steps} steps) against the exhaustive grid (step {STEP})\n"
        f"    gate: AUC over {GATE_IMAGES:,} images; segmenters: competition metric, "
        f"{MAP_IMAGES} maps at {MAP_SIZE} px, {len(GRID.tops) * len(GRID.min_areas) * len(GRID.bottoms)} triplets"
    )
    header = (
        f"{'objective':<11}{'n':>3}{'greedy':>8}{'greedy s':>10}{'grid':>9}{'grid s':>11}"
        f"{'enumerate s':>13}{'greedy/grid':>13}{'same score':>12}"
    )
    print(header)
    enumeration: dict[int, float] = {}
    ratios = {}
    for objective in ("gate", "segmenter"):
        for n in range(3, 11):
            with tempfile.TemporaryDirectory(prefix="bench_blend_") as folder:
                if objective == "gate":
                    score_many = gate_objective(*gate_data(n))
                else:
                    score_many = small_maps(Path(folder), n).scorer(GRID, Gating(), 32)
                chosen, greedy_s = timed(lambda: greedy.run(n, score_many))  # noqa: B023
                count, grid_s, best = exhaustive_seconds(n, score_many, budget)
            extrapolated = best is None
            same = "-" if extrapolated else f"{chosen.score - best:+.4f}"
            enumerate_s, guessed = old_enumeration_seconds(n, enumeration)
            ratios[objective, n] = (greedy_s / grid_s, extrapolated)
            print(
                f"{objective:<11}{n:>3}{chosen.evaluations:>8}{greedy_s:>10.2f}{count:>9,}"
                f"{grid_s:>10.1f}{'~' if extrapolated else ' '}{enumerate_s:>12.1f}"
                f"{'~' if guessed else ' '}{greedy_s / grid_s:>12.4f}{same:>12}"
            )
    print(
        "    ~: extrapolated (grid: a random sample of its candidates timed, scaled to its size; "
        "enumeration: per tuple of the 6-member product, scaled to 11^n)\n"
        "    same score: greedy's OOF score minus the exhaustive grid's, where the grid ran whole"
    )
    for objective in ("gate", "segmenter"):
        ratio, extrapolated = ratios[objective, 10]
        note = " (exhaustive time extrapolated)" if extrapolated else ""
        print(f"RATIO {objective} n=10: greedy / exhaustive time = {ratio:.5f}{note}")


# ----------------------------------------------------------------------------- (b) a real run


def run_inputs(results: Path, rle: Path | None) -> dict:
    """run_search's arguments for ``results``' own OOF files, from its ensemble.json and
    threshold_search.csv (the grid the run searched)."""
    layout = Layout(str(results))
    chosen = EnsembleSpec.from_results(results)
    grid_table = pd.read_csv(layout.ensemble("threshold_search.csv"))
    grid = Grid(*(tuple(sorted(set(grid_table[c]))) for c in ("gate", "top", "min_area", "bottom")))
    classify = [a for a in chosen.gate_weights if head_arch(a) is None]
    segment = list(chosen.segmenter_weights)
    classifiers, segmenters = oof_files(
        layout, classify, segment, chosen.n_folds, chosen.members[SEGMENT]
    )
    size = chosen.searched.segmenter_size
    rle = rle or Path(layout.demo("siim")) / "train-rle.csv"
    if not rle.exists():
        raise SystemExit(f"{rle}: no SIIM label file; give the run's with --rle")
    return {
        "classifiers": classifiers,
        "segmenters": segmenters,
        "members": chosen.members,
        "manifest_csv": layout.repack_manifest("siim", size),
        "size": size,
        "grid": grid,
        "rle_csv": rle,
        "index_csv": layout.data("siim_index.csv"),
        "search_size": chosen.searched.weight_search.size,
        "positive_only": list(chosen.searched.positive_only),
        "preprocessing": chosen.preprocessing,
    }


def search_into(folder: Path, inputs: dict, blend: BlendSearch) -> tuple[dict, pd.DataFrame]:
    """The search's ensemble, its gate's AUC and seconds; and its per-image outcomes."""
    folder.mkdir(parents=True)
    spec, seconds = timed(
        lambda: run_search(
            **inputs,
            blend=blend,
            out_json=folder / "ensemble.json",
            out_scores=folder / "scores.csv",
            out_grid=folder / "threshold_search.csv",
            out_images=folder / "oof_images.csv",
            out_maps=folder / f"oof_blend{maps.SUFFIX}",
        )
    )
    gate = ScoreTable.read(folder / "scores.csv").one_or_none(kind=Kind.GATE, level=Level.BLEND)
    images = pd.read_csv(folder / "oof_images.csv", dtype={"image_id": str})
    gate_auc = float("nan") if gate is None else gate.score
    return {"spec": spec, "gate_auc": gate_auc, "seconds": seconds}, images


def bootstrap_se(images_a: pd.DataFrame, images_b: pd.DataFrame, draws: int = 2000) -> dict:
    """Standard errors over images (resampled with replacement, the same draw for both) of the
    differences a - b: the gate's AUC and the cascade's mean Dice at each image's own size."""
    assert images_a["image_id"].tolist() == images_b["image_id"].tolist()
    rng = np.random.default_rng(0)
    labels = (images_a["truth_pixels_native"] > 0).to_numpy()
    gate = [
        images_a["classifier_probability"].to_numpy(),
        images_b["classifier_probability"].to_numpy(),
    ]
    dice = (images_a["dice_native"] - images_b["dice_native"]).to_numpy()
    auc_diffs, dice_diffs = [], []
    for _ in range(draws):
        rows = rng.integers(0, len(labels), len(labels))
        dice_diffs.append(dice[rows].mean())
        if len(np.unique(labels[rows])) == 2 and not np.isnan(gate[0]).any():
            auc_diffs.append(
                roc_auc_score(labels[rows], gate[0][rows])
                - roc_auc_score(labels[rows], gate[1][rows])
            )
    return {
        "gate_auc": float(np.std(auc_diffs)) if auc_diffs else float("nan"),
        "cascade": float(np.std(dice_diffs)),
    }


def real_run(results: Path, steps: int, max_candidates: int, rle: Path | None) -> None:
    inputs = run_inputs(results, rle)
    logging.getLogger("ptxseg").setLevel(logging.ERROR)  # the run's own edge-of-grid warnings
    searches = {
        "greedy": BlendSearch(method="greedy", steps=steps),
        "exhaustive": BlendSearch(
            method="exhaustive", grid_step=STEP, max_candidates=max_candidates
        ),
    }
    print(f"\n(b) {results}: the run's OOF files searched twice (nothing there is written)")
    found = {}
    with tempfile.TemporaryDirectory(prefix="bench_blend_") as folder:
        for name, blend in searches.items():
            try:
                found[name] = search_into(Path(folder) / name, inputs, blend)
            except ValueError as error:
                print(f"{name}: refused: {error}")
    for name, (result, _) in found.items():
        spec = result["spec"]
        search, oof = spec.searched.weight_search, spec.searched.oof
        print(
            f"{name:<11} {result['seconds']:.1f} s, {search.evaluations} segmenter blends scored"
            f" at {search.size} px"
        )
        print(f"  gate weights      {_rounded(spec.gate_weights)}")
        print(f"  segmenter weights {_rounded(spec.segmenter_weights)}")
        print(
            f"  OOF: gate AUC {result['gate_auc']:.4f}; segmenter blend (own triplet, "
            f"{search.size} px) {max(score for _, score in search.tried):.4f}; cascade "
            f"{oof.cascade:.4f} ({oof.cascade_scored_at.label()})"
        )
    if len(found) == 2:
        (greedy, greedy_images), (grid, grid_images) = found["greedy"], found["exhaustive"]
        se = bootstrap_se(greedy_images, grid_images)
        print(f"greedy - exhaustive over {len(greedy_images)} OOF images (bootstrap SE):")
        for label, key, a, b in (
            ("gate AUC", "gate_auc", greedy["gate_auc"], grid["gate_auc"]),
            (
                "cascade",
                "cascade",
                greedy["spec"].searched.oof.cascade,
                grid["spec"].searched.oof.cascade,
            ),
        ):
            diff = a - b
            verdict = "within noise" if abs(diff) <= 2 * se[key] or diff == 0 else "beyond 2 SE"
            print(f"  {label:<9} {diff:+.4f} (SE {se[key]:.4f}): {verdict}")
        print(
            f"RATIO real run: greedy / exhaustive time = {greedy['seconds'] / grid['seconds']:.3f}"
        )


def _rounded(weights: dict) -> dict:
    return {k: round(v, 3) for k, v in weights.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", nargs="?", type=Path, help="a results folder with an ensemble")
    parser.add_argument("--steps", type=int, default=BlendSearch().steps, help="greedy steps")
    parser.add_argument(
        "--budget", type=float, default=5.0, help="seconds an exhaustive search may run in (a)"
    )
    parser.add_argument(
        "--max-candidates",
        type=int,
        default=BlendSearch().max_candidates,
        help="the exhaustive search's bound in (b)",
    )
    parser.add_argument("--rle", type=Path, help="the run's train-rle.csv (default: the demo's)")
    parser.add_argument("--skip-synthetic", action="store_true", help="only (b)")
    args = parser.parse_args()
    if not args.skip_synthetic:
        synthetic(args.steps, args.budget)
    if args.results:
        real_run(args.results, args.steps, args.max_candidates, args.rle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
