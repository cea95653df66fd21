"""Shared fixtures. Real-data tests read the folder named by PTXSEG_TEST_DATA (never copied here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dag import ROOT, RUN_FOLDERS, built_once, run_state, snakemake, state_changes

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real-data folder: skip where PTXSEG_TEST_DATA is unset, fail where it is set but missing."""
    root = os.environ.get("PTXSEG_TEST_DATA")
    if not root:
        pytest.skip("PTXSEG_TEST_DATA is not set: real-data tests skipped")
    path = Path(root)
    expected = [
        path / "labels" / "siim-train-rle.csv.gz",
        path / "siim-sample",
        path / "nih-cxr14-sample",
    ]
    missing = [str(p) for p in expected if not p.exists()]
    if missing:
        pytest.fail(f"PTXSEG_TEST_DATA={root} is set but lacks {', '.join(missing)}")
    return path


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory) -> Path:
    """A small demo data set in the real formats, to copy and damage (source: files)."""
    from ptxseg.data.demo import DemoSpec, write_nih_demo, write_siim_demo

    root = tmp_path_factory.mktemp("files")
    spec = DemoSpec(
        siim_train=8,
        siim_test=2,
        positive_fraction=0.5,
        image_size=128,
        nih_images=6,
        nih_rgba=1,
        max_images_per_patient=1,
    )
    write_siim_demo(root / "siim", spec, seed=5)
    write_nih_demo(root / "nih", spec, seed=5)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole DAG (``all``) on configs/tiny.yaml, run once per test run.

    Where a SLURM cluster is required (PTXSEG_SLURM=1, as in CI), this is the run that
    tests/workflow/test_slurm.py makes through profiles/slurm: the tiny DAG runs once, not twice.
    """
    from slurm_cluster import slurm_required, whole_tiny_dag

    if slurm_required():
        run = whole_tiny_dag(tmp_path_factory)
        assert run.returncode == 0, f"the SLURM run of the tiny DAG failed:\n{run.output[-6000:]}"
        return run.workdir
    return built_once(
        tmp_path_factory,
        "tiny_run",
        lambda workdir: snakemake(
            workdir, "--cores", 2, "--configfile", ROOT / "configs" / "tiny.yaml"
        ),
    )


# Under pytest-xdist (make test) files go to the workers in this order. The SLURM run, minutes
# mostly spent waiting on the scheduler, starts at once on one worker while the other takes the
# rest; the workflow tests, which read the tiny run (the SLURM run in CI), come last.
_ORDER = (
    # The longest file first (one worker runs it while the other takes the rest): the full
    # config's structure, then the SLURM cluster.
    "tests/workflow/test_full_structure.py",
    "tests/workflow/test_slurm.py",
    "tests/faults/test_run_faults.py",
    "tests/faults/",
    "tests/unit/",
    "tests/workflow/",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.replace("\\", "/")
        return next((i for i, p in enumerate(_ORDER) if path.startswith(p)), len(_ORDER))

    items.sort(key=rank)  # stable: file order and test order within a file are kept


# The fault-injection suite's summary line: how many faults were tried (tests in tests/faults/)
# and how many behaved as promised (a clear error naming the file, row or key, or a correct
# recovery; nothing half-written). Here, not in tests/faults/conftest.py, because under
# pytest-xdist the controller, which writes the summary, loads only this conftest.
_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if "tests/faults/" in report.nodeid.replace("\\", "/") and (
        report.when == "call" or report.outcome != "passed"
    ):
        previous = _outcomes.get(report.nodeid)
        if previous in (None, "passed"):
            _outcomes[report.nodeid] = report.outcome


# No test reads or writes the checkout's results/ and .snakemake/ (the user's own runs: `make demo`
# then `make test` must pass, and the tests must leave the demo as it was). Every entry there is
# recorded (mtime and size) when the session starts and compared when it ends; a difference fails
# the session and is listed. In the process that runs the whole session: under pytest-xdist the
# controller, whose session spans every worker's (a per-test check could not say which of two
# workers' tests wrote). A snakemake run in the checkout alongside `make test` would trip it too.
_checkout: dict = {}


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # not a pytest-xdist worker
        _checkout["before"] = run_state(ROOT)


def pytest_sessionfinish(session, exitstatus):
    if "before" in _checkout:
        changes = state_changes(_checkout["before"], run_state(ROOT))
        _checkout["changes"] = changes
        if changes and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    changes = _checkout.get("changes")
    if changes:
        shown = "\n  ".join(changes[:20]) + (
            f"\n  ... {len(changes) - 20} more" if changes[20:] else ""
        )
        terminalreporter.write_line(
            f"FAILED: the tests changed the checkout's {' and '.join(RUN_FOLDERS)} "
            f"({ROOT}); tests run Snakemake in temporary folders only:\n  {shown}",
            red=True,
        )
    if _outcomes:
        passed = sum(outcome == "passed" for outcome in _outcomes.values())
        terminalreporter.write_line(
            f"fault injection: {len(_outcomes)} faults tried, {passed} handled as promised"
        )


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """One torch thread in the test processes: tiny models on small inputs, beside another
    worker and the Snakemake jobs on two cores, where two threads waiting on each other cost
    more than they save (~10x seen; a unit test module's time grew fourfold from two test
    workers to three). The jobs and `ptxseg` commands the tests start set their own."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
