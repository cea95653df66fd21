"""The jobs of a config's DAG, from Snakemake's own dry run, split the way the scale rehearsal runs them.

A forced dry run (``snakemake -n --forceall``) of the default target prints every job with its
rule, inputs, outputs, log, benchmark and resources; nothing here knows the rules or the layout
beyond what that prints, so the rehearsal follows the config it rehearses:

- **drawn**: the jobs that read or write a kept model file (``ptxseg.layout.model_member``):
  training and prediction, whatever their rules are called. Their outputs cannot exist without
  training; the rehearsal draws the ones later jobs read.
- **post**: the jobs downstream of a drawn job (an input among a drawn or post job's outputs,
  logs or benchmarks): the stages after training, run through Snakemake on the drawn files.
- **data**: every other job with outputs: the data stages, run through Snakemake first.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from snakemake_run import snakemake_command

from ptxseg.layout import model_member

_HEAD = re.compile(r"^\s*(?:local)?rule (\w+):\s*$")
_FIELD = re.compile(r"^\s+(\w+): (.*)$")
_FILE_FIELDS = ("input", "output", "log", "benchmark")


@dataclass(frozen=True, eq=False)  # a job is itself: hashed and compared by identity
class Job:
    rule: str
    jobid: int
    input: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    log: tuple[str, ...] = ()
    benchmark: tuple[str, ...] = ()
    wildcards: dict = field(default_factory=dict)
    resources: dict = field(default_factory=dict)

    @property
    def products(self) -> tuple[str, ...]:
        """Every file the job writes: outputs, log, benchmark (what later jobs may read)."""
        return self.output + self.log + self.benchmark

    @property
    def touches_models(self) -> bool:
        return any(model_member(p) is not None for p in self.input + self.output)


def parse_dry_run(text: str) -> list[Job]:
    """The jobs of a dry run's output, in its order (``all`` and other target rules included)."""
    jobs, current = [], None
    for line in text.splitlines():
        if head := _HEAD.match(line):
            current = {"rule": head[1]}
            jobs.append(current)
            continue
        found = _FIELD.match(line)
        if current is None or not found:
            if not line.startswith((" ", "\t")):
                current = None  # the block ended (a timestamp, the job stats)
            continue
        key, value = found[1], found[2].strip()
        if key in _FILE_FIELDS:
            current[key] = tuple(v.strip() for v in value.split(", ") if v.strip())
        elif key == "jobid":
            current["jobid"] = int(value)
        elif key in ("wildcards", "resources"):
            current[key] = dict(item.split("=", 1) for item in value.split(", ") if "=" in item)
    missing = [j["rule"] for j in jobs if "jobid" not in j]
    if missing:
        raise ValueError(f"dry run: no jobid for job(s) of rule(s) {sorted(set(missing))}")
    return [Job(**j) for j in jobs]


def dry_run(workdir: Path, config: Path, *targets: str) -> list[Job]:
    """Every job of ``targets`` (the default target where none), as if nothing existed yet."""
    command = snakemake_command(workdir, config, "-n", "--forceall", "--nolock", *targets)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dry run failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return parse_dry_run(result.stdout)


@dataclass(frozen=True)
class Plan:
    data: list[Job]
    drawn: list[Job]
    post: list[Job]

    def drawn_inputs(self) -> dict[str, Job]:
        """Each file a post job reads that a drawn job writes, with that job: what to draw."""
        producer = {p: job for job in self.drawn for p in job.products}
        return {p: producer[p] for job in self.post for p in job.input if p in producer}


def plan(jobs: Iterable[Job]) -> Plan:
    jobs = [j for j in jobs if j.output]  # target rules (`all`) write nothing
    drawn = [j for j in jobs if j.touches_models]
    downstream = {p for j in drawn for p in j.products}
    post: list[Job] = []
    changed = True
    while changed:  # to a fixed point: the jobs are not in execution order
        changed = False
        for job in jobs:
            if job in drawn or job in post or not downstream.intersection(job.input):
                continue
            post.append(job)
            downstream.update(job.products)
            changed = True
    post.sort(key=jobs.index)
    data = [j for j in jobs if j not in drawn and j not in post]
    return Plan(data, drawn, post)


def rules_of(jobs: Iterable[Job]) -> list[str]:
    """The jobs' rules, each once, in the jobs' order."""
    return list(dict.fromkeys(j.rule for j in jobs))


def outputs_by_rule(jobs: Iterable[Job]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for job in jobs:
        found.setdefault(job.rule, []).extend(job.output)
    return found


def memory_by_rule(jobs: Iterable[Job]) -> dict[str, int]:
    """Each rule's mem_mb as Snakemake resolves it for the config."""
    return {j.rule: int(j.resources["mem_mb"]) for j in jobs if "mem_mb" in j.resources}
