"""Probability maps on disk: a uint8 stack (images, rows, columns) in a chunked, compressed HDF5 file.

At the full recipe's sizes the maps are the biggest thing a run writes (12,047 OOF images x 15
kept models and 3,205 test images x 15 fold models at 512 px: ~60 GB as raw uint8). Network
outputs are smooth and mostly near zero, so they compress well: each image is one HDF5 chunk,
compressed with Blosc's zstd (level 3, no shuffle: on smooth maps bit-shuffling splits what zstd
would find repeated). Measured on 512 px maps: a trained segmenter's confident background ~1 % of
the raw size, a weakly trained one's (background near 0.1) ~24 %, read at ~0.9-2.9 GB/s; see
benchmarks/README.md. Lossless, so no score changes. One image a chunk means any row can be read
alone, and a stage reads a chunk of rows at a time, its memory set by the chunk.

Files are written atomically (a temporary file beside the target, renamed when complete), so a
killed job leaves the previous file or none.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from ptxseg.io.atomic import replace_when_complete

SUFFIX = ".h5"
DATASET = "maps"
FORMAT = "ptxseg probability maps: uint8, probability x 255, one image a chunk"


def _compression() -> dict:
    return dict(hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.NOSHUFFLE))


class MapWriter:
    """The open dataset of a file being written: ``writer[rows] = maps`` for rows in any order."""

    def __init__(self, dataset: h5py.Dataset) -> None:
        self._dataset = dataset
        self.shape = dataset.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, rows, maps: np.ndarray) -> None:
        maps = np.asarray(maps, dtype=np.uint8)
        rows = _as_selection(rows)
        if isinstance(rows, slice):
            self._dataset[rows] = maps
            return
        order = np.argsort(rows, kind="stable")
        self._dataset[rows[order]] = maps[order]  # HDF5 point selections must increase


@contextlib.contextmanager
def create(path: str | os.PathLike, shape: tuple[int, int, int]) -> Iterator[MapWriter]:
    """A new map file of ``shape`` (images, rows, columns), renamed onto ``path`` once the block ends."""
    images, rows, columns = (int(v) for v in shape)
    with replace_when_complete(path) as tmp, h5py.File(tmp, "w", locking=False) as handle:
        dataset = handle.create_dataset(
            DATASET,
            shape=(images, rows, columns),
            maxshape=(None, rows, columns),
            dtype=np.uint8,
            chunks=(1, rows, columns),
            **_compression(),
        )
        dataset.attrs["format"] = FORMAT
        yield MapWriter(dataset)


def write(path: str | os.PathLike, maps: np.ndarray) -> None:
    """Write a whole in-memory stack (tests, small sets)."""
    maps = np.asarray(maps, dtype=np.uint8)
    with create(path, maps.shape) as out:
        if len(maps):
            out[slice(0, len(maps))] = maps


class MapFile:
    """A map file open for reading; rows are read on request, nothing else is kept in memory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            self._file = h5py.File(self.path, "r", locking=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: map file does not exist") from None
        except OSError as error:
            raise ValueError(f"{self.path}: not a readable map file ({error})") from None
        if DATASET not in self._file:
            self._file.close()
            raise ValueError(f"{self.path}: no '{DATASET}' dataset; not a ptxseg map file")
        self._dataset = self._file[DATASET]
        self.shape = tuple(self._dataset.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, rows) -> np.ndarray:
        """Rows as a new array: a slice, or indices in any order (repeats allowed)."""
        rows = _as_selection(rows)
        if isinstance(rows, slice):
            return self._dataset[rows]
        if len(rows) == 0:
            return np.zeros((0, *self.shape[1:]), dtype=np.uint8)
        unique, inverse = np.unique(rows, return_inverse=True)
        if unique[-1] >= len(self) or unique[0] < 0:
            raise IndexError(f"{self.path}: rows out of range 0..{len(self) - 1}")
        block = _as_selection(unique)
        return self._dataset[block if isinstance(block, slice) else unique][inverse]

    def chunks(self, size: int = 32) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, maps) for consecutive chunks of ``size`` rows."""
        for start in range(0, len(self), size):
            yield start, self.read(slice(start, min(start + size, len(self))))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MapFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_rows(path: str | os.PathLike, rows) -> np.ndarray:
    """Rows of one file, the file opened and closed around the read."""
    with MapFile(path) as maps:
        return maps.read(rows)


def _as_selection(rows):
    """A slice stays a slice; an index array that is one increasing run becomes a slice (fast path)."""
    if isinstance(rows, slice):
        return rows
    if isinstance(rows, (int, np.integer)):
        return slice(int(rows), int(rows) + 1)
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and np.all(np.diff(rows) == 1):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows
