"""The report's first section: what the run achieved and where it came from.

The headline is the cross-fitted OOF score (every fold scored by choices made on the other folds)
with its interval, then the in-sample score of the cascade that ships, the all-empty baseline and
the mean Dice on the images with a pneumothorax; above them the data source, the config's hash,
the code's commit and the date the page was built. Numbers are read from scores.csv (its rows at
each image's own size) and oof_images.csv, as they are written there.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ptxseg.contracts.scores import Basis, Kind, Level, Metric, ScoreTable


@dataclass(frozen=True)
class Provenance:
    """Where a page's numbers came from: the data source, the config, the code, the date."""

    source: str  # the config's data.source: 'demo' (synthetic) or 'files'
    config_hash: str
    commit: str
    built: str

    @classmethod
    def of(cls, source: str, config: dict, code_dir: str | Path) -> Provenance:
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        built = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return cls(source, digest, commit_of(code_dir), built)

    def text(self) -> str:
        data = (
            "the synthetic demo data (its numbers test the pipeline and say nothing about real "
            "radiographs)"
            if self.source == "demo"
            else f"data source '{self.source}'"
        )
        return (
            f"Data: {data}. Config sha256 {self.config_hash}; code {self.commit}; "
            f"page built {self.built}."
        )


def commit_of(code_dir: str | Path) -> str:
    """The git commit of the code (with '+changes' where the work tree differs from it), or a
    note that it is not a git checkout."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(code_dir), *args]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "not a git checkout"
    return f"commit {head}" + (" +changes" if dirty else "")


@dataclass(frozen=True)
class Headline:
    """The run's result as scores.csv and oof_images.csv hold it."""

    score: float
    low: float | None
    high: float | None
    cross_fitted: bool
    in_sample: float | None
    all_empty: float | None
    positives_dice: float | None
    positives: int
    images: int
    scored_at: str

    @classmethod
    def of(cls, scores: ScoreTable, images: pd.DataFrame | None) -> Headline | None:
        """From the cascade's rows at each image's own size: the cross-fitted one where the run
        has it (else the in-sample one), the in-sample one and the all-empty baseline."""
        own = scores.select(kind=Kind.SEGMENTER, metric=Metric.COMPETITION, basis=Basis.OWN_SIZE)
        nested = own.one_or_none(level=Level.CASCADE_NESTED)
        in_sample = own.one_or_none(level=Level.CASCADE)
        baseline = own.one_or_none(level=Level.ALL_EMPTY)
        row = nested or in_sample
        if row is None:
            return None
        column = "dice_native_nested" if nested is not None else "dice_native"
        positives_dice, positives = None, 0
        if images is not None and column in images:
            positive = images["truth_pixels_native"] > 0
            positives = int(positive.sum())
            if positives:
                positives_dice = float(images.loc[positive, column].mean())
        low, high = row.interval if row.interval is not None else (None, None)
        return cls(
            score=row.score,
            low=low,
            high=high,
            cross_fitted=nested is not None,
            in_sample=None if in_sample is None else in_sample.score,
            all_empty=None if baseline is None else baseline.score,
            positives_dice=positives_dice,
            positives=positives,
            images=row.images,
            scored_at=row.scored_at.label(),
        )

    def table(self) -> pd.DataFrame:
        """The headline's rows: what, the number, what its choices saw."""
        rows = []
        if self.cross_fitted:
            interval = f"95 % interval {self.low:.4f}-{self.high:.4f}"
            rows.append(
                ("OOF competition score, each fold by choices made on the others", self.score,
                 interval)
            )  # fmt: skip
        else:
            rows.append(("OOF competition score (chosen on these images)", self.score, ""))
        if self.in_sample is not None and self.cross_fitted:
            rows.append(
                ("the cascade that ships, scored on the images it was chosen on", self.in_sample,
                 "optimistic")
            )  # fmt: skip
        if self.all_empty is not None:
            rows.append(("all-empty baseline (every image predicted empty)", self.all_empty, ""))
        if self.positives_dice is not None:
            rows.append(
                (f"mean Dice on the {self.positives} images with a pneumothorax",
                 self.positives_dice, "each fold by choices made on the others"
                 if self.cross_fitted else "")
            )  # fmt: skip
        return pd.DataFrame(rows, columns=["what", "score", "note"])

    def text(self) -> str:
        return (
            f"Competition metric (mean Dice per image, empty vs empty = 1) on {self.images} "
            f"out-of-fold images at {self.scored_at}."
        )
