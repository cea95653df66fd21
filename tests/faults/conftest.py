"""The fault-injection suite: each test tries one fault against the real code or the real DAG.

At the end of a run the terminal summary says how many faults were tried and how many behaved as
promised (a clear error naming the file, row or key, or a correct recovery; nothing half-written).
"""

from __future__ import annotations

import shutil

import pytest

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if "tests/faults/" in report.nodeid.replace("\\", "/") and (
        report.when == "call" or report.outcome != "passed"
    ):
        previous = _outcomes.get(report.nodeid)
        if previous in (None, "passed"):
            _outcomes[report.nodeid] = report.outcome


def pytest_terminal_summary(terminalreporter):
    if _outcomes:
        passed = sum(outcome == "passed" for outcome in _outcomes.values())
        terminalreporter.write_line(
            f"fault injection: {len(_outcomes)} faults tried, {passed} handled as promised"
        )


@pytest.fixture
def data(tmp_path, demo_files):
    """A private copy of the small demo data set, to damage."""
    root = tmp_path / "data"
    shutil.copytree(demo_files, root)
    return root
