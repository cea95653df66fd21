"""A segmenter fold killed after its first epoch on the GPU, rerun, against a run straight through.

The tiny config with a longer unet_resnet34 fold-0 training (every kind of kept model) and
``runtime.device: cuda``: one run straight through; a second one killed (SIGKILL to Snakemake's
process group, as a node failure would) as soon as its resume state holds the first epoch, then
unlocked and rerun with ``--rerun-incomplete``. Checks that the rerun resumed (its log says after
which epoch) and ends with every kept model loadable; prints how far its weights and losses are
from the straight run's (on a GPU they need not be equal: cuDNN's kernels are not all
deterministic). Writes the figures as JSON.

    python benchmarks/gpu_resume.py WORKDIR [--json out.json] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pandas as pd
import torch
import yaml
from snakemake_run import ROOT, snakemake_command

from ptxseg.runtime import checkpoint

TARGET = "results/segment/unet_resnet34/fold0/summary.json"
KEPT = ("best", "snapshot0", "snapshot1", "swa")


def write_config(path: Path, device: str) -> Path:
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    config["runtime"] = {**config["runtime"], "device": device}
    config["segment"]["recipe"].update(
        epochs=10,
        batch_size=4,
        schedule={"name": "cosine_restarts", "warmup_epochs": 0, "cycle_epochs": 5},
        snapshots=2,
        swa={"enabled": True, "start_epoch": 8},
    )
    config["segment"]["recipe"].pop("ema", None)
    config["ensemble"] = {"members": {"segment": list(KEPT)}}
    path.write_text(yaml.safe_dump(config))
    return path


def run(workdir: Path, config: Path, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    command = snakemake_command(workdir, config, *args)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def state_epoch(path: Path) -> int:
    try:
        return checkpoint.load(path)["epoch"]
    except (FileNotFoundError, checkpoint.CheckpointError, KeyError, RuntimeError, EOFError):
        return -1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(args.workdir / "resume.yaml", args.device)
    straight, killed = args.workdir / "straight", args.workdir / "killed"
    for folder in (straight, killed):  # a finished earlier run would leave nothing to kill
        shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    done = run(straight, config, "--cores", 4, TARGET)
    if done.returncode:
        raise SystemExit(f"the straight run failed:\n{done.stderr[-3000:]}")
    straight_s = time.perf_counter() - started
    process = subprocess.Popen(
        snakemake_command(killed, config, "--cores", 4, TARGET),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state = killed / "results" / "checkpoints" / "segment" / "unet_resnet34" / "fold0.pt"
    deadline = time.monotonic() + 300
    while state_epoch(state) < 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if process.poll() is not None:
        raise SystemExit(f"the run to be killed ended first (exit {process.returncode})")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = state_epoch(state)
    if killed_at < 0:
        raise SystemExit("the killed run never wrote its first epoch's state")
    unlock = run(killed, config, "--unlock")
    rerun = run(killed, config, "--cores", 4, "--rerun-incomplete", TARGET)
    if unlock.returncode or rerun.returncode:
        raise SystemExit(f"the rerun failed:\n{unlock.stderr[-2000:]}\n{rerun.stderr[-3000:]}")
    log = (killed / "results" / "logs" / "train_segmenter" / "unet_resnet34_fold0.log").read_text()
    resumed = f"after epoch {killed_at + 1}" in log
    ours_dir = killed / "results" / "segment" / "unet_resnet34" / "fold0"
    theirs_dir = straight / "results" / "segment" / "unet_resnet34" / "fold0"
    members = {}
    for member in KEPT:
        ours = checkpoint.load(ours_dir / f"model_{member}.pt")["model"]
        theirs = checkpoint.load(theirs_dir / f"model_{member}.pt")["model"]
        diffs = [
            (ours[k].float() - theirs[k].float()).abs().max().item()
            for k in theirs
            if torch.is_floating_point(theirs[k])
        ]
        finite = all(torch.isfinite(v).all() for v in ours.values() if torch.is_floating_point(v))
        equal = all(torch.equal(ours[k], theirs[k]) for k in theirs)
        members[member] = {"max_abs_diff": max(diffs), "bit_equal": equal, "finite": finite}
    metrics = pd.read_csv(ours_dir / "metrics.csv")
    reference = pd.read_csv(theirs_dir / "metrics.csv")
    figures = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "straight_run_s": straight_s,
        "killed_after_epoch": killed_at + 1,
        "resumed_not_restarted": resumed,
        "epochs": metrics["epoch"].tolist(),
        "train_loss_max_abs_diff": float(
            (metrics["train_loss"] - reference["train_loss"]).abs().max()
        ),
        "members": members,
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    ok = resumed and metrics["epoch"].tolist() == list(range(1, 11))
    return 0 if ok and all(m["finite"] for m in members.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
