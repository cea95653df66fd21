"""Fold models loaded when they are first used, and kept loaded only within a memory budget.

A demo ensemble's fold models hold about 6 GB of weights; the cascade averages them, so no two
need be in memory at once. Models are loaded as prediction first asks for them and kept, in that
order, while the sizes of those kept stay within ``budget`` bytes; any other is loaded again at
each use and freed after it. The models always run in the same order, so keeping the first that
fit (rather than the last used) is what keeps most of them loaded under the budget. Taken in
order (`in_order`), the next models load on other threads while one is used. Imports no torch:
the ONNX backend keeps its sessions here too.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# The default budget for the weights kept loaded: with the libraries (about 0.9 GiB with torch),
# one model loaded beside them and a round's activations, the demo ensemble's prediction peaks
# under 3 GiB (2.2 GiB with PyTorch at 1 GiB, 2026-12-07).
BUDGET = 3 << 29  # 1.5 GiB

_NOT_LOADED = object()


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
        return self._value(key, _NOT_LOADED)

    def in_order(self, keys: Iterable[K], ahead: int = 1) -> Iterator[V]:
        """The values of ``keys`` in turn, as ``self[key]``; while the caller uses one, the next
        ``ahead`` that are not kept load on as many threads. Loading reads a file and builds
        (the disk, Python; onnxruntime's sessions in native code that releases the GIL), using a
        model computes (native code that releases the GIL): on two cores they overlap. Up to
        ``ahead`` models more are in memory at a time; an error loading one is raised at its
        turn. Once all are used, the memory freed models held goes back to the system
        (`release_freed_memory`)."""
        keys = list(keys)
        with ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="ptxseg-load") as pool:

            def start(i: int) -> Future | None:
                if i < len(keys) and keys[i] not in self.kept:
                    return pool.submit(self._load, keys[i])
                return None

            loading = deque(start(i) for i in range(ahead))  # keys[i], ..., keys[i + ahead - 1]
            for i, key in enumerate(keys):
                future = loading.popleft()
                loaded = future.result() if future is not None else _NOT_LOADED
                loading.append(start(i + ahead))
                yield self._value(key, loaded)
                del loaded, future  # one not kept is freed before the one after next loads
        release_freed_memory()

    def _value(self, key: K, loaded: Any) -> V:
        if key in self.kept:
            return self.kept[key]
        size = self.sizes[key]  # KeyError for a key of no model, as a dict
        value = self._load(key) if loaded is _NOT_LOADED else loaded
        self.loads += 1
        if self.budget is None or self.kept_bytes + size <= self.budget:
            self.kept[key] = value
            self.kept_bytes += size
        return value

    def __iter__(self) -> Iterator[K]:
        return iter(self.sizes)

    def __len__(self) -> int:
        return len(self.sizes)


def release_freed_memory() -> None:
    """Hand the memory that freed models held back to the system (glibc's ``malloc_trim``; a
    no-op elsewhere). Each loading thread allocates from a malloc arena of its own, which keeps
    what a freed model held for that thread's next allocations. The demo ensemble's 41-image
    run (2026-12-07, benchmarks/README.md): onnxruntime with two loaders peaked at 3.24-3.97 GiB
    without it, 2.92-2.96 with it; PyTorch 3.01 against 2.77 GiB."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def in_order(models: Mapping[K, V], keys: Iterable[K], ahead: int = 1) -> Iterator[V]:
    """``models[key]`` for each of ``keys``; a `Resident` (or a mapping over one, with its own
    ``in_order``) loads the next ``ahead`` while one is used."""
    ordered = getattr(models, "in_order", None)
    return ordered(keys, ahead) if ordered is not None else (models[key] for key in keys)
