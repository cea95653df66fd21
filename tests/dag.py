"""Running the real DAG from tests: Snakemake in a subprocess, configs derived from the shipped ones."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]  # the repository

# What Snakemake reads when it runs from the repository root: the Snakefile, its rules, schemas
# and scripts, the embedded default config and the shipped ones, the conda environment files.
CHECKOUT_FILES = ("Snakefile", "config.yaml", "configs", "workflow", "envs", "profiles")
# What a run in the checkout writes: the user's own runs (`make demo`), never a test's.
RUN_FOLDERS = ("results", ".snakemake")


def snakemake_command(workdir, *args) -> list[str]:
    """This checkout's Snakefile, run by this interpreter in ``workdir``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        *map(str, args),
    ]


def checkout_copy(dest) -> Path:
    """The files of ``CHECKOUT_FILES`` copied to ``dest``, for a test that runs Snakemake the way a
    user does from the repository root (shipped configs named relative to it, the Snakefile found
    there): it runs in the copy, never in the checkout, whose results/ and .snakemake/ hold the
    user's own runs (`make demo` before `make test` would make a dry run there plan nothing)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in CHECKOUT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def run_state(root=ROOT) -> dict[str, tuple[int, int]]:
    """Every entry under ``root``'s results/ and .snakemake/ (the folders too) -> its modification
    time (ns) and size: a file written, added or removed there changes it (conftest.py compares
    the checkout's before and after the test session)."""
    state = {}
    for name in RUN_FOLDERS:
        for folder, _, files in os.walk(Path(root) / name):
            for path in (folder, *(os.path.join(folder, file) for file in files)):
                try:
                    stat = os.lstat(path)
                except FileNotFoundError:  # removed while walked: absent from the state
                    continue
                state[os.path.relpath(path, root)] = (stat.st_mtime_ns, stat.st_size)
    return state


def state_changes(before: dict, after: dict) -> list[str]:
    """The entries added, removed or changed between two `run_state`s, sorted."""
    return sorted(
        [f"added {p}" for p in after.keys() - before.keys()]
        + [f"removed {p}" for p in before.keys() - after.keys()]
        + [f"changed {p}" for p in before.keys() & after.keys() if before[p] != after[p]]
    )


def snakemake(workdir, *args, check=True, timeout=600):
    command = snakemake_command(workdir, *args)
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def train_first_segmenter_fold(workdir, config):
    """The unet_resnet34 fold-0 training job (and what it needs) on ``config``, on one core;
    returns Snakemake's result and the job's log (empty where the job never started)."""
    result = snakemake(
        workdir,
        "results/segment/unet_resnet34/fold0/summary.json",
        "--cores",
        1,
        "--configfile",
        config,
        check=False,
    )
    log = Path(workdir) / "results" / "logs" / "train_segmenter" / "unet_resnet34_fold0.log"
    return result, log.read_text() if log.exists() else ""


def write_config(path, base, **sections):
    config = yaml.safe_load((ROOT / base).read_text())
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(config))
    return path


def full_config_with_stand_ins(tmp_path) -> Path:
    """configs/full.yaml reading empty stand-ins of the real downloads (same layout), so that
    its DAG builds for a dry run."""
    data = tmp_path / "data"
    for folder in ("train", "test", "nih"):
        (data / folder).mkdir(parents=True)
    (data / "train-rle.csv").write_text("ImageId, EncodedPixels\n")
    (data / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    return write_config(
        tmp_path / "full.yaml",
        "configs/full.yaml",
        data={
            "source": "files",
            "siim": {
                "train_dicom_dir": str(data / "train"),
                "test_dicom_dir": str(data / "test"),
                "train_rle_csv": str(data / "train-rle.csv"),
            },
            "nih": {
                "image_dir": str(data / "nih"),
                "labels_csv": str(data / "Data_Entry_2017.csv"),
            },
        },
    )


def job_counts(dry_run_output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run: rule -> job count, without `all`."""
    table = dry_run_output.split("Job stats:", 1)[1].split("total", 1)[0]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}
    counts.pop("all", None)
    return counts


def files_config(tmp_path, data_root, **data):
    return write_config(
        tmp_path / "files.yaml",
        "configs/tiny.yaml",
        data={
            "source": "files",
            "siim": {
                "train_dicom_dir": str(data_root / "siim" / "dicom-images-train"),
                "test_dicom_dir": str(data_root / "siim" / "dicom-images-test"),
                "train_rle_csv": str(data_root / "siim" / "train-rle.csv"),
            },
            "nih": {
                "image_dir": str(data_root / "nih" / "images"),
                "labels_csv": str(data_root / "nih" / "Data_Entry_2017.csv"),
            },
            **data,
        },
        folds={"n_folds": 2, "group_by": "patient"},
    )


def leftovers(results):
    return [p for p in results.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


@contextmanager
def freed_after(request, folder: Path):
    """Yields ``folder`` and removes it when the fixture's scope ends, unless a test failed in it
    (kept to read): a module's DAG run holds gigabytes the later modules' tests need."""
    failures = request.session.testsfailed
    yield folder
    if request.session.testsfailed == failures:
        shutil.rmtree(folder, ignore_errors=True)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """A folder built once per test run, also when pytest-xdist workers share the run.

    Session fixtures run once per worker; the workers' temp folders share a parent, so the first
    worker to get the lock builds there and the others reuse the result. A failed build leaves no
    completion mark and the next worker to ask builds afresh.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder
