"""Logging set-up shared by rule scripts and the command line."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def to_file(path: str | os.PathLike | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Log to ``path`` (and stderr) for the duration; an exception is logged with its traceback, then re-raised.

    Snakemake keeps the log of a failed job, so the full error stays on disk beside the job.
    """
    root = logging.getLogger()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w", encoding="utf-8"))
    old_level = root.level
    root.setLevel(level)
    for handler in handlers:
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    try:
        yield logging.getLogger("ptxseg")
    except BaseException as error:
        if not isinstance(error, KeyboardInterrupt | SystemExit):
            logging.getLogger("ptxseg").error("%s\n%s", error, traceback.format_exc())
        raise
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
