"""Runs that go wrong: killed jobs, a NaN loss, a full disk, two runs at once."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from dag import ROOT, snakemake_command, train_first_segmenter_fold, write_config

from ptxseg.io.maps import SUFFIX, read_rows
from ptxseg.io.png import write_png
from ptxseg.models import build_model
from ptxseg.runtime import checkpoint

pytestmark = pytest.mark.workflow

SEGMENT = "results/segment/unet_resnet34/fold0/summary.json"
KEPT = ("best", "snapshot0", "snapshot1", "swa")  # sorted


def start(workdir, *args):
    """Snakemake in its own process group, so a kill takes its jobs with it."""
    return subprocess.Popen(
        snakemake_command(workdir, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(workdir, *args, timeout=600):
    process = start(workdir, *args)
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def wait_for(condition, timeout=300, poll=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll)
    return False


def state_epoch(path):
    try:
        return checkpoint.load(path)["epoch"]
    except (FileNotFoundError, checkpoint.CheckpointError):
        return -1


@pytest.fixture(scope="module")
def long_config(tmp_path_factory):
    """The tiny config with a segmenter that trains long enough to be killed mid-run."""
    folder = tmp_path_factory.mktemp("config")
    return write_config(
        folder / "long.yaml",
        "configs/tiny.yaml",
        segment={
            "recipe": {
                "epochs": 8,
                "batch_size": 4,
                "schedule": {
                    "name": "cosine_restarts",
                    "warmup_epochs": 0,
                    "cycle_epochs": 4,
                    "cycle_mult": 1,
                },
                "snapshots": 2,
                "swa": {"enabled": True, "start_epoch": 6},
            }
        },
        # Every kind of kept model, so that the test sees each survive the kill.
        ensemble={"members": {"segment": list(KEPT)}},
    )


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, long_config):
    workdir = tmp_path_factory.mktemp("straight")
    code, output = finish(workdir, SEGMENT, "--cores", 2, "--configfile", long_config)
    assert code == 0, output[-3000:]
    return workdir


def test_training_job_killed_mid_epoch_resumes_to_the_same_result(
    tmp_path, long_config, straight_run
):
    process = start(tmp_path, SEGMENT, "--cores", 2, "--configfile", long_config)
    state = tmp_path / "results" / "checkpoints" / "segment" / "unet_resnet34" / "fold0.pt"
    assert wait_for(lambda: state_epoch(state) >= 2), "the training never reached epoch 3"
    os.killpg(process.pid, signal.SIGKILL)  # the whole job, mid-epoch, as a node failure would
    process.wait()
    killed_at = state_epoch(state)
    assert 2 <= killed_at < 7
    # A SIGKILLed Snakemake leaves its lock behind; the user unlocks, then reruns.
    code, output = finish(tmp_path, "--unlock", "--configfile", long_config)
    assert code == 0, output[-3000:]
    code, output = finish(
        tmp_path, SEGMENT, "--cores", 2, "--configfile", long_config, "--rerun-incomplete"
    )
    assert code == 0, output[-3000:]
    log = (
        tmp_path / "results" / "logs" / "train_segmenter" / "unet_resnet34_fold0.log"
    ).read_text()
    assert f"after epoch {killed_at + 1}" in log  # resumed, not restarted
    done, reference = (
        root / "results" / "segment" / "unet_resnet34" / "fold0"
        for root in (tmp_path, straight_run)
    )
    assert sorted(p.stem for p in done.glob("model_*.pt")) == [f"model_{m}" for m in KEPT]
    for name in (f"model_{m}.pt" for m in KEPT):
        ours, theirs = (
            checkpoint.load(done / name)["model"],
            checkpoint.load(reference / name)["model"],
        )
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name
    metrics = pd.read_csv(done / "metrics.csv")
    assert metrics["epoch"].tolist() == list(range(1, 9))
    np.testing.assert_allclose(
        metrics["train_loss"], pd.read_csv(reference / "metrics.csv")["train_loss"]
    )


def test_nan_loss_stops_the_job_and_keeps_the_last_checkpoint(tmp_path):
    config = write_config(
        tmp_path / "nan.yaml",
        "configs/tiny.yaml",
        segment={"recipe": {"epochs": 4, "optimiser": {"lr": 1e30}, "grad_clip": None}},
    )
    code, output = finish(tmp_path, SEGMENT, "--cores", 2, "--configfile", config)
    assert code != 0, output[-2000:]
    log = (
        tmp_path / "results" / "logs" / "train_segmenter" / "unet_resnet34_fold0.log"
    ).read_text()
    assert "NonFiniteLossError" in log and "Lower the learning rate" in log
    epoch = int(log.split("the loss became ")[1].split(" in epoch ")[1].split(",")[0])
    state = tmp_path / "results" / "checkpoints" / "segment" / "unet_resnet34" / "fold0.pt"
    assert checkpoint.load(state)["epoch"] == epoch - 2  # the state after the last good epoch
    assert not (
        tmp_path / "results" / "segment" / "unet_resnet34" / "fold0" / "summary.json"
    ).exists()


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    checkpoint.save(path, {"epoch": 1, "weights": torch.ones(3)})
    real_save = torch.save

    def full_disk(obj, handle, *args, **kwargs):
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(100)  # what reached the disk before it filled
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, {"epoch": 2, "weights": torch.zeros(3)})
    state = checkpoint.load(path)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no partial file left beside it


def _prediction_inputs(root, images=240, size=64):
    model = build_model("unet_resnet34", decoder_channels=(32, 16, 16, 8, 8))
    checkpoint.export_model(
        root / "model.pt",
        model,
        {"arch": "unet_resnet34", "options": {"decoder_channels": [32, 16, 16, 8, 8]}},
    )
    rng = np.random.default_rng(0)
    rows = []
    for k in range(images):
        write_png(
            root / "repack" / str(size) / "test" / f"9.{k}.png",
            rng.integers(0, 255, (size, size), np.uint8),
        )
        rows.append(
            {
                "image_id": f"9.{k}",
                "split": "test",
                "size": size,
                "image": f"{size}/test/9.{k}.png",
                "mask": "",
            }
        )
    pd.DataFrame(rows).to_csv(root / "repack" / "manifest.csv", index=False)
    (root / "repack" / "stats.json").write_text(
        json.dumps({str(size): {"mean": 0.5, "std": 0.25, "images": 1}})
    )


PREDICT = """
import sys
from pathlib import Path
from ptxseg.infer.test_set import predict_segmenter
from ptxseg.runtime.options import Runtime
root = Path(sys.argv[1])
out = root / sys.argv[2]
predict_segmenter(fold_models={0: [str(root / "model.pt")], 1: [str(root / "model.pt")]},
                  manifest_csv=root / "repack" / "manifest.csv",
                  stats_json=root / "repack" / "stats.json", size=64,
                  out_maps={k: out / f"fold{k}.h5" for k in (0, 1)}, out_ids=out / "ids.csv",
                  runtime=Runtime(device="cpu"), batch_size=4)
