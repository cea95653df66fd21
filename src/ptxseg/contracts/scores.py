"""scores.csv, typed: what every score of the ensemble search is (`ScoreRow`), and the table
readers query (`ScoreTable.select`, `ScoreTable.one`) instead of filtering text.

A row says which model or combination it scores (``kind``, ``level``, ``arch``, ``fold``,
``member``), by which ``metric``, on how many ``images``, where (`ScoredAt`: the label in
``scored_at`` for people, ``scored_basis``, ``scored_size`` and ``scored_truth`` for programs),
at which thresholds (``cascade_*``), with its interval where it has one, and what its number was
chosen on (``selected_on``, derived from the rest: `selected_on`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from ptxseg.contracts.keys import RERUN, BadValue, enum_of
from ptxseg.contracts.scored_at import Basis, ScoredAt
from ptxseg.io import atomic
from ptxseg.scoring.cascade import Cascade

__all__ = [
    "COLUMNS",
    "Basis",
    "Kind",
    "Level",
    "Metric",
    "ScoreQueryError",
    "ScoreRow",
    "ScoreTable",
    "ScoredAt",
    "SelectedOn",
    "selected_on",
]


class Kind(StrEnum):
    CLASSIFIER = "classifier"
    GATE = "gate"  # the cascade's image-level probability: classifiers and heads blended
    HEAD = "head"  # a segmenter's classification head
    SEGMENTER = "segmenter"


class Level(StrEnum):
    SINGLE = "single"  # one kept model of one fold
    ARCHITECTURE = "architecture"  # an architecture's kept members averaged, all folds
    BLEND = "blend"
    UNCALIBRATED = "uncalibrated"  # the gate before its calibration
    CALIBRATED = "calibrated"  # and after (``member``: the method)
    ALL_EMPTY = "all_empty"  # every image predicted empty
    CASCADE = "cascade"  # the cascade that ships
    CASCADE_UNGATED = "cascade_ungated"  # the same blend's best cascade without a gate
    CASCADE_GATED = "cascade_gated"  # and behind its best gate above 0
    CASCADE_NESTED = "cascade_nested"  # each fold by choices made on the other folds


class Metric(StrEnum):
    AUC = "auc"
    BRIER = "brier"
    ECE = "ece"
    COMPETITION = "competition"  # mean Dice per image, empty vs empty = 1
    COMPETITION_DEFAULT = "competition_default"  # at top 0.5, no area, bottom 0.5
    COMPETITION_TUNED = "competition_tuned"  # at its own best triplet


class SelectedOn(StrEnum):
    """How a score relates to the choices (scores.csv's selected_on, ensemble.json's estimates)."""

    SAME_IMAGES = "same images"  # chosen on the images it scores: optimistic
    OTHER_FOLDS = "other folds"  # each fold scored by choices made without it
    NOTHING = "nothing chosen"  # fixed settings, or one model's own output


# The levels whose scores were maximised on their own images.
_CHOSEN_LEVELS = {Level.BLEND, Level.CASCADE, Level.CASCADE_UNGATED, Level.CASCADE_GATED}


def selected_on(kind: Kind, level: Level, metric: Metric) -> SelectedOn:
    """Whether a score was used to choose something on the same images: blends, cascades, tuned
    thresholds and the gate (its weights by this AUC; its calibration's method by the cross-fitted
    Brier score of these images, though each fold's map is fitted on the others) were; the
    cross-fitted cascade was not."""
    if level == Level.CASCADE_NESTED:
        return SelectedOn.OTHER_FOLDS
    chosen = level in _CHOSEN_LEVELS or metric == Metric.COMPETITION_TUNED
    return SelectedOn.SAME_IMAGES if chosen or kind == Kind.GATE else SelectedOn.NOTHING


CASCADE_KEYS = tuple(f.name for f in fields(Cascade))
COLUMNS = (
    "kind",
    "level",
    "arch",
    "fold",
    "member",
    "metric",
    "scored_at",
    "scored_basis",
    "scored_size",
    "scored_truth",
    "images",
    "score",
    "selected_on",
    *(f"cascade_{k}" for k in CASCADE_KEYS),
    "interval_low",
    "interval_high",
    "all_empty",
)


@dataclass(frozen=True)
class ScoreRow:
    kind: Kind
    level: Level
    metric: Metric
    scored_at: ScoredAt
    images: int
    score: float  # NaN where it cannot be computed (an AUC on one class)
    arch: str | None = None
    fold: int | None = None
    member: str | None = None  # a kept member; for the calibrated gate, the calibration method
    cascade: Cascade | None = None  # the thresholds the score was taken at
    interval: tuple[float, float] | None = None  # the cross-fitted score's bootstrap interval
    # What predicting nothing scores on the same images at the same size (competition rows of
    # segmenter maps): a model whose score equals it draws no mask worth drawing.
    all_empty: float | None = None

    @property
    def at_baseline(self) -> bool:
        """The score is the all-empty baseline of its images (to float rounding)."""
        return self.all_empty is not None and math.isclose(
            self.score, self.all_empty, rel_tol=0, abs_tol=1e-9
        )

    @property
    def selected_on(self) -> SelectedOn:
        return selected_on(self.kind, self.level, self.metric)

    def record(self) -> dict[str, Any]:
        """The row's CSV columns (`COLUMNS`), None where empty."""
        scored = self.scored_at.fields()
        cascade = self.cascade.as_dict() if self.cascade is not None else {}
        low, high = self.interval if self.interval is not None else (None, None)
        return {
            "kind": self.kind.value,
            "level": self.level.value,
            "arch": self.arch,
            "fold": self.fold,
            "member": self.member,
            "metric": self.metric.value,
            "scored_at": self.scored_at.label(),
            **{f"scored_{k}": v or None for k, v in scored.items()},
            "images": self.images,
            "score": self.score,
            "selected_on": self.selected_on.value,
            **{f"cascade_{k}": cascade.get(k) for k in CASCADE_KEYS},
            "interval_low": low,
            "interval_high": high,
            "all_empty": self.all_empty,
        }

    @classmethod
    def from_record(cls, record: dict[str, str]) -> ScoreRow:
        """A row from its CSV columns as text ('' where empty); a BadValue naming the column."""
        text = {k: record[k].strip() for k in COLUMNS}
        try:
            scored_at = ScoredAt.parse(
                text["scored_basis"], text["scored_size"], text["scored_truth"]
            )
        except BadValue as error:
            raise BadValue(f"scored_{error.key}", error.problem) from None
        row = cls(
            kind=enum_of(Kind, text["kind"], "kind"),
            level=enum_of(Level, text["level"], "level"),
            metric=enum_of(Metric, text["metric"], "metric"),
            scored_at=scored_at,
            images=_integer(text, "images"),
            score=_number(text, "score", empty=math.nan),
            arch=text["arch"] or None,
            fold=None if not text["fold"] else _integer(text, "fold"),
            member=text["member"] or None,
            cascade=_cascade(text),
            interval=_interval(text),
            all_empty=None if not text["all_empty"] else _number(text, "all_empty"),
        )
        if text["scored_at"] != scored_at.label():
            raise BadValue(
                "scored_at", f"{text['scored_at']!r}, its other columns say {scored_at.label()!r}"
            )
        if text["selected_on"] != row.selected_on.value:
            raise BadValue(
                "selected_on",
                f"{text['selected_on']!r}, a {row.level} row is {row.selected_on.value!r}",
            )
        return row


def _number(text: dict[str, str], column: str, empty: float | None = None) -> float:
    if not text[column] and empty is not None:
        return empty
    try:
        return float(text[column])
    except ValueError:
        raise BadValue(column, f"{text[column]!r} is not a number") from None


def _integer(text: dict[str, str], column: str) -> int:
    if not text[column].isdigit():
        raise BadValue(column, f"{text[column]!r} is not a whole number")
    return int(text[column])


def _cascade(text: dict[str, str]) -> Cascade | None:
    columns = [f"cascade_{k}" for k in CASCADE_KEYS]
    given = [c for c in columns if text[c]]
    if not given:
        return None
    if len(given) < len(columns):
        raise BadValue(
            next(c for c in columns if not text[c]), "empty beside the other cascade_ columns"
        )
    return Cascade(**{k: _number(text, c) for k, c in zip(CASCADE_KEYS, columns, strict=True)})


def _interval(text: dict[str, str]) -> tuple[float, float] | None:
    if not text["interval_low"] and not text["interval_high"]:
        return None
    return _number(text, "interval_low"), _number(text, "interval_high")


class ScoreQueryError(LookupError):
    """A query for one score row that matched none, or several."""


# What `ScoreTable.select` filters on: a row's attributes, and its scored_at's basis.
_QUERY_KEYS = ("kind", "level", "metric", "basis", "arch", "fold", "member")


@dataclass(frozen=True)
class ScoreTable:
    rows: tuple[ScoreRow, ...] = ()
    source: str = "scores.csv"  # the file it was read from, for messages

    def __iter__(self) -> Iterator[ScoreRow]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, **where: Any) -> ScoreTable:
        """The rows whose ``kind``, ``level``, ``metric``, ``basis`` (of scored_at), ``arch``,
        ``fold`` or ``member`` equal the value given, or one of them where a tuple, list or set
        is given; in the table's order."""
        unknown = sorted(set(where) - set(_QUERY_KEYS))
        if unknown:
            raise TypeError(f"ScoreTable.select: unknown key(s) {unknown}; known: {_QUERY_KEYS}")
        wanted = {
            k: set(v) if isinstance(v, tuple | list | set | frozenset) else {v}
            for k, v in where.items()
        }
        rows = tuple(
            row for row in self.rows if all(_value(row, k) in v for k, v in wanted.items())
        )
        return ScoreTable(rows, self.source)

    def one_or_none(self, **where: Any) -> ScoreRow | None:
        """The one row matching ``where`` (as `select`), None where none does; several are a
        ScoreQueryError."""
        found = self.select(**where)
        if len(found) > 1:
            raise ScoreQueryError(
                f"{self.source}: {len(found)} score rows with {_query(where)}, expected one"
            )
        return found.rows[0] if found.rows else None

    def one(self, **where: Any) -> ScoreRow:
        """The one row matching ``where``; none or several are a ScoreQueryError naming both."""
        row = self.one_or_none(**where)
        if row is None:
            raise ScoreQueryError(f"{self.source}: no score row with {_query(where)}")
        return row

    def frame(self) -> pd.DataFrame:
        """Every row's `COLUMNS` (integers nullable, empty text as NA), for tables and CSV."""
        frame = pd.DataFrame([row.record() for row in self.rows], columns=list(COLUMNS))
        return frame.astype({"fold": "Int64", "images": "Int64"})

    def write(self, path: str | os.PathLike) -> None:
        atomic.write_csv(path, self.frame())

    @classmethod
    def read(cls, path: str | os.PathLike) -> ScoreTable:
        """Every row validated; a ValueError naming the file, the line and the column at fault."""
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        missing = [c for c in COLUMNS if c not in raw.columns]
        if missing:
            raise ValueError(f"{path}: column(s) {', '.join(missing)} missing; {RERUN}")
        rows = []
        for line, record in enumerate(raw.to_dict("records"), start=2):  # line 1: the header
            try:
                rows.append(ScoreRow.from_record(record))
            except BadValue as error:
                raise ValueError(
                    f"{path}: line {line}, column {error.key!r}: {error.problem}"
                ) from None
        return cls(tuple(rows), str(Path(path)))


def _value(row: ScoreRow, key: str) -> Any:
    return row.scored_at.basis if key == "basis" else getattr(row, key)


def _query(where: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in where.items()) or "no condition"
