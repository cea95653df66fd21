"""Fold models loaded when they are first used, and kept loaded only within a memory budget.

A demo ensemble's fold models hold about 6 GB of weights; the cascade averages them, so no two
need be in memory at once. Models are loaded as prediction first asks for them and kept, in that
order, while the sizes of those kept stay within ``budget`` bytes; any other is loaded again at
each use and freed after it. The models always run in the same order, so keeping the first that
fit (rather than the last used) is what keeps most of them loaded under the budget. Imports no
torch: the ONNX backend keeps its sessions here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# The default budget for the weights kept loaded: with the libraries (about 0.9 GiB with torch),
# one model loaded beside them and a round's activations, the demo ensemble's prediction peaks
# under 3 GiB (2.2 GiB with PyTorch at 1 GiB, 2026-12-07).
BUDGET = 3 << 29  # 1.5 GiB


class Resident(Mapping[K, V], Generic[K, V]):
    """``load(key)`` on first use of ``key``; kept while the kept ``sizes`` (bytes, e.g. the
    model files') fit in ``budget`` (None: every model is kept once loaded)."""

    def __init__(
        self, sizes: Mapping[K, int], load: Callable[[K], V], budget: int | None = BUDGET
    ) -> None:
        self.sizes = dict(sizes)
        self._load = load
        self.budget = budget
        self.kept: dict[K, V] = {}
        self.kept_bytes = 0
        self.loads = 0  # how many times a model was loaded, for the benchmark and tests

    def __getitem__(self, key: K) -> V:
        if key in self.kept:
            return self.kept[key]
        size = self.sizes[key]  # KeyError for a key of no model, as a dict
        value = self._load(key)
        self.loads += 1
        if self.budget is None or self.kept_bytes + size <= self.budget:
            self.kept[key] = value
            self.kept_bytes += size
        return value

    def __iter__(self) -> Iterator[K]:
        return iter(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)
