"""Process-parallel map for the data stages (decoding and encoding images is CPU-bound)."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def _single_threaded_worker() -> None:
    # One process per core already: OpenCV's own thread pool would only oversubscribe the cores.
    import cv2

    cv2.setNumThreads(1)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "") -> Iterator[T]:
    """A tqdm bar on a terminal, nothing in a log file or under Snakemake/SLURM."""
    return iter(
        tqdm(iterable, total=total, desc=desc, disable=not sys.stderr.isatty(), leave=False)
    )


def parallel_map(
    function: Callable[[T], R],
    items: Iterable[T],
    workers: int = 1,
    chunksize: int | None = None,
    desc: str = "",
) -> Iterator[R]:
    """``map(function, items)`` over ``workers`` processes, in order, with a progress bar.

    With one worker it runs in this process, so a single-core run pays no pickling cost.
    """
    items = list(items)
    workers = max(1, min(workers, len(items) or 1, os.cpu_count() or 1))
    if workers == 1:
        _single_threaded_worker()
        yield from progress(map(function, items), len(items), desc)
        return
    chunksize = chunksize or max(1, min(32, len(items) // (workers * 8)))
    # Not plain fork: a parent whose OpenCV or BLAS thread pools are running can leave their locks
    # held in the child, which then hangs. The fork server is a clean, thread-free process that
    # imports the worker's module once and forks the workers from there.
    context = multiprocessing.get_context("forkserver" if sys.platform == "linux" else "spawn")
    if sys.platform == "linux":
        context.set_forkserver_preload([function.__module__])
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_single_threaded_worker
    ) as pool:
        yield from progress(pool.map(function, items, chunksize=chunksize), len(items), desc)
