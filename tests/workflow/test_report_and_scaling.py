"""The report page, opened in a headless browser, and the scaling search on the tiny config."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml
from dag import ROOT, snakemake

from ptxseg.config import validate
from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.contracts.scores import Basis, Kind, Level, Metric, ScoreTable
from ptxseg.models.scaled_unet.compound import scaled_resolution
from ptxseg.report.build import SECTIONS

pytestmark = pytest.mark.workflow


def sections_of(page: str) -> dict[str, str]:
    """Section id -> its HTML (the page's single quotes, or a browser's DOM's double quotes)."""
    return dict(re.findall(r"<section id=[\'\"]([a-z_]+)[\'\"]>(.*?)</section>", page, re.S))


def test_report_has_every_section_with_its_figures(tiny_run):
    page = (tiny_run / "results" / "report.html").read_text()
    sections = sections_of(page)
    assert list(sections) == [s for s in SECTIONS if s in sections] and set(SECTIONS) - {
        "scaling"
    } <= set(sections)
    needs_figures = {
        "data": 2,
        "training": 3,
        "scores": 1,
        "weights": 2,
        "thresholds": 2,
        "examples": 1,
        "runtime": 1,
    }
    for key, count in needs_figures.items():
        images = re.findall(
            r"<img alt='[^']*' src='data:image/png;base64,([A-Za-z0-9+/=]{200,})'>", sections[key]
        )
        assert len(images) >= count, key
    assert "all-empty baseline" in sections["scores"] and "<table" in sections["runtime"]
    overlap = pd.read_csv(tiny_run / "results" / "data" / "nih_siim_overlap.csv")
    assert f"{len(overlap)} NIH images are SIIM images" in sections["data"]
    # The score table is a summary (architecture x member over folds) with the raw rows folded
    # away, and the search's edge-of-grid warnings are on the page.
    scores = sections["scores"]
    assert "own best triplet" in scores and "<details><summary>All " in scores
    assert scores.index("cascade (blend, gate, triplet)") < scores.index("<details>")
    for warning in EnsembleSpec.from_results(tiny_run / "results").searched.warnings:
        assert html.escape(warning, quote=True) in scores
    for rule in ("train_segmenter", "ensemble", "submission"):
        assert rule in sections["runtime"]
    assert "src='http" not in page and "<script" not in page  # self-contained, nothing to fetch


def browser() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def test_report_opens_in_headless_chromium_without_console_errors(tiny_run, tmp_path):
    executable = browser()
    if executable is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)")
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,3000",
            f"--screenshot={shot}",
            (tiny_run / "results" / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 20_000, result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "ERROR" in line.upper()], console
    # The page as the browser renders it leads with the headline, as scores.csv has it.
    dom = subprocess.run(
        [
            executable,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            (tiny_run / "results" / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    first = sections_of(dom)["result"]
    assert next(iter(sections_of(dom))) == "result"
    scores = ScoreTable.read(tiny_run / "results" / "ensemble" / "scores.csv")
    own = scores.select(kind=Kind.SEGMENTER, metric=Metric.COMPETITION, basis=Basis.OWN_SIZE)
    nested, baseline = own.one(level=Level.CASCADE_NESTED), own.one(level=Level.ALL_EMPTY)
    for number in (
        nested.score,
        *nested.interval,
        own.one(level=Level.CASCADE).score,
        baseline.score,
    ):
        assert f"{number:.4f}" in first, number
    assert first.index(f"{nested.score:.4f}") < first.index(f"{baseline.score:.4f}")
    assert "synthetic demo data" in first and "Config sha256" in first


def test_scaling_search_runs_on_the_tiny_grid(tiny_run):
    snakemake(
        tiny_run,
        "results/scaling/summary.csv",
        "--cores",
        2,
        "--configfile",
        ROOT / "configs" / "tiny.yaml",
    )
    summary = pd.read_csv(tiny_run / "results" / "scaling" / "summary.csv")
    assert set(summary["label"].dropna()) >= {"B0", "B1", "B2"}
    assert list(summary.sort_values("phi")["flops"]) == sorted(
        summary["flops"]
    )  # FLOPs grow with phi
    trained = summary[~summary["planned"].astype(bool)]
    assert trained["oof_score"].between(0, 1).all() and (trained["train_seconds"] > 0).all()
    # Candidates of different resolutions, all scored at one size: each image's own.
    assert trained["scored_at"].nunique() == 1
    assert "each image's own size" in trained["scored_at"].iloc[0]
    assert set(trained["resolution"]) != {trained["resolution"].iloc[0]}  # they do differ
    search = json.loads((tiny_run / "results" / "scaling" / "search.json").read_text())
    for axis, values in search["grid"].items():
        chosen, grid = search["best"][axis], sorted(values)
        on_edge = chosen > 1.0 and chosen in (grid[0], grid[-1]) and len(grid) > 1
        warned = any(w.startswith(f"scaling.grid.{axis}:") for w in search["warnings"])
        assert on_edge == warned, (axis, chosen, search["warnings"])
    assert (tiny_run / "results" / "scaling" / "score_vs_flops.png").read_bytes()[
        :8
    ] == b"\x89PNG\r\n\x1a\n"
    page = (tiny_run / "results" / "scaling" / "report.html").read_text()
    assert "<section id='scaling'>" in page and "score against FLOPs" in page
    # best.yaml is a config fragment that validates as it is ...
    best_yaml = tiny_run / "results" / "scaling" / "best.yaml"
    best = yaml.safe_load(best_yaml.read_text())
    assert set(best) == {"segment"} and set(best["segment"]["archs"]) == {"scaled_unet_b1"}
    b1 = trained[trained["label"] == "B1"].iloc[0]
    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    # B1's resolution multiplier applies to the config's segment.size, not the search's side.
    assert best["segment"]["size"] == scaled_resolution(tiny["segment"]["size"], b1["gamma"], 1)
    validate(best)
    # ... and, named after a config, adds B1 as a segmenter at that size (repacked on demand).
    result = snakemake(
        tiny_run, "-n", "--nolock", "--configfile", ROOT / "configs" / "tiny.yaml", best_yaml
    )
    assert "train_segmenter" in result.stdout and "scaled_unet_b1" in result.stdout
    size = best["segment"]["size"]
    assert f"results/repack/siim/manifest_{size}.csv" in result.stdout  # trains at B1's side
    tiny_sizes = tiny["repack"]["sizes"]
    if size not in tiny_sizes:  # which candidate wins depends on the run: repacked on demand
        assert f"results/repack/siim/{size}" in result.stdout
