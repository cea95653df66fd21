"""Where a score was computed: scores.csv's ``scored_at`` columns and ensemble.json's
``oof.cascade_scored_at``.

Three bases: one probability per image (an AUC, a calibration error); masks on the search's maps,
square at one side; or each mask drawn at its image's own size against the label file, the
competition's way. `label` is the text tables show; readers compare `basis`, never the text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from ptxseg.contracts.keys import BadValue, enum_of

if TYPE_CHECKING:
    from ptxseg.scoring.native import NativeTruth

MIXED = "mixed"  # own-size scores over images of more than one size


class Basis(StrEnum):
    IMAGE = "image"  # one probability per image: no mask, no size
    MAPS = "maps"  # masks on the search's maps, ``side`` px square
    OWN_SIZE = "own_size"  # each mask at its image's own size against the label file ``truth``


@dataclass(frozen=True)
class ScoredAt:
    basis: Basis
    side: int | None = None  # MAPS only
    shape: tuple[int, int] | None = None  # OWN_SIZE only: (rows, columns); None where mixed
    truth: str | None = None  # OWN_SIZE only: the label file's name

    def __post_init__(self) -> None:
        maps, own = self.basis == Basis.MAPS, self.basis == Basis.OWN_SIZE
        if maps != (self.side is not None) or (maps and self.side <= 0):
            raise BadValue("size", f"a side in pixels is for maps only, got {self.side!r}")
        if own != (self.truth is not None) or (self.shape is not None and not own):
            raise BadValue("truth", f"a label file is for own-size scores only, got {self.truth!r}")

    @classmethod
    def image_level(cls) -> ScoredAt:
        return cls(Basis.IMAGE)

    @classmethod
    def maps(cls, side: int) -> ScoredAt:
        return cls(Basis.MAPS, side=int(side))

    @classmethod
    def own_size(cls, shapes: Iterable[tuple[int, int]], truth: str) -> ScoredAt:
        distinct = set(shapes)
        return cls(
            Basis.OWN_SIZE, shape=distinct.pop() if len(distinct) == 1 else None, truth=truth
        )

    @classmethod
    def native(cls, truth: NativeTruth, image_ids: Iterable[str]) -> ScoredAt:
        """Each of ``image_ids`` at its own size against ``truth``'s label file."""
        return cls.own_size((truth.shape(i) for i in image_ids), truth.source)

    @property
    def size(self) -> str:
        """The size as its column holds it: '256' (maps), '1024x1024' or 'mixed' (own size)."""
        if self.basis == Basis.MAPS:
            return str(self.side)
        if self.basis == Basis.OWN_SIZE:
            return MIXED if self.shape is None else f"{self.shape[0]}x{self.shape[1]}"
        return ""

    def label(self) -> str:
        """For tables: 'image level', '256 px' or '1024x1024 px (each image's own size, ...)'."""
        if self.basis == Basis.IMAGE:
            return "image level"
        if self.basis == Basis.MAPS:
            return f"{self.side} px"
        return f"{self.size} px (each image's own size, {self.truth})"

    def fields(self) -> dict[str, str]:
        """basis, size and truth as text (empty where they do not apply)."""
        return {"basis": self.basis.value, "size": self.size, "truth": self.truth or ""}

    @classmethod
    def parse(cls, basis: str, size: str, truth: str) -> ScoredAt:
        """The inverse of `fields`; a BadValue naming the field ('basis', 'size', 'truth')."""
        kind = enum_of(Basis, basis, "basis")
        if kind == Basis.MAPS:
            if not size.isdigit():
                raise BadValue("size", f"{size!r} is not a side in pixels")
            return cls(kind, side=int(size), truth=truth or None)
        if kind == Basis.OWN_SIZE:
            if not truth:
                raise BadValue("truth", "empty: an own-size score names its label file")
            return cls(kind, shape=_shape(size), truth=truth)
        if size:
            raise BadValue("size", f"{size!r} given for an image-level score")
        return cls(kind, truth=truth or None)


def _shape(size: str) -> tuple[int, int] | None:
    if size == MIXED:
        return None
    rows, _, columns = size.partition("x")
    if not (rows.isdigit() and columns.isdigit()):
        raise BadValue("size", f"{size!r} is not '<rows>x<columns>' or {MIXED!r}")
    return int(rows), int(columns)
