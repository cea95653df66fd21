"""Exact reruns: after the tiny DAG has run, an edit of the config (or of one result) plans exactly
the jobs whose results depend on it, by Snakemake's own rerun triggers; and a config named on the
command line is the whole config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dag import ROOT, checkout_copy, freed_after, job_counts, snakemake

from ptxseg.layout import Layout

pytestmark = pytest.mark.workflow

TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
N_FOLDS = TINY["folds"]["n_folds"]


@pytest.fixture(scope="module")
def finished(tiny_run, tmp_path_factory, request):
    """A copy of the finished tiny run (times and Snakemake's records kept), free to touch."""
    with freed_after(request, tmp_path_factory.mktemp("reruns")) as folder:
        copy = folder / "run"
        shutil.copytree(tiny_run, copy, symlinks=True, ignore=shutil.ignore_patterns("locks"))
        yield copy


def planned(workdir, tmp_path, **edits) -> dict[str, int]:
    """Jobs a dry run of `all` plans on the tiny config with ``edits`` (section -> key -> value,
    nested keys merged)."""
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    for section, values in edits.items():
        _merge(config.setdefault(section, {}), values)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(workdir, "-n", "--nolock", "--configfile", path)
    text = result.stdout + result.stderr
    return {} if "Nothing to be done" in text else job_counts(text)


def _merge(base: dict, override: dict) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def test_the_finished_run_has_nothing_to_do(finished, tmp_path):
    assert planned(finished, tmp_path) == {}


def test_a_touched_script_reruns_nothing(finished, tmp_path):
    """A checkout, `git pull` or copy gives a script new times and the same bytes: nothing reruns
    (profiles/default leaves out the mtime-based code trigger; each rule's `code` param holds the
    hash of what its script runs, test_code_hash.py)."""
    script = ROOT / "workflow" / "scripts" / "train_fold.py"
    times = script.stat()
    try:
        os.utime(script)  # now: newer than every output of the finished run
        assert planned(finished, tmp_path) == {}
    finally:
        os.utime(script, ns=(times.st_atime_ns, times.st_mtime_ns))


def test_a_wider_threshold_grid_reruns_the_ensemble_and_what_reads_it(finished, tmp_path):
    grid = {"gate": [0.0, 0.3, 0.6], "top": [0.5, 0.7], "min_area": [0, 512], "bottom": [0.4]}
    assert planned(finished, tmp_path, ensemble={"grid": grid}) == {
        "ensemble": 1,
        "submission": 1,
        "report": 1,
        "model_card": 1,
    }


def test_a_new_siim_size_repacks_that_size_and_nothing_of_nih(finished, tmp_path):
    sizes = [*TINY["repack"]["sizes"], 96]
    # The report shows every size's intensity statistics, so it is rebuilt too; nothing trains.
    assert planned(finished, tmp_path, repack={"sizes": sizes}) == {"repack_siim": 1, "report": 1}


def test_how_jobs_run_reruns_nothing(finished, tmp_path):
    runtime = {"num_workers": 2, "device": "auto", "checkpoint_every_s": 600}
    assert planned(finished, tmp_path, runtime=runtime) == {}


def test_segmenter_epochs_rerun_the_segmenters_and_downstream_only(finished, tmp_path):
    epochs = TINY["segment"]["recipe"]["epochs"] + 1
    archs = len(TINY["segment"]["archs"])
    # The tiny config's second round (its own epochs) starts from the first round's models and
    # learns from their pseudo-labels: it reruns too, the NIH candidates do not.
    second = {"pseudo_label_nih": N_FOLDS, "train_segmenter_round2": archs * N_FOLDS}
    assert TINY["pseudo_labels"]["enabled"] and TINY["pseudo_labels"]["recipe"]["epochs"]
    assert planned(finished, tmp_path, segment={"recipe": {"epochs": epochs}}) == {
        "train_segmenter": archs * N_FOLDS,
        **second,
        "predict_segmenter": 2 * archs,
        "ensemble": 1,
        "submission": 1,
        "report": 1,
        "model_card": 1,
    }


def test_a_new_tta_reruns_the_predictions_and_downstream_and_no_training(finished, tmp_path):
    """train.tta is an inference choice: no training job has it as a param (their OOF
    predictions are the prediction jobs', ptxseg.train.oof), so a new TTA predicts the OOF and
    test maps of every architecture of both rounds again, and what reads them, and trains nothing;
    the pseudo-labels, the second round's training data, have their own pseudo_labels.tta."""
    tta = [*TINY["train"]["tta"], "vflip"]
    archs = len(TINY["segment"]["archs"])
    assert planned(finished, tmp_path, train={"tta": tta}) == {
        "predict_classifier": len(TINY["classify"]["archs"]),
        "predict_segmenter": 2 * archs,  # round 1 and round 2
        "ensemble": 1,
        "submission": 1,
        "report": 1,
        "model_card": 1,
    }


def test_a_new_pseudo_label_tta_relabels_and_trains_the_second_round_only(finished, tmp_path):
    archs = len(TINY["segment"]["archs"])
    assert TINY["pseudo_labels"]["tta"] != ["none"]
    assert planned(finished, tmp_path, pseudo_labels={"tta": ["none"]}) == {
        "pseudo_label_nih": N_FOLDS,
        "train_segmenter_round2": archs * N_FOLDS,
        "predict_segmenter": archs,  # round 2's
        "ensemble": 1,
        "submission": 1,
        "report": 1,
        "model_card": 1,
    }


def test_the_report_reruns_when_a_file_it_reads_changes(finished, tmp_path):
    layout = Layout(str(finished / "results"))
    arch = next(iter(TINY["segment"]["archs"]))
    metrics = Path(layout.fold_file("segment", arch, 0, "metrics.csv"))
    # New content (Snakemake compares checksums, so a touch alone is not a change): the page's
    # training curves are out of date.
    metrics.write_text(metrics.read_text() + "\n")
    assert planned(finished, tmp_path) == {"report": 1}


@pytest.mark.parametrize("name", ["config.yaml", "configs/tiny.yaml", "configs/full.yaml"])
def test_a_shipped_config_named_on_the_command_line_is_used_alone(name, tmp_path):
    """From the repository root, where config.yaml (the demo default) lies: nothing of it may leak
    into the named config; --config still overrides single keys. The root is a copy: the
    checkout's own results/ (a finished `make demo`) would leave nothing to plan."""
    checkout = checkout_copy(tmp_path / "checkout")
    config = yaml.safe_load((ROOT / name).read_text())
    overrides = []
    if config["data"]["source"] == "files":  # the real downloads: stand-ins with their layout
        data = tmp_path / "data"
        for folder in ("train", "test", "nih"):
            (data / folder).mkdir(parents=True)
        (data / "train-rle.csv").write_text("ImageId, EncodedPixels\n")
        (data / "labels.csv").write_text("Image Index,Finding Labels,Patient ID\n")
        siim = {
            "train_dicom_dir": str(data / "train"),
            "test_dicom_dir": str(data / "test"),
            "train_rle_csv": str(data / "train-rle.csv"),
        }
        nih = {"image_dir": str(data / "nih"), "labels_csv": str(data / "labels.csv")}
        # Merged into the file's data section (Snakemake reads --config values as YAML).
        data_section = {"siim": siim, "nih": nih}
        overrides = [f"data={json.dumps(data_section)}"]  # JSON is YAML, on one line
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--nolock",
            "--configfile",
            name,
            *(["--config", *overrides] if overrides else []),
        ],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    counts = job_counts(result.stdout)
    folds = config["folds"]["n_folds"]
    assert counts.get("pretrain_nih", 0) == len(config["pretrain"]["archs"])
    assert counts["train_classifier"] == len(config["classify"]["archs"]) * folds
    assert counts["train_segmenter"] == len(config["segment"]["archs"]) * folds
    assert counts["repack_siim"] == len(
        {*config["repack"]["sizes"], config["classify"]["size"], config["segment"]["size"]}
    )
    assert ("demo_siim" in counts) == (config["data"]["source"] == "demo")
