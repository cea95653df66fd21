"""Reading a JSON object key by key, every error naming the file and the key's full path."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

E = TypeVar("E", bound=StrEnum)

RERUN = "rerun the ensemble rule (snakemake results/ensemble/ensemble.json)"


class EnsembleNotFoundError(FileNotFoundError):
    """The results folder holds no trained ensemble (or lacks one of its model files)."""


class EnsembleSpecError(ValueError):
    """ensemble.json or manifest.json lacks a key its reader needs, or holds a bad value."""


class BadValue(ValueError):
    """A value that does not fit its field; ``key`` names the field, for the caller's message."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


def enum_of(kind: type[E], value: Any, key: str) -> E:
    """``value`` as a member of ``kind``, or a BadValue listing the members."""
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise BadValue(key, f"{value!r} is not one of: {known}") from None


@dataclass(frozen=True)
class Keys:
    """One JSON object of ``source`` at ``path`` (empty at the top, 'oof.' below it)."""

    source: str
    mapping: dict[str, Any]
    path: str = ""

    def fail(self, key: str, problem: str) -> NoReturn:
        raise EnsembleSpecError(f"{self.source}: key {self.path + key!r} {problem}")

    def has(self, key: str) -> bool:
        return key in self.mapping

    def need(self, key: str) -> Any:
        if key not in self.mapping:
            self.fail(key, f"missing; {RERUN}")
        return self.mapping[key]

    def child(self, key: str) -> Keys:
        value = self.need(key)
        if not isinstance(value, dict):
            self.fail(key, f"is not an object but {type(value).__name__}")
        return Keys(self.source, value, f"{self.path}{key}.")

    def number(self, key: str) -> float:
        value = self.need(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"is not a number but {value!r}")
        return float(value)

    def optional_number(self, key: str) -> float | None:
        return None if self.mapping.get(key) is None else self.number(key)

    def integer(self, key: str) -> int:
        value = self.need(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, f"is not an integer but {value!r}")
        return value

    def text(self, key: str) -> str:
        value = self.need(key)
        if not isinstance(value, str):
            self.fail(key, f"is not a string but {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.need(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(key, f"is not a list of strings but {value!r}")
        return tuple(value)

    def numbers(self, key: str) -> tuple[float, ...]:
        value = self.need(key)
        if not isinstance(value, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            self.fail(key, f"is not a list of numbers but {value!r}")
        return tuple(float(v) for v in value)

    def objects(self, key: str) -> list[Keys]:
        value = self.need(key)
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.fail(key, "is not a list of objects")
        return [Keys(self.source, v, f"{self.path}{key}[{k}].") for k, v in enumerate(value)]

    def weights(self, key: str) -> dict[str, float]:
        """A name -> weight object, in the file's order."""
        weights = self.child(key)
        return {name: weights.number(name) for name in weights.mapping}

    def enum(self, kind: type[E], key: str) -> E:
        try:
            return enum_of(kind, self.need(key), key)
        except BadValue as error:
            self.fail(key, error.problem)
