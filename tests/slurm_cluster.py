"""The tiny DAG through profiles/slurm on a real SLURM cluster (in CI: .ci/slurm/start.sh).

`require_slurm` skips where no cluster answers, unless PTXSEG_SLURM=1 (what CI sets), which makes
that a failure. `whole_tiny_dag` runs the whole DAG once per test run, shared between the xdist
workers: tests/workflow/test_slurm.py checks how it ran, and where PTXSEG_SLURM=1 the workflow
tests check its results too (the `tiny_run` fixture), so CI runs the tiny DAG once, not twice.
Where the cluster has accounting (`sacct` answers; CI's has), that run also makes the SLURM
plugin's efficiency report, into EFFICIENCY_REPORTS in its workdir.
The jobs run on this machine's file system with this Python: sbatch exports the environment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import dag
import pytest
import yaml
from dag import ROOT, built_once, job_counts

PROFILE = ROOT / "profiles" / "slurm"
EFFICIENCY_REPORTS = "slurm-efficiency"  # --slurm-efficiency-report-path, in the run's workdir


def slurm_required() -> bool:
    return os.environ.get("PTXSEG_SLURM", "") == "1"


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


def accounting_problem() -> str | None:
    """Why `sacct` cannot answer here, or None where it does. Without slurmdbd it fails, or
    waits for the database without end: hence the timeout."""
    try:
        result = subprocess.run(["sacct", "-n", "-X"], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        return "sacct is not on PATH"
    except subprocess.TimeoutExpired:
        return "sacct did not answer within 10 s"
    if result.returncode != 0:
        return f"sacct failed: {result.stderr.strip()}"
    return None


def require_slurm() -> None:
    """Skip the calling test where no cluster answers; fail instead where PTXSEG_SLURM=1."""
    problem = slurm_problem()
    wanted = os.environ.get("PTXSEG_SLURM", "")
    if slurm_required() and problem:
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
    """``dag.snakemake_command`` through profiles/slurm."""
    return dag.snakemake_command(
        workdir,
        "--profile",
        PROFILE,
        "--configfile",
        configfile,
        # Test speed and evidence only: poll SLURM from the first second (the plugin backs off
        # by itself), keep every job's SLURM log, log each sbatch command line.
        "--slurm-init-seconds-before-status-checks",
        1,
        "--slurm-keep-successful-logs",
        "--verbose",
        *args,
    )


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


@dataclass
class Run:
    workdir: Path
    returncode: int
    output: str
    expected: dict[str, int]  # rule -> jobs, from the dry run
    seconds: float
    no_accounting: str | None  # why no efficiency report was asked for; None: it was


def whole_tiny_dag(tmp_path_factory) -> Run:
    """The whole tiny DAG through profiles/slurm, run once per test run (all workers share it).

    The outcome is recorded, not raised: a failed run is reported by the tests that use it, and
    a second worker does not start it over.
    """

    def build(workdir: Path) -> None:
        config = write_config(workdir / "tiny-gpu.yaml")
        # The plugin reads its efficiency report from sacct when the run ends: asked for only
        # where accounting answers (the plugin's sacct call has no timeout of its own).
        no_accounting = accounting_problem()
        report = []
        if no_accounting is None:
            report = [
                "--slurm-efficiency-report",
                "--slurm-efficiency-report-path",
                workdir / EFFICIENCY_REPORTS,
            ]
        dry = subprocess.run(
            [*snakemake_command(workdir, config), "-n"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
            env=environment(),
        )
        (workdir / "dry-run.log").write_text(dry.stdout)
        returncode, seconds = dry.returncode, 0.0
        if dry.returncode == 0:
            log = workdir / "snakemake.log"
            started = time.monotonic()
            command = snakemake_command(workdir, config, *report)
            returncode = finish(start(command, log), log, timeout=1500)
            seconds = time.monotonic() - started
        (workdir / "outcome.json").write_text(
            json.dumps(
                {"returncode": returncode, "seconds": seconds, "no_accounting": no_accounting}
            )
        )

    workdir = built_once(tmp_path_factory, "slurm_run", build)
    outcome = json.loads((workdir / "outcome.json").read_text())
    dry_run = (workdir / "dry-run.log").read_text()
    log = workdir / "snakemake.log"
    return Run(
        workdir,
        outcome["returncode"],
        log.read_text() if log.exists() else dry_run,
        job_counts(dry_run) if "Job stats:" in dry_run else {},
        outcome["seconds"],
        outcome["no_accounting"],
    )


def local_rules() -> set[str]:
    """The rules the Snakefile declares local (its `localrules:` block)."""
    text = (ROOT / "Snakefile").read_text()
    block = re.search(r"^localrules:\n((?:    \w+,?\n)+)", text, re.MULTILINE)
    assert block, "the Snakefile declares no localrules"
    return set(re.findall(r"\w+", block[1]))
