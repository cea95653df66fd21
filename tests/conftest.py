"""Shared fixtures. Real-data tests read the folder named by PTXSEG_TEST_DATA (never copied here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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
