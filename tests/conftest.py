"""Shared fixtures. Real-data tests read the folder named by PTXSEG_TEST_DATA (never copied here)."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from dag import ROOT

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


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder built once per test run, also when pytest-xdist workers share the run.

    Session fixtures run once per worker; the workers' temp folders share a parent, so the first
    worker to get the lock builds there and the others reuse the result. A failed build leaves no
    completion mark and the next worker to ask builds afresh.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole DAG (``all``) on configs/tiny.yaml, run once per test run."""
    from dag import snakemake

    return built_once(
        tmp_path_factory,
        "tiny_run",
        lambda workdir: snakemake(
            workdir, "--cores", 2, "--configfile", ROOT / "configs" / "tiny.yaml"
        ),
    )


# The longest files first: under pytest-xdist (make test) the SLURM run, minutes of mostly
# waiting on the scheduler, then starts at once on one worker while the other takes the rest.
_SLOW_FIRST = (
    "tests/workflow/test_slurm.py",
    "tests/faults/test_run_faults.py",
    "tests/workflow/",
    "tests/faults/",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.replace("\\", "/")
        return next((i for i, p in enumerate(_SLOW_FIRST) if path.startswith(p)), len(_SLOW_FIRST))

    items.sort(key=rank)  # stable: file order and test order within a file are kept
