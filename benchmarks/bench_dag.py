"""Building the full recipe's DAG through the SLURM profile: `snakemake -n --profile profiles/slurm`.

Target: under 10 s for configs/full.yaml (5 folds, 3 sizes, every architecture: several hundred
jobs). The data paths of the full config are pointed at empty stand-ins (a dry run only checks
that inputs exist), so no data set is needed. The baseline, measured in the same run, is the bare
start-up of Snakemake (`snakemake --version`): the ratio says how much the DAG itself costs.
Best of --repeat runs each.

    python benchmarks/bench_dag.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 10.0


def stand_in_data(folder: Path) -> Path:
    """A config overlay naming empty folders and files in place of the real downloads."""
    for name in ("siim-train", "siim-test", "nih-images"):
        (folder / name).mkdir()
    for name in ("train-rle.csv", "Data_Entry_2017.csv"):
        (folder / name).touch()
    overlay = {
        "data": {
            "siim": {
                "train_dicom_dir": str(folder / "siim-train"),
                "test_dicom_dir": str(folder / "siim-test"),
                "train_rle_csv": str(folder / "train-rle.csv"),
            },
            "nih": {
                "image_dir": str(folder / "nih-images"),
                "labels_csv": str(folder / "Data_Entry_2017.csv"),
            },
        }
    }
    path = folder / "paths.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds, result.stdout + result.stderr


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_dag_") as tmp:
        folder = Path(tmp)
        overlay = stand_in_data(folder)
        snakemake = [sys.executable, "-m", "snakemake"]
        dry_run = [
            *snakemake,
            "-n",
            "--profile",
            str(ROOT / "profiles" / "slurm"),
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(folder / "run"),
            "--configfile",
            str(ROOT / "configs" / "full.yaml"),
            str(overlay),
        ]
        bare = min(timed([*snakemake, "--version"])[0] for _ in range(args.repeat))
        runs = [timed(dry_run) for _ in range(args.repeat)]
    seconds = min(run[0] for run in runs)
    jobs = re.search(r"^total\s+(\d+)", runs[0][1], re.M)
    print(f"snakemake --version (bare start-up): {bare:.2f} s")
    print(
        f"snakemake -n --profile profiles/slurm, configs/full.yaml "
        f"({jobs[1] if jobs else '?'} jobs): {seconds:.2f} s (best of {args.repeat})"
    )
    print(f"RATIO DAG build vs bare start-up: {seconds / bare:.2f}")
    print(
        f"target: under {TARGET_S:.0f} s: {'met' if seconds < TARGET_S else 'NOT met'} "
        f"({seconds:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
