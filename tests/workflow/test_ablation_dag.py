"""The ablation of the winners' levers as Snakemake plans it on the demo config: one training job
per (lever, fold) but none for the baseline, one search per lever with the baseline, one summary;
and `all` (the main report) plans none of it."""

from __future__ import annotations

import re

import pytest
import yaml
from dag import ROOT, job_counts, snakemake

from ptxseg.layout import BASELINE, RESULTS
from ptxseg.recipes import member_names

pytestmark = pytest.mark.workflow

TARGET = "results/ablation/summary.csv"
DEMO = yaml.safe_load((ROOT / "config.yaml").read_text())
ARCH = DEMO["ablation"]["arch"]
LEVERS = sorted(DEMO["ablation"]["levers"])
N_FOLDS = DEMO["folds"]["n_folds"]


def planned_jobs(text: str) -> list[dict]:
    """Each job of a dry run: its rule, wildcards and inputs."""
    jobs = []
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", text, flags=re.M)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block)[1]
        found = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        wildcards = dict(pair.split("=", 1) for pair in found[1].split(", ")) if found else {}
        found = re.search(r"^\s+input: (.*)$", block, re.M)
        inputs = found[1].split(", ") if found else []
        jobs.append({"rule": rule, "wildcards": wildcards, "input": inputs})
    return jobs


@pytest.fixture(scope="module")
def ablation_plan(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ablation")
    result = snakemake(workdir, "-n", "--nolock", TARGET, "--configfile", ROOT / "config.yaml")
    text = result.stdout + result.stderr
    return job_counts(text), planned_jobs(text)


def test_one_training_job_per_lever_and_fold_and_none_for_the_baseline(ablation_plan):
    counts, jobs = ablation_plan
    folds = [j["wildcards"] for j in jobs if j["rule"] == "ablation_fold"]
    assert counts["ablation_fold"] == len(LEVERS) * N_FOLDS
    assert {(w["lever"], int(w["fold"])) for w in folds} == {
        (lever, k) for lever in LEVERS for k in range(N_FOLDS)
    }
    assert {w["arch"] for w in folds} == {ARCH}
    # The baseline is not trained again: its folds are the segment stage's own, of the ablated
    # architecture only (the other segmenters are not needed).
    assert BASELINE not in {w["lever"] for w in folds}
    trained = [j["wildcards"] for j in jobs if j["rule"] == "train_segmenter"]
    assert counts["train_segmenter"] == N_FOLDS and {w["arch"] for w in trained} == {ARCH}


def test_one_search_per_lever_with_the_baseline_and_one_summary(ablation_plan):
    counts, jobs = ablation_plan
    searches = {j["wildcards"]["lever"]: j["input"] for j in jobs if j["rule"] == "ablation_search"}
    assert counts["ablation_search"] == len(LEVERS) + 1 and set(searches) == {BASELINE, *LEVERS}
    assert counts["ablation_summary"] == 1
    # Every classifier of the stage; the lever's own folds (the baseline's: the stage's).
    classifiers = {p for p in searches[BASELINE] if "/classify/" in p}
    assert len(classifiers) == len(DEMO["classify"]["archs"]) * N_FOLDS
    for lever, inputs in searches.items():
        assert classifiers <= set(inputs)
        folders = {RESULTS.ablation_segmenter_dir(lever, ARCH, k) for k in range(N_FOLDS)}
        assert {p.rsplit("/", 1)[0] for p in inputs if p.endswith("oof_ids.csv")} == folders
    assert all(
        "results/segment/" in p for p in searches[BASELINE] if p.endswith(("oof_ids.csv", ".h5"))
    )
    assert not any(p.startswith("results/ablation/baseline/") for p in searches[BASELINE])


def test_one_oof_prediction_per_trained_lever_reading_its_fold_models(ablation_plan):
    """A lever's OOF maps are predicted apart from its training (predict_ablation, with the
    lever's TTA), one job per lever, none per fold; the baseline's are predict_segmenter's."""
    counts, jobs = ablation_plan
    predictions = {j["wildcards"]["lever"]: j for j in jobs if j["rule"] == "predict_ablation"}
    assert counts["predict_ablation"] == len(LEVERS) and set(predictions) == set(LEVERS)
    for lever, job in predictions.items():
        models = {p for p in job["input"] if p.endswith(".pt")}
        assert {p.rsplit("/", 2)[0] for p in models} == {f"results/ablation/{lever}/{ARCH}"}
        assert len(models) == N_FOLDS * len(member_names(DEMO["segment"]["recipe"]))
    assert counts["predict_segmenter"] == 1  # the baseline's: the ablated architecture's


def test_a_lever_stages_bring_their_repacks(ablation_plan):
    _, jobs = ablation_plan
    small = RESULTS.repack_manifest("siim", 32)  # the progressive lever's first stage
    for job in (j for j in jobs if j["rule"] == "ablation_fold"):
        assert (small in job["input"]) == (job["wildcards"]["lever"] == "progressive")


def test_the_main_run_plans_nothing_of_the_ablation(tmp_path):
    result = snakemake(tmp_path, "-n", "--nolock", "--configfile", ROOT / "config.yaml")
    counts = job_counts(result.stdout + result.stderr)
    assert "report" in counts and not [rule for rule in counts if rule.startswith("ablation")]
