"""profiles/slurm end to end on a real SLURM cluster (in CI: the one-node cluster of .ci/slurm/start.sh).

Skipped where no cluster answers, unless PTXSEG_SLURM=1 (what CI sets), which makes that a failure.
The jobs run on this machine's file system with this Python: sbatch exports the environment.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from dag import ROOT

from ptxseg.data.siim import read_index
from ptxseg.ensemble.submission import validate_submission

pytestmark = pytest.mark.workflow

PROFILE = ROOT / "profiles" / "slurm"
GPU_RULES = ("pretrain_nih", "train_classifier", "train_segmenter")
RESUME_EPOCHS = 6
FOLD0 = "results/segment/unet_resnet34/fold0"
FOLD0_STATE = "results/checkpoints/segment/unet_resnet34/fold0.pt"
# The plugin names each job by its run and puts rule and wildcards into the SLURM comment.
FOLD0_COMMENT = "rule_train_segmenter_wildcards_unet_resnet34_0"


def slurm_problem() -> str | None:
    """Why no SLURM cluster can take jobs here, or None when one answers with a usable node."""
    if shutil.which("sinfo") is None:
        return "sinfo is not on PATH"
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if result.returncode != 0:
        return f"sinfo failed: {result.stderr.strip()}"
    states = [state.rstrip("*~#$@+!%") for state in result.stdout.split()]
    if not {"idle", "mixed", "allocated", "completing"} & set(states):
        return f"no node takes jobs (node states: {states or 'none'})"
    return None


@pytest.fixture(scope="module")
def slurm():
    problem = slurm_problem()
    wanted = os.environ.get("PTXSEG_SLURM", "")
    if wanted == "1" and problem:
        pytest.fail(
            f"PTXSEG_SLURM=1 but SLURM does not answer: {problem}. "
            "Start the CI cluster with .ci/slurm/start.sh (as root)."
        )
    if problem or wanted == "0":
        pytest.skip(
            f"no SLURM cluster ({problem or 'PTXSEG_SLURM=0'}); PTXSEG_SLURM=1 requires one"
        )


def environment() -> dict[str, str]:
    """This interpreter's environment, which sbatch hands on to the jobs (--export=ALL)."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    return env


def snakemake_command(workdir: Path, configfile: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(PROFILE),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        # Test speed and evidence only: poll SLURM from the first second (the plugin backs off
        # by itself), keep every job's SLURM log, log each sbatch command line.
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--slurm-keep-successful-logs",
        "--verbose",
        *args,
    ]


def start(command: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=environment())


def finish(process: subprocess.Popen, log: Path, timeout: float) -> int:
    """Wait for snakemake; past the timeout stop it (it cancels its jobs) and fail."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        stop(process, log)
        pytest.fail(f"snakemake ran past {timeout} s; its output:\n{tail(log)}")


def stop(process: subprocess.Popen, log: Path) -> None:
    """Ctrl-C (snakemake cancels its SLURM jobs and unlocks), then SIGKILL and scancel by run name."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if run_id := re.search(r"SLURM run ID: (\S+)", log.read_text()):
        subprocess.run(["scancel", "--name", run_id[1]], check=False, timeout=30)


def tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:]


def write_config(path: Path, **epochs: int) -> Path:
    """configs/tiny.yaml, with one GPU for every GPU rule (and other epochs where given)."""
    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    for stage in ("pretrain", "train", "predict"):
        config["resources"][stage]["gpu"] = 1
    for stage, value in epochs.items():
        config[stage]["recipe"]["epochs"] = value
    path.write_text(yaml.safe_dump(config))
    return path