"""


def test_prediction_job_killed_mid_way_then_rerun(tmp_path):
    _prediction_inputs(tmp_path)
    process = subprocess.Popen([sys.executable, "-c", PREDICT, str(tmp_path), "out"])
    partial = tmp_path / "out" / f".fold0{SUFFIX}.scratch"  # the members' running mean
    assert wait_for(lambda: partial.exists(), timeout=120)
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (
        tmp_path / "out" / f"fold0{SUFFIX}"
    ).exists()  # never a half-written prediction file
    subprocess.run([sys.executable, "-c", PREDICT, str(tmp_path), "out"], check=True)
    subprocess.run([sys.executable, "-c", PREDICT, str(tmp_path), "reference"], check=True)
    for fold in (0, 1):
        assert np.array_equal(
            read_rows(tmp_path / "out" / f"fold{fold}{SUFFIX}", slice(None)),
            read_rows(tmp_path / "reference" / f"fold{fold}{SUFFIX}", slice(None)),
        )
    assert not list((tmp_path / "out").glob(".*.tmp")) + list((tmp_path / "out").glob(".*.scratch"))


def test_second_run_on_the_same_results_folder_is_refused(tmp_path):
    config = ROOT / "configs" / "tiny.yaml"
    first = start(
        tmp_path, "results/repack/siim/stats_32.json", "--cores", 1, "--configfile", config
    )
    assert wait_for(
        lambda: (
            (tmp_path / ".snakemake" / "locks").is_dir()
            and any((tmp_path / ".snakemake" / "locks").iterdir())
        ),
        timeout=60,
    )
    code, output = finish(
        tmp_path, "results/repack/siim/stats_32.json", "--cores", 1, "--configfile", config
    )
    # Refused either at the lock or, when the first run has a job under way, at its outputs
    # (Snakemake sees them as incomplete before it asks for the lock); never run twice.
    assert code != 0, output[-2000:]
    assert "cannot be locked" in output or "Incomplete files" in output, output[-2000:]
    first_output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, first_output[-2000:]  # the first run was not disturbed
    assert (tmp_path / "results" / "repack" / "siim" / "stats_32.json").exists()


def test_the_checkpoint_interval_reaches_the_training_loop_from_the_config(tmp_path):
    """runtime.checkpoint_every_s, read by the rule script (never a rule parameter): an hour
    between writes leaves only the write after the last epoch."""
    config = write_config(
        tmp_path / "sparse.yaml", "configs/tiny.yaml", runtime={"checkpoint_every_s": 3600}
    )
    result, log = train_first_segmenter_fold(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs = yaml.safe_load(config.read_text())["segment"]["recipe"]["epochs"]
    saved = re.findall(
        r"resume state saved at epoch (\d+) \(runtime.checkpoint_every_s=(\S+)\)", log
    )
    assert saved == [(str(epochs), "3600")]
