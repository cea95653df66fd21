"""The GPU checks (benchmarks/gpu_check.sh) on a machine without a GPU: what can be checked here.

The memory check must cover every training job of a config as the training rules run it (both
rounds, every progressive stage, each architecture's batch), or a config's batches are not known
to fit; the scripts must say they skipped rather than fail; the shell script must parse.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ptxseg.config import validate
from ptxseg.recipes import recipe_for, segmenter_names
from ptxseg.runtime.device import pick_device

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from gpu_memory import jobs  # noqa: E402


def shipped(name: str) -> dict:
    raw = yaml.safe_load((ROOT / "configs" / name).read_text())
    raw["data"] = {"source": "demo"}  # the data paths play no part in the models' memory
    return validate(raw)


def test_the_memory_check_covers_every_training_job_of_the_full_config():
    config = shipped("full.yaml")
    listed = list(jobs(config))
    by_stage = {}
    for stage, name, *_ in listed:
        by_stage.setdefault(stage.split()[0], []).append(name)
    assert sorted(by_stage["pretrain"]) == sorted(config["pretrain"]["archs"])
    assert sorted(by_stage["classify"]) == sorted(config["classify"]["archs"])
    segmenters = segmenter_names(config)
    assert any(name.endswith("-round2") for name in segmenters)  # the second round is on
    for name in segmenters:
        recipe = recipe_for(config, "segment", name.removesuffix("-round2"))
        stages = (
            config["pseudo_labels"]["recipe"]["stages"]
            if name.endswith("-round2")
            else recipe["stages"]
        )
        assert by_stage["segment"].count(name) == len(stages), name
    # The last stage trains on 512 crops and predicts whole 1024 images, at each arch's batch.
    last = {
        name: (train, evaluate, s.batch_size)
        for stage, name, _, _, s, train, evaluate, *_ in listed
        if stage == "segment stage 2"
    }
    assert last["unet_resnet34"] == (512, 1024, 12)
    assert last["unet_efficientnet_b4"] == (512, 1024, 8)


def test_the_memory_check_of_a_config_without_stages_has_one_job_per_segmenter():
    config = shipped("tiny.yaml")
    segment = [job for job in jobs(config) if job[0].startswith("segment")]
    assert [job[1] for job in segment] == segmenter_names(config)
    assert {(job[5], job[6]) for job in segment} == {(32, 32)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the scripts would run")
@pytest.mark.parametrize("script", ["bench_gpu.py", "gpu_memory.py"])
def test_without_a_gpu_the_gpu_scripts_say_they_skipped(script):
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / script)], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "no CUDA GPU visible" in run.stdout and "skipped" in run.stdout


def test_the_gpu_check_script_parses():
    run = subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_check.sh")], capture_output=True)
    assert run.returncode == 0, run.stderr


def test_a_job_on_the_gpu_says_so_in_its_log(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "NVIDIA H200")
    monkeypatch.setattr("ptxseg.runtime.device.hold_gpu", lambda: None)
    with caplog.at_level(logging.INFO, logger="ptxseg.runtime.device"):
        assert pick_device("cuda").type == "cuda"
    assert "device: cuda (NVIDIA H200)" in caplog.text
