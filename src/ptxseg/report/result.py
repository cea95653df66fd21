"""The report's first section: what the run achieved and where it came from.

The headline is the cross-fitted OOF score (every fold scored by choices made on the other folds)
with its interval, then the in-sample score of the cascade that ships, the all-empty baseline and
the mean Dice on the images with a pneumothorax; above them the data source, the config's hash,
the code's commit and the date the page was built. Numbers are read from scores.csv and
oof_images.csv, as they are written there.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

HEADLINE_LEVEL = "cascade_nested"  # scores.csv's cross-fitted cascade
IN_SAMPLE_LEVEL = "cascade"


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
    def of(cls, scores: pd.DataFrame, images: pd.DataFrame | None) -> Headline | None:
        seg = scores[(scores["kind"] == "segmenter") & (scores["metric"] == "competition")]
        nested = seg[seg["level"] == HEADLINE_LEVEL]
        cascade = seg[seg["level"] == IN_SAMPLE_LEVEL]
        if nested.empty and cascade.empty:
            return None
        baseline = seg[seg["level"] == "all_empty"]
        # At each image's own size: where the cross-fitted row and the all-empty baseline are
        # scored (the in-sample cascade is scored there and on the maps, in either order).
        own = nested["scored_at"].iloc[0] if len(nested) else baseline["scored_at"].iloc[0]
        in_sample = cascade[cascade["scored_at"] == own]["score"]
        row = nested.iloc[0] if len(nested) else cascade[cascade["scored_at"] == own].iloc[0]
        baseline = baseline["score"]
        column = "dice_native_nested" if len(nested) else "dice_native"
        positives_dice, positives = None, 0
        if images is not None and column in images:
            positive = images["truth_pixels_native"] > 0
            positives = int(positive.sum())
            if positives:
                positives_dice = float(images.loc[positive, column].mean())
        return cls(
            score=float(row["score"]),
            low=float(row["interval_low"]) if len(nested) else None,
            high=float(row["interval_high"]) if len(nested) else None,
            cross_fitted=bool(len(nested)),
            in_sample=float(in_sample.iloc[0]) if len(in_sample) else None,
            all_empty=float(baseline.iloc[0]) if len(baseline) else None,
            positives_dice=positives_dice,
            positives=positives,
            images=int(row["images"]),
            scored_at=str(row["scored_at"]),
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
