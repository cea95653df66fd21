"""The whole demo DAG, as `make demo` runs it: `snakemake --cores all` on config.yaml.

Target: at most 15 minutes on 2 cores and 24 GiB (3 NIH pretrainings, 20 classifier and 15
segmenter fold models, test predictions, the ensemble search and the submission). Prints the wall
time, the ratio to the 15-minute budget, and the slowest rules from Snakemake's benchmark files.

    python benchmarks/bench_demo.py [--cores all] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from snakemake_run import ROOT, snakemake_command

BUDGET_S = 15 * 60


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cores", default="all")
    parser.add_argument(
        "--keep", type=Path, help="run in this folder and keep it (default: a temp dir)"
    )
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench_demo_"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = snakemake_command(workdir, ROOT / "config.yaml", "--cores", args.cores)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        print(result.stderr[-3000:], file=sys.stderr)
        return result.returncode
    rows = []
    for tsv in (workdir / "results" / "benchmarks").glob("*/*.tsv"):
        rows.append({"rule": tsv.parent.name, "seconds": pd.read_csv(tsv, sep="\t")["s"].iloc[-1]})
    table = (
        pd.DataFrame(rows)
        .groupby("rule")["seconds"]
        .agg(["count", "sum", "mean"])
        .sort_values("sum")
    )
    print(f"demo DAG on {os.cpu_count()} cores: {seconds / 60:.1f} min wall ({len(rows)} jobs)")
    print(table.round(1).to_string())
    print(
        f"RATIO wall time vs the 15-minute budget: {seconds / BUDGET_S:.2f}  "
        f"(target <= 1: {'met' if seconds <= BUDGET_S else 'NOT met'})"
    )
    if args.keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
