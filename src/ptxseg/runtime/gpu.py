"""GPU placement for local runs: each training process claims one free GPU by a lock file.

Under SLURM (or whenever ``CUDA_VISIBLE_DEVICES`` is already set) the scheduler has chosen the
device and nothing happens. On a workstation with several GPUs, ``snakemake --cores all`` starts
several training jobs at once; without placement they would all land on GPU 0. A claim takes an
exclusive ``flock`` on ``<lock_dir>/gpu<i>.lock`` for the first free ``i`` and narrows the process
to that GPU; the kernel drops the lock when the process ends, however it ends.

    with claim_gpu() as gpu:  # before anything initialises CUDA
        train(...)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

DEFAULT_LOCK_DIR = "/tmp/ptxseg-gpu-locks"
VISIBLE = "CUDA_VISIBLE_DEVICES"


def default_lock_dir() -> Path:
    """``$PTXSEG_GPU_LOCKS``, else /tmp/ptxseg-gpu-locks (shared by every run on the machine)."""
    return Path(os.environ.get("PTXSEG_GPU_LOCKS") or DEFAULT_LOCK_DIR)


def _visible_gpus() -> int:
    import torch

    # NVML-based in current torch: counts without initialising CUDA, so the variable set below
    # still applies to this process.
    return torch.cuda.device_count()


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive lock on ``path``, or None when another holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for people looking
    return fd


def _claim_first_free(folder: Path, count: int) -> tuple[int, int] | None:
    """(index, locked descriptor) of the first GPU whose lock is free, or None."""
    for index in range(count):
        fd = _try_lock(folder / f"gpu{index}.lock")
        if fd is not None:
            return index, fd
    return None


@contextlib.contextmanager
def claim_gpu(
    n_gpus: int | None = None,
    lock_dir: str | os.PathLike | None = None,
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> Iterator[int | None]:
    """Claim one GPU for this process; yield its index, or None where there is nothing to choose.

    None (and no change) when ``CUDA_VISIBLE_DEVICES`` is set, e.g. by SLURM, or when at most one
    GPU is visible. Otherwise the first GPU whose lock is free is claimed, waiting (polling every
    ``poll_seconds``; ``TimeoutError`` after ``timeout`` seconds, if given) while all are taken,
    and ``CUDA_VISIBLE_DEVICES`` names it until the block ends. ``n_gpus`` overrides the count of
    visible GPUs (``torch.cuda.device_count()``). One claim per process: the variable is global.
    """
    if os.environ.get(VISIBLE) is not None:
        yield None
        return
    count = _visible_gpus() if n_gpus is None else n_gpus
    if count <= 1:
        yield None
        return
    folder = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    folder.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    while (claimed := _claim_first_free(folder, count)) is None:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(
                f"all {count} GPUs stayed claimed for {timeout} s (locks in {folder})"
            )
        time.sleep(poll_seconds)
    index, fd = claimed
    os.environ[VISIBLE] = str(index)
    try:
        yield index
    finally:
        os.environ.pop(VISIBLE, None)
        os.close(fd)  # releases the lock


_held = contextlib.ExitStack()
_holding = False


def hold_gpu() -> int | None:
    """Claim a GPU for the rest of this process (training and prediction jobs call this before
    touching CUDA); a second call keeps the first claim. The lock goes when the process ends."""
    global _holding
    if _holding:
        return int(os.environ[VISIBLE]) if os.environ.get(VISIBLE, "").isdigit() else None
    index = _held.enter_context(claim_gpu())
    _holding = True
    return index
