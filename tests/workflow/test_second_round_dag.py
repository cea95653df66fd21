"""The NIH second round in the DAG: configs/full.yaml plans one pseudo_label_nih job per fold and
one second-round job per architecture and fold; on the tiny config (branch on) the whole DAG ran
to a valid submission, no pseudo-label candidate is a SIIM image, each fold was labelled by its own
first-round models only, and round 2's OOF predictions are on the fold's SIIM images only."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from dag import ROOT, full_config_with_stand_ins, job_counts, snakemake, write_config

from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.contracts.scores import ScoreTable
from ptxseg.data.siim import read_index
from ptxseg.ensemble.submission import validate_submission
from ptxseg.layout import fold_of, round2_name

pytestmark = pytest.mark.workflow


def test_the_full_config_plans_five_pseudo_label_jobs_and_fifteen_second_rounds(tmp_path):
    config = full_config_with_stand_ins(tmp_path)
    result = snakemake(tmp_path, "-n", "--nolock", "--configfile", config)
    counts = job_counts(result.stdout)
    assert counts["pseudo_label_nih"] == 5
    assert counts["train_segmenter_round2"] == 15 and counts["train_segmenter"] == 15
    assert counts["pseudo_label_candidates"] == counts["repack_nih_candidates"] == 1
    assert counts["predict_segmenter"] == 6  # three architectures, each in two rounds
    # Switched to the mean teacher: no pseudo-labels, the same second rounds.
    teacher = write_config(
        tmp_path / "teacher.yaml",
        tmp_path / "full.yaml",
        pseudo_labels={"mean_teacher": {"enabled": True}},
    )
    counts = job_counts(snakemake(tmp_path, "-n", "--nolock", "--configfile", teacher).stdout)
    assert "pseudo_label_nih" not in counts and counts["train_segmenter_round2"] == 15


def test_the_tiny_dag_with_the_second_round_ends_in_a_valid_submission(tiny_run):
    results = tiny_run / "results"
    index = read_index(results / "data" / "siim_index.csv")
    validate_submission(results / "submission.csv", index[index["split"] == "test"])
    arch = round2_name("unet_resnet34")
    assert arch in EnsembleSpec.from_results(results).segmenter_weights  # beside round 1
    assert ScoreTable.read(results / "ensemble" / "scores.csv").select(arch=arch)
    assert "second_round" in (results / "report.html").read_text()


def test_no_siim_image_is_a_candidate_and_each_fold_is_labelled_by_its_own_models(tiny_run):
    results = tiny_run / "results"
    overlap = pd.read_csv(results / "data" / "nih_siim_overlap.csv", dtype=str)
    assert len(overlap) > 0  # the demo plants NIH images that are SIIM images
    candidates = pd.read_csv(results / "pseudo_labels" / "candidates.csv", dtype=str)
    assert not set(candidates["image_id"]) & set(overlap["nih_image_id"])
    # The config file's keys reached the rules: the sample's size, the bands and the cap.
    pseudo = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())["pseudo_labels"]
    assert len(candidates) == pseudo["candidates"]
    folds = pd.read_csv(results / "data" / "siim_folds.csv", dtype={"image_id": str})
    for fold in sorted(set(folds["fold"])):
        folder = results / "pseudo_labels" / f"fold{fold}"
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["models"] and {fold_of(m) for m in summary["models"]} == {fold}
        labels = pd.read_csv(folder / "labels.csv", dtype=str, keep_default_na=False)
        assert set(labels["image_id"]) == set(candidates["image_id"])
        kept = labels[labels["kept"] != ""]
        assert all((folder / m).is_file() for m in kept["mask"])
        assert len(kept) <= pseudo["max_images"]
        positive = kept[kept["kept"] == "positive"].astype({"probability": float})
        empty = kept[kept["kept"] == "empty"].astype({"probability": float})
        assert (positive["probability"] >= pseudo["positive_min_probability"]).all()
        assert (empty["probability"] <= pseudo["empty_max_probability"]).all()
        positive = positive.astype({"region_confidence": float, "mask_pixels": int})
        assert (positive["region_confidence"] >= pseudo["min_confidence"]).all()
        assert (positive["mask_pixels"] > 0).all()
        assert (empty.astype({"max_pixel": float})["max_pixel"] <= pseudo["empty_max_pixel"]).all()
        # Round 2's OOF predictions: the fold's held-out SIIM images, as round 1's.
        held_out = set(folds.loc[folds["fold"] == fold, "image_id"])
        for name in ("unet_resnet34", round2_name("unet_resnet34")):
            oof = pd.read_csv(
                results / "segment" / name / f"fold{fold}" / "oof_ids.csv", dtype={"image_id": str}
            )
            assert set(oof["image_id"]) == held_out


def test_the_demo_config_leaves_the_second_round_off(tmp_path):
    result = snakemake(tmp_path, "-n", "--nolock", "--configfile", ROOT / "config.yaml")
    counts = job_counts(result.stdout)
    assert "pseudo_label_nih" not in counts and "train_segmenter_round2" not in counts
