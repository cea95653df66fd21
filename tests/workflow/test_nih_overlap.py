"""No leakage from NIH pretraining into SIIM scores, through the real DAG: the tiny config's data,
the overlap rule, pretraining with `pretrain.exclude_findings` set in a config file, and one
classifier fold that starts from the pretrained weights."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from dag import job_counts, snakemake, write_config

from ptxseg.data import siim
from ptxseg.data.findings import FINDINGS
from ptxseg.data.nih import read_index

pytestmark = pytest.mark.workflow

EXCLUDED = ["Hernia", "Pneumothorax"]
TARGETS = (
    "results/pretrain/densenet169/summary.json",
    "results/classify/densenet169/fold0/summary.json",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("nih_overlap")
    config = write_config(
        workdir / "config.yaml", "configs/tiny.yaml", pretrain={"exclude_findings": EXCLUDED}
    )
    snakemake(workdir, *TARGETS, "--cores", 2, "--configfile", config)
    return workdir, config


def test_the_overlap_rule_finds_the_planted_copies(run):
    results = run[0] / "results"
    planted = pd.read_csv(results / "demo" / "nih" / "siim_copies.csv", dtype=str)
    found = pd.read_csv(results / "data" / "nih_siim_overlap.csv", dtype=str)
    assert len(planted) == 8  # ceil(0.25 * 24) train and ceil(0.25 * 6) test images
    assert sorted(zip(found["nih_image_id"], found["siim_image_id"], strict=True)) == sorted(
        zip(planted["image_index"].str.removesuffix(".png"), planted["siim_image_id"], strict=True)
    )
    index = read_index(results / "data" / "nih_index.csv")
    kept = read_index(results / "data" / "nih_pretrain_index.csv")
    assert set(kept["image_id"]) == set(index["image_id"]) - set(found["nih_image_id"])
    log = (results / "logs" / "exclude_siim_from_nih" / "exclude_siim_from_nih.log").read_text()
    assert "8 of 30 SIIM images (test 2, train 6) match 8 NIH images" in log
    assert "NIH images for pretraining: 16 of 24 (8 removed as SIIM images" in log


def test_the_folds_keep_each_nih_patient_in_one_fold(run):
    """folds_siim groups by the NIH patient the overlap found (configs/tiny.yaml: group_by:
    patient), and the demo has NIH patients whose SIIM images carry different SIIM PatientIDs."""
    results = run[0] / "results"
    found = pd.read_csv(results / "data" / "nih_siim_overlap.csv", dtype=str)
    folds = pd.read_csv(results / "data" / "siim_folds.csv", dtype=str, keep_default_na=False)
    index = siim.read_index(results / "data" / "siim_index.csv")
    train = found[found["siim_split"] == "train"].merge(
        folds, left_on="siim_image_id", right_on="image_id"
    )
    train = train.merge(index[["image_id", "patient_id"]], on="image_id")
    assert len(train) == 6  # every matched train image has its fold
    assert (train["group_source"] == "nih").all()
    assert (train["group_patient"] == train["nih_patient_id"]).all()
    assert (train.groupby("nih_patient_id")["fold"].nunique() == 1).all()
    assert (train.groupby("nih_patient_id")["patient_id"].nunique() > 1).any()
    assert set(folds["group_source"]) == {"nih", "siim"}
    per_patient = train.groupby("nih_patient_id").size()
    summary = json.loads((results / "data" / "siim_folds_summary.json").read_text())
    assert summary["images_grouped_by_nih_patient"] == 6
    assert summary["images_sharing_a_nih_patient"] == per_patient[per_patient > 1].sum() > 0
    log = (results / "logs" / "folds_siim" / "folds_siim.log").read_text()
    assert f"{summary['images_sharing_a_group']} images share their group with another" in log


def test_pretraining_learns_the_findings_the_config_file_keeps(run):
    out = run[0] / "results" / "pretrain" / "densenet169"
    kept = [name for name in FINDINGS if name not in EXCLUDED]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["findings"] == kept and summary["excluded_findings"] == EXCLUDED
    assert summary["images_removed_as_siim"] == 8
    assert summary["images_train"] + summary["images_val"] == 16
    columns = set(pd.read_csv(out / "metrics.csv").columns)
    assert {f"auc_{name}" for name in kept} <= columns
    assert not {f"auc_{name}" for name in EXCLUDED} & columns
    saved = torch.load(out / "model_best.pt", map_location="cpu", weights_only=True)
    assert saved["meta"]["findings"] == kept
    head = [t for k, t in saved["model"].items() if k.endswith("weight") and t.ndim == 2][-1]
    assert head.shape[0] == 12


def test_the_classifier_starts_from_the_twelve_output_pretraining(run):
    log = (run[0] / "results" / "logs" / "train_classifier" / "densenet169_fold0.log").read_text()
    assert "left freshly initialised because their shapes differ" in log
    assert "(12, " in log and "-> (1, " in log  # the NIH head only; the rest is loaded


def test_the_key_reruns_pretraining_and_what_follows_only(run):
    workdir, config = run
    same = snakemake(workdir, "-n", *TARGETS, "--configfile", config)
    assert "Nothing to be done" in same.stdout + same.stderr
    other = write_config(
        workdir / "other.yaml", "configs/tiny.yaml", pretrain={"exclude_findings": ["Pneumothorax"]}
    )
    dry = snakemake(workdir, "-n", *TARGETS, "--configfile", other)
    assert job_counts(dry.stdout) == {"pretrain_nih": 1, "train_classifier": 1}