def job_table(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> job count, without `all`."""
    table = dry_run_output.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    counts.pop("all", None)
    return counts


@dataclass
class Run:
    workdir: Path
    returncode: int
    output: str
    expected: dict[str, int]  # rule -> jobs, from the dry run
    seconds: float


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory) -> Run:
    """The whole tiny DAG through profiles/slurm (run once; the resume test reuses its results)."""
    workdir = tmp_path_factory.mktemp("slurm")
    config = write_config(workdir / "tiny-gpu.yaml")
    dry = subprocess.run(
        [*snakemake_command(workdir, config), "-n"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        env=environment(),
    )
    assert dry.returncode == 0, dry.stdout[-6000:]
    log = workdir / "snakemake.log"
    started = time.monotonic()
    returncode = finish(start(snakemake_command(workdir, config), log), log, timeout=1500)
    return Run(
        workdir, returncode, log.read_text(), job_table(dry.stdout), time.monotonic() - started
    )


def test_every_rule_runs_as_a_slurm_job_and_the_submission_is_valid(slurm_run):
    run, results = slurm_run, slurm_run.workdir / "results"
    assert run.returncode == 0, f"snakemake failed:\n{run.output[-6000:]}"

    index = read_index(results / "data" / "siim_index.csv")
    validate_submission(results / "submission.csv", index[index["split"] == "test"])

    # Each job: "Job <n> has been submitted with SLURM jobid <id> (log: .../rule_<rule>/...)".
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", run.output)
    assert set(run.expected) >= set(GPU_RULES) | {"demo_siim", "submission"}
    for rule, jobs in run.expected.items():
        logs = [
            Path(path)
            for job_id, path in submitted
            if f"/rule_{rule}/" in path and Path(path).stem == job_id
        ]
        assert len(logs) >= jobs, f"{rule}: {jobs} job(s) expected, SLURM logs: {logs}"
        for log in logs:  # the job's own output, written by SLURM on the node
            assert f"rule {rule}:" in log.read_text(), f"{log} does not show rule {rule} running"

    # GPU rules ask SLURM for one GPU (sbatch --gpus=1) and get it; the others ask for none.
    sbatch = re.findall(r"sbatch call: (sbatch .*)", run.output)
    by_rule: dict[str, list[str]] = {}
    for line in sbatch:
        by_rule.setdefault(re.search(r"--allowed-rules '?(\w+)", line)[1], []).append(line)
    assert set(by_rule) == set(run.expected)
    gpu_rules = {*GPU_RULES, "predict_classifier", "predict_segmenter"}
    for rule, lines in by_rule.items():
        for line in lines:
            assert ("--gpus=1" in line) == (rule in gpu_rules), f"{rule}: {line[:400]}"
    for rule in GPU_RULES:
        for log in (run.workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob("*.log"):
            assert "SLURM_JOB_GPUS" in log.read_text(), f"{log}: no GPU allocated"
    print(f"SLURM run of the tiny DAG: {run.seconds:.0f} s, {len(sbatch)} jobs")


def state_epoch(path: Path) -> int | None:
    """The 0-based epoch of the last training state written, or None while there is none."""
    import torch

    try:
        return torch.load(path, weights_only=True)["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError, pickle.UnpicklingError):
        return None


def running_job(comment: str) -> str | None:
    listing = subprocess.run(
        ["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True, timeout=30
    ).stdout
    for job_id, job_comment, state in (line.split("|") for line in listing.splitlines()):
        if job_comment == comment and state == "RUNNING":
            return job_id
    return None


def test_a_cancelled_training_job_resumes_when_the_run_is_repeated(slurm_run):
    """scancel one segmenter job mid-way (the run fails); the same command then finishes it."""
    assert slurm_run.returncode == 0, "the full run failed: nothing to resume on"
    workdir = slurm_run.workdir  # data stages done: only the retrained fold runs here
    config = write_config(workdir / "tiny-longer.yaml", segment=RESUME_EPOCHS)
    # No retries: the cancelled job must stay failed in the first run.
    command = snakemake_command(workdir, config, f"{FOLD0}/summary.json", "--retries", "0")
    state = workdir / FOLD0_STATE

    first_log = workdir / "resume-1.log"
    first = start(command, first_log)
    deadline = time.monotonic() + 600
    while (epoch := state_epoch(state)) is None or epoch < 1:
        if first.poll() is not None or time.monotonic() > deadline:
            stop(first, first_log)
            pytest.fail(f"no training state after 2 epochs; snakemake said:\n{tail(first_log)}")
        time.sleep(0.1)
    job_id = running_job(FOLD0_COMMENT)
    assert job_id, "the segmenter job is not in squeue as RUNNING"
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    for _ in range(150):  # until SLURM has ended it
        if running_job(FOLD0_COMMENT) is None:
            break
        time.sleep(0.2)
    # Snakemake would notice at its next status check (up to a minute away); stop it now.
    stop(first, first_log)
    cancelled_after = state_epoch(state)
    assert cancelled_after is not None and cancelled_after < RESUME_EPOCHS - 1, (
        f"the job finished before it was cancelled (state epoch {cancelled_after})"
    )
    assert not (workdir / FOLD0 / "summary.json").exists()

    second_log = workdir / "resume-2.log"
    returncode = finish(start(command, second_log), second_log, timeout=600)
    assert returncode == 0, f"the rerun failed:\n{tail(second_log)}"
    job_log = (workdir / "results/logs/train_segmenter/unet_resnet34_fold0.log").read_text()
    resumed = re.search(r"resuming from \S*fold0\.pt after epoch (\d+)", job_log)
    assert resumed, f"the rerun did not resume:\n{job_log[:2000]}"
    assert 2 <= int(resumed[1]) < RESUME_EPOCHS
    metrics = pd.read_csv(workdir / FOLD0 / "metrics.csv")
    assert metrics["epoch"].tolist() == list(range(1, RESUME_EPOCHS + 1))
    assert (workdir / FOLD0 / "summary.json").exists()
    assert not state.exists()  # the state goes once the job is complete
