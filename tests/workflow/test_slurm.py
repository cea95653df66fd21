"""profiles/slurm end to end: every rule a SLURM job asking for the right resources, and a training
job cancelled mid-run that resumes when the run is repeated. Helpers: tests/slurm_cluster.py."""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from slurm_cluster import (
    EFFICIENCY_REPORTS,
    Run,
    finish,
    local_rules,
    require_slurm,
    slurm_required,
    snakemake_command,
    start,
    stop,
    tail,
    whole_tiny_dag,
    write_config,
)

from ptxseg.data.siim import read_index
from ptxseg.ensemble.submission import validate_submission

pytestmark = pytest.mark.workflow

GPU_RULES = ("pretrain_nih", "train_classifier", "train_segmenter")
RESUME_EPOCHS = 6
FOLD0 = "results/segment/unet_resnet34/fold0"
FOLD0_STATE = "results/checkpoints/segment/unet_resnet34/fold0.pt"
# The plugin names each job by its run and puts rule and wildcards into the SLURM comment.
FOLD0_COMMENT = "rule_train_segmenter_wildcards_unet_resnet34_0"


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory) -> Run:
    require_slurm()
    return whole_tiny_dag(tmp_path_factory)


def test_every_rule_runs_as_a_slurm_job_and_the_submission_is_valid(slurm_run):
    run, results = slurm_run, slurm_run.workdir / "results"
    assert run.returncode == 0, f"snakemake failed:\n{run.output[-6000:]}"

    index = read_index(results / "data" / "siim_index.csv")
    validate_submission(results / "submission.csv", index[index["split"] == "test"])

    # The Snakefile's local rules run in Snakemake's process, no job of their own.
    submitted = single_submissions(run.output)
    local = local_rules() & set(run.expected)
    assert set(run.expected) >= set(GPU_RULES) | {"demo_siim", "submission"}
    assert {"submission", "report", "folds_siim"} <= local
    sbatched = {rule: jobs for rule, jobs in run.expected.items() if rule not in local}
    # The profile's array rules (slurm-array-jobs): their folds went to SLURM as one array job
    # each, its task logs named <array id>_<task>.log.
    arrays = array_submissions(run.output)
    array_rules = set(profile_setting("slurm-array-jobs").split(","))
    assert array_rules & set(sbatched) <= {rule for rule, _ in arrays}, arrays
    slurm_logs = run.workdir / ".snakemake" / "slurm_logs"
    for rule, jobs in sbatched.items():
        logs = [
            Path(path)
            for job_id, path in submitted
            if f"/rule_{rule}/" in path and Path(path).stem == job_id
        ]
        for array_rule, tasks in arrays:
            if array_rule == rule:
                assert tasks >= 2, f"{rule}: an array job of {tasks} task"
                task_logs = (slurm_logs / f"rule_{rule}").rglob("*.log")
                logs += [log for log in task_logs if re.fullmatch(r"\d+_\d+", log.stem)]
        assert len(logs) >= jobs, f"{rule}: {jobs} job(s) expected, SLURM logs: {logs}"
        for log in logs:  # the job's own output, written by SLURM on the node
            assert f"rule {rule}:" in log.read_text(), f"{log} does not show rule {rule} running"

    # GPU rules ask SLURM for one GPU (sbatch --gpus=1) and get it; the others ask for none.
    sbatch = re.findall(r"sbatch call: (sbatch .*)", run.output)
    by_rule: dict[str, list[str]] = {}
    for line in sbatch:
        by_rule.setdefault(re.search(r"--allowed-rules '?(\w+)", line)[1], []).append(line)
    assert set(by_rule) == set(sbatched)
    gpu_rules = {
        *GPU_RULES,
        "predict_classifier",
        "predict_segmenter",
        "pseudo_label_nih",  # the tiny config's NIH second round
        "train_segmenter_round2",
    }
    # And the plugin's partition selection (profiles/slurm/partitions.yaml) sends them to the
    # GPU partition, the others to the CPU one.
    for rule, lines in by_rule.items():
        for line in lines:
            assert ("--gpus=1" in line) == (rule in gpu_rules), f"{rule}: {line[:400]}"
            partition = re.search(r" -p '?(\w+)", line)
            expected = "gpu" if rule in gpu_rules else "debug"
            assert partition and partition[1] == expected, f"{rule}: {line[:400]}"
    for rule in local:
        assert re.search(rf"^localrule {rule}:", run.output, re.MULTILINE), f"{rule} did not run"
    for rule in GPU_RULES:
        for log in (run.workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob("*.log"):
            assert "SLURM_JOB_GPUS" in log.read_text(), f"{log}: no GPU allocated"
    print(f"SLURM run of the tiny DAG: {run.seconds:.0f} s, {len(sbatch)} jobs")


def test_the_plugins_efficiency_report_has_a_row_per_job_step(slurm_run):
    """--slurm-efficiency-report (asked for where sacct answers, as in CI): the plugin's CSV has
    one row per job step, with its rule and CPU and memory efficiency."""
    run = slurm_run
    assert run.returncode == 0, f"snakemake failed:\n{run.output[-6000:]}"
    if run.no_accounting:
        message = f"no SLURM accounting ({run.no_accounting}), so no efficiency report"
        if slurm_required():
            pytest.fail(f"PTXSEG_SLURM=1: {message}; .ci/slurm/start.sh sets up slurmdbd")
        pytest.skip(message)
    run_id = re.search(r"SLURM run ID: (\S+)", run.output)[1]
    folder = run.workdir / EFFICIENCY_REPORTS
    reports = list(folder.glob("*.csv"))
    assert reports == [folder / f"efficiency_report_{run_id}.csv"], (
        f"{reports}; snakemake said:\n{run.output[-3000:]}"
    )
    report = pd.read_csv(reports[0], dtype={"JobID": str, "RuleName": str})
    # The plugin keeps the jobs' srun steps (<job>.0; the `batch` steps dropped): one per job
    # submitted on its own, and one per array task but the first, which runs its command in the
    # batch step, without srun (snakemake-executor-plugin-slurm-jobstep 0.6), so has no row.
    expected = {
        job_id: "rule_" + re.search(r"/rule_(\w+)/", log)[1]
        for job_id, log in single_submissions(run.output)
    }
    tasks = re.findall(r"Registered array job task: external_jobid=(\d+)_(\d+)", run.output)
    first_task = {job: min(int(t) for j, t in tasks if j == job) for job, _ in tasks}
    array_rules = tuple(f"rule_{rule}" for rule in profile_setting("slurm-array-jobs").split(","))
    for job, task in tasks:
        if int(task) != first_task[job]:
            expected[f"{job}_{task}"] = array_rules
    assert first_task, "no array job: the profile's array rules did not run as arrays"
    job_ids = report["JobID"].str.split(".").str[0]
    assert sorted(job_ids) == sorted(expected), report[["JobID", "RuleName"]]
    for job_id, rule_name in zip(job_ids, report["RuleName"], strict=True):
        assert rule_name.startswith(expected[job_id]), (job_id, rule_name)
    efficiency = report[["CPU Efficiency (%)", "Memory Usage (%)"]]
    assert efficiency.notna().all().all() and (efficiency >= 0).all().all(), efficiency
    # Every job runs Python, so it used CPU time, and it asked for memory (the config's mem_mb);
    # the seconds-long ones may end before the first memory sample (every 2 s in CI).
    assert (report["CPU Efficiency (%)"] > 0).all(), report
    assert (report["RequestedMem_MB"] > 0).all(), report
    assert (report["Memory Usage (%)"] > 0).any(), report


def single_submissions(output: str) -> list[tuple[str, str]]:
    """(SLURM job id, log path) of each job the plugin submitted on its own (not in an array):
    "Job <n> has been submitted with SLURM jobid <id> (log: .../rule_<rule>/...)"."""
    return re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", output)


def array_submissions(output: str) -> list[tuple[str, int]]:
    """(rule, task count) of each array job the plugin submitted."""
    found = []
    for line in re.findall(r"Submitting array job with sbatch call: (sbatch .*)", output):
        rule = re.search(r"--allowed-rules '?(\w+)", line)[1]
        first, last = map(int, re.search(r"--array=(\d+)-(\d+)", line).groups())
        found.append((rule, last - first + 1))
    return found


def profile_setting(key: str) -> str:
    import yaml
    from dag import ROOT

    return str(yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())[key])


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


def test_a_cancelled_training_job_resumes_when_the_run_is_repeated(slurm_run, tmp_path):
    """scancel one segmenter job mid-way (the run fails); the same command then finishes it."""
    assert slurm_run.returncode == 0, "the full run failed: nothing to resume on"
    # A copy of the finished run (data stages done: only the retrained fold runs here), leaving
    # the shared run as the workflow tests expect it.
    workdir = tmp_path / "resume"
    shutil.copytree(slurm_run.workdir, workdir, symlinks=True)
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
