"""The fault-injection suite: each test tries one fault against the real code or the real DAG.

The summary line of faults tried and handled is written by tests/conftest.py: under pytest-xdist
only the top conftest is loaded where the terminal summary is made.
"""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def data(tmp_path, demo_files):
    """A private copy of the small demo data set, to damage."""
    root = tmp_path / "data"
    shutil.copytree(demo_files, root)
    return root
