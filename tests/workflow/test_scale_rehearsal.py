"""The scale rehearsal (benchmarks/bench_scale.py) on configs/full.yaml at a small size: what it
runs and draws comes from the config's DAG, so a lever that adds jobs must keep it passing."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.dag import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_dag
import scale_release

pytestmark = pytest.mark.workflow

# The stages after training that `all` needs in configs/full.yaml (the rehearsal finds them in
# the DAG; these are what it must at least find).
POST_RULES = {"ensemble", "submission", "report", "model_card"}


def test_the_rehearsal_runs_every_stage_after_training_on_drawn_outputs(tmp_path):
    # One architecture a stage (a count): the gate's exhaustive blend search cannot take the full
    # config's ten image-level sources on CI's cores. Every lever stays, the second round too.
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "bench_scale.py"),
        *("--images", "60", "--nih-images", "3000", "--train-steps", "2"),
        *("--archs", "1", "--workers", "2", "--workdir", str(tmp_path)),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    out = result.stdout
    post = re.search(r"after training \[(.*)\]", out)
    assert post, out
    found = {name.strip(" '") for name in post[1].split(",")}
    assert found >= POST_RULES
    drawn = re.search(r"drawn \[(.*)\]; after", out)[1]
    assert "train_segmenter_round2" in drawn and "pseudo_label_nih" in drawn
    table = out.split("rule ", 1)[1]
    rows = {line.split()[0] for line in table.splitlines()[1:] if line.strip()}
    assert found <= rows, table
    assert "segment OOF maps" in out and "pseudo-label summary" in out


def test_a_file_of_no_known_kind_is_an_error_naming_rule_and_file():
    job = scale_dag.Job("train_segmenter", 1, output=("results/segment/a/fold0/calibration.npy",))
    with pytest.raises(scale_release.DrawError, match=r"train_segmenter.*fold0/calibration\.npy"):
        scale_release.drawn_kind("results/segment/a/fold0/calibration.npy", job)


def test_the_plan_splits_jobs_by_their_models():
    text = """
rule data:
    input: raw.csv
    output: results/data/x.csv
    jobid: 1
    resources: mem_mb=100
rule train:
    input: results/data/x.csv
    output: results/segment/a/fold0/model_best.pt, results/segment/a/fold0/summary.json
    benchmark: results/benchmarks/train/a_fold0.tsv
    jobid: 2
rule report:
    input: results/segment/a/fold0/summary.json, results/benchmarks/train/a_fold0.tsv
    output: results/report.html
    jobid: 3
localrule all:
    input: results/report.html
    jobid: 0
"""
    plan = scale_dag.plan(scale_dag.parse_dry_run(text))
    assert [scale_dag.rules_of(s) for s in (plan.data, plan.drawn, plan.post)] == [
        ["data"],
        ["train"],
        ["report"],
    ]
    assert sorted(plan.drawn_inputs()) == [
        "results/benchmarks/train/a_fold0.tsv",
        "results/segment/a/fold0/summary.json",
    ]
    assert scale_dag.memory_by_rule(plan.data) == {"data": 100}
