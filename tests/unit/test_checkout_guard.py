"""The session check of tests/conftest.py: what a test writes into a checkout's results/ or
.snakemake/ shows in `run_state`; what it only reads does not."""

from __future__ import annotations

import os

from dag import run_state, state_changes


def test_a_write_into_results_or_snakemake_shows_and_a_read_does_not(tmp_path):
    (tmp_path / "results" / "ensemble").mkdir(parents=True)
    scores = tmp_path / "results" / "ensemble" / "scores.csv"
    scores.write_text("kind,score\n")
    (tmp_path / "other.txt").write_text("not a run's\n")
    before = run_state(tmp_path)
    assert set(before) == {"results", "results/ensemble", "results/ensemble/scores.csv"}

    scores.read_text()
    (tmp_path / "other.txt").write_text("changed, but not a run's\n")
    assert state_changes(before, run_state(tmp_path)) == []

    (tmp_path / ".snakemake" / "log").mkdir(parents=True)  # a Snakemake run in the checkout
    os.utime(scores, ns=(0, 0))  # rewritten in place
    assert state_changes(before, run_state(tmp_path)) == [
        "added .snakemake",
        "added .snakemake/log",
        "changed results/ensemble/scores.csv",
    ]
    scores.unlink()
    assert "removed results/ensemble/scores.csv" in state_changes(before, run_state(tmp_path))
