"""The RandAugment policy search on the tiny config: one job per grid point, end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from dag import ROOT, job_counts, snakemake

from ptxseg.config import load_schema, validate
from ptxseg.data.transforms import build_augment

pytestmark = pytest.mark.workflow

TARGET = "results/augsearch/summary.csv"


def test_augsearch_plans_one_job_per_point_and_runs(tiny_run):
    config = ("--configfile", ROOT / "configs" / "tiny.yaml")
    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())["augsearch"]
    points = len(tiny["n"]) * len(tiny["m"])
    planned = snakemake(tiny_run, "-n", TARGET, *config)
    counts = job_counts(planned.stdout + planned.stderr)
    assert counts["augsearch_point"] == points and counts["augsearch_summary"] == 1
    snakemake(tiny_run, TARGET, "--cores", 2, *config)
    results = tiny_run / "results" / "augsearch"
    summary = pd.read_csv(results / "summary.csv")
    assert len(summary) == points
    assert set(zip(summary["n"], summary["m"], strict=True)) == {
        (n, m) for n in tiny["n"] for m in tiny["m"]
    }
    assert summary["oof_score"].between(0, 1).all() and (summary["train_seconds"] > 0).all()
    assert summary["scored_at"].nunique() == 1  # one common size: each image's own
    assert "each image's own size" in summary["scored_at"].iloc[0]
    assert summary["oof_score"].iloc[0] == summary["oof_score"].max()  # best first
    # best.yaml validates as it is and holds the best point's policy, which build_augment builds.
    fragment = yaml.safe_load((results / "best.yaml").read_text())
    validated = validate(fragment, load_schema())
    arch = summary["arch"].iloc[0]
    augment = validated["segment"]["archs"][arch]["recipe"]["augment"]
    randaugment = build_augment(augment).transforms[-1]
    assert (randaugment.n, randaugment.m) == (summary["n"].iloc[0], summary["m"].iloc[0])
    search = json.loads((results / "search.json").read_text())
    assert search["best"]["point"] == summary["point"].iloc[0]
    page = (results / "report.html").read_text()
    assert "RandAugment policy search" in page and "data:image/png;base64," in page
    assert (results / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
