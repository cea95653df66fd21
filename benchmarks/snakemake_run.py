"""The Snakemake command line the benchmarks run: this checkout's Snakefile, this interpreter."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def snakemake_command(workdir: Path, config: Path, *args) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(config),
        *map(str, args),
    ]
