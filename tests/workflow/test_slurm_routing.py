"""profiles/slurm's routing, on the DAG of configs/full.yaml (a dry run; no cluster needed): every
job that trains or runs a model asks for a GPU and the plugin's partition selection, reading the
profile's partitions.yaml, sends it to a GPU partition; every other job to a CPU partition; the
seconds-long rules are local rules and ask for no GPU. The CI cluster's end-to-end run
(test_slurm.py) shows the same on real sbatch calls."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest
import yaml
from slurm_cluster import local_rules
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

from tests.dag import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import scale_dag

pytestmark = pytest.mark.workflow

PROFILE = ROOT / "profiles" / "slurm"
# Every target a user of full.yaml may ask for: the default and the optional searches.
TARGETS = (
    "all",
    "results/augsearch/summary.csv",
    "results/scaling/summary.csv",
    "results/ablation/summary.csv",
)


@pytest.fixture(scope="module")
def full_jobs(tmp_path_factory) -> list[scale_dag.Job]:
    """Every job of configs/full.yaml's targets, with its resources as Snakemake resolves them
    (the data are empty stand-in folders in the layout the config reads)."""
    work = tmp_path_factory.mktemp("routing")
    config = yaml.safe_load((ROOT / "configs" / "full.yaml").read_text())
    data = work / "data"
    for folder in ("train", "test", "nih"):
        (data / folder).mkdir(parents=True)
    (data / "train-rle.csv").write_text("ImageId, EncodedPixels\n")
    (data / "labels.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    config["data"]["siim"].update(
        train_dicom_dir=str(data / "train"),
        test_dicom_dir=str(data / "test"),
        train_rle_csv=str(data / "train-rle.csv"),
    )
    config["data"]["nih"].update(image_dir=str(data / "nih"), labels_csv=str(data / "labels.csv"))
    path = work / "full.yaml"
    path.write_text(yaml.safe_dump(config))
    run = work / "run"
    run.mkdir()
    return [j for j in scale_dag.dry_run(run, path, *TARGETS) if j.output]


def partition_of(job: scale_dag.Job, partitions) -> str | None:
    """The partition the SLURM plugin picks for the job (its own scoring, on the job's resources)."""
    resources = {k: int(v) if v.isdigit() else v for k, v in job.resources.items()}
    stand_in = SimpleNamespace(
        name=job.rule, threads=int(resources.get("_cores", 1)), resources=resources
    )
    return get_best_partition(partitions, stand_in, logging.getLogger("slurm-routing"))


def test_every_model_job_goes_to_a_gpu_partition_and_no_other(full_jobs):
    partitions = read_partition_file(PROFILE / "partitions.yaml")
    with_gpu = {p.name for p in partitions if p.limits.max_gpu > 0}
    without = {p.name for p in partitions if p.limits.max_gpu == 0}
    assert with_gpu and without, "partitions.yaml lists no GPU or no CPU partition"
    model_rules = set()
    for job in full_jobs:
        chosen = partition_of(job, partitions)
        if job.touches_models:  # trains, predicts with or pseudo-labels by a kept model file
            model_rules.add(job.rule)
            assert int(job.resources.get("gpu", 0)) >= 1, f"{job.rule} asks for no GPU"
            assert chosen in with_gpu, f"{job.rule} (gpu) would go to {chosen}"
        else:
            assert int(job.resources.get("gpu", 0)) == 0, f"{job.rule} asks for a GPU"
            assert chosen in without, f"{job.rule} (no gpu) would go to {chosen}"
    # The full config's model rules, both rounds and the optional searches: none left out (its
    # ablation lists no levers, so plans no ablation_fold).
    assert {
        "pretrain_nih",
        "train_classifier",
        "train_segmenter",
        "predict_classifier",
        "predict_segmenter",
        "pseudo_label_nih",
        "train_segmenter_round2",
        "augsearch_point",
        "scaling_candidate",
    } <= model_rules


def test_the_profile_sets_no_partition_that_would_override_the_choice():
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert "slurm_partition" not in (profile.get("default-resources") or {})
    assert "set-resources" not in profile
    assert profile["slurm-partition-config"] == "partitions.yaml"
    assert (PROFILE / profile["slurm-partition-config"]).is_file()


def test_seconds_long_rules_are_local_and_light(full_jobs):
    local = local_rules()
    planned = {j.rule for j in full_jobs}
    assert local - {"all"} <= planned, f"localrules not in full.yaml's DAG: {local - planned}"
    for job in full_jobs:
        if job.rule in local:
            assert not job.touches_models and int(job.resources.get("gpu", 0)) == 0, job.rule
            # Sized from the scale rehearsal (2-31 s, under 0.7 GiB at the full size).
            assert int(job.resources["mem_mb"]) <= 8000, f"{job.rule}: {job.resources}"
