"""configs/full.yaml's levers where they used to break, planned at the full config's own sizes (the
runs themselves are test_full_structure.py's: the RandAugment point through every stage, scale TTA
only for models trained across scales, the mean teacher with the crop stage)."""

from __future__ import annotations

import pytest
from dag import full_config_with_stand_ins, snakemake, write_config

from ptxseg.layout import RESULTS

pytestmark = pytest.mark.workflow

POINT = "n1_m5"


def test_the_full_config_gives_the_augsearch_points_every_stage_repack(tmp_path):
    """configs/full.yaml's 512 -> 1024 stages: a RandAugment point needs both repacks."""
    config = write_config(
        tmp_path / "search.yaml",
        full_config_with_stand_ins(tmp_path),
        augsearch={"fold": 0, "n": [1], "m": [5]},
    )
    plan = snakemake(
        tmp_path,
        "-n",
        "--nolock",
        RESULTS.augsearch_file(POINT, "row.json"),
        "--configfile",
        config,
    ).stdout
    job = plan.split("rule augsearch_point:", 1)[1].split("\n\n", 1)[0]
    for size in (512, 1024):
        assert RESULTS.repack_manifest("siim", size) in job
