"""Shared fixtures. Real-data tests read the folder named by PTXSEG_TEST_DATA (never copied here)."""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The whole DAG (``all``) on configs/tiny.yaml, run once per test session."""
    from dag import snakemake

    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, "--cores", 2, "--configfile", ROOT / "configs" / "tiny.yaml")
    return workdir
