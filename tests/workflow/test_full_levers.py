"""configs/full.yaml's levers together, at tiny sizes (`dag.full_levers_config`): progressive
resizing with crops, scale TTA, the mean-teacher second round and the RandAugment search, each job
run by Snakemake from the config file. Where the levers meet is where they used to break."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from dag import built_once, full_config_with_stand_ins, full_levers_config, snakemake, write_config

from ptxseg.layout import RESULTS, round2_name

pytestmark = pytest.mark.workflow

ARCH, FOLD, POINT = "unet_resnet34", 0, "n1_m5"


def _run(workdir):
    config = full_levers_config(
        workdir / "levers.yaml", pseudo_labels={"mean_teacher": {"enabled": True}}
    )
    targets = [
        RESULTS.augsearch_file(POINT, "row.json"),
        RESULTS.fold_file("segment", ARCH, FOLD, "summary.json"),
        RESULTS.fold_file("classify", "densenet169", FOLD, "summary.json"),
        RESULTS.fold_file("segment", round2_name(ARCH), FOLD, "summary.json"),
    ]
    snakemake(workdir, *targets, "--cores", 1, "--configfile", config, timeout=1800)


@pytest.fixture(scope="module")
def levers_run(tmp_path_factory):
    return built_once(tmp_path_factory, "full_levers_run", _run)


def _log(run, rule, name):
    return (run / RESULTS.log(rule, name)).read_text()


def test_the_augsearch_point_trains_every_stage_of_the_recipe(levers_run):
    row = json.loads((levers_run / RESULTS.augsearch_file(POINT, "row.json")).read_text())
    assert row["size"] == 64 and 0 <= row["oof_score"] <= 1
    metrics = pd.read_csv(levers_run / RESULTS.augsearch_file(POINT, "metrics.csv"))
    assert sorted(set(metrics["size"])) == [32, 64]  # the 32 px stage found its repack


def test_the_mean_teacher_crops_its_unlabelled_images_anywhere(levers_run):
    folder = levers_run / RESULTS.fold_dir("segment", round2_name(ARCH), FOLD)
    summary = json.loads((folder / "summary.json").read_text())
    assert [s["size"] for s in summary["stages"]] == [64]
    log = _log(levers_run, "train_segmenter_round2", f"{ARCH}_fold{FOLD}")
    assert "mean teacher on" in log


def test_scale_tta_reaches_only_the_models_trained_across_scales(levers_run):
    """full.yaml's tta (none, hflip, 0.75, 1.0): the segmenter trained 32 -> 64 px (half and full
    scale) takes the 0.75 passes; the classifier, trained at one size, only the flips (its 0.75
    pass, 24 px, was below densenet169's smallest input and crashed the job)."""

    def passes(stage, arch):
        path = levers_run / RESULTS.fold_file(stage, arch, FOLD, "summary.json")
        return [tuple(p) for p in json.loads(path.read_text())["tta"]]

    flips = [("none", 1.0), ("hflip", 1.0)]
    assert passes("segment", ARCH) == [("none", 0.75), ("hflip", 0.75), *flips]
    assert passes("classify", "densenet169") == flips
    assert passes("segment", round2_name(ARCH)) == flips  # its one stage is at 64 px only


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
