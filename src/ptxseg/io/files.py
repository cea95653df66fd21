"""Finding image files below folders by their stem (the ImageId), as downloads lay them out.

Downloads nest files (<study>/<series>/<sop>.dcm), reach folders through symlinks, and some
ship a second, identical copy of everything (the jesperdramsch mirror's ``pneumothorax/``):
symlinked folders are followed, each real folder once (a link back up would loop), and a file
whose twin by content was already found is read once, with one note for all of them.
"""

from __future__ import annotations

import filecmp
import os
from collections.abc import Iterable, Iterator
from pathlib import Path


def walk_files(root: str | os.PathLike, suffix: str) -> Iterator[Path]:
    """Files named ``*<suffix>`` below ``root`` in sorted order, symlinked folders followed."""
    seen: set[str] = set()
    # os.walk, not Path.rglob: rglob does not descend into symlinked folders.
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link to a folder already walked (or to one above it)
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        for name in sorted(names):
            if name.endswith(suffix):
                yield Path(folder, name)


def same_content(first: Path, second: Path) -> bool:
    """Whether two files are one file or byte-identical copies (sizes first, then content)."""
    return os.path.samefile(first, second) or filecmp.cmp(first, second, shallow=False)


def find_by_stem(
    folders: str | os.PathLike | Iterable[str | os.PathLike],
    suffix: str,
    error: type[Exception] = ValueError,
    twins: list[tuple[Path, Path]] | None = None,
) -> dict[str, Path]:
    """Map each ``*<suffix>`` file below ``folders`` (any nesting) to its stem.

    Two files with one stem and the same content are one image, kept at the path found first;
    ``twins`` (where given) receives each (first, copy) pair, for `twin_note`. Two that differ
    raise ``error`` naming both, as either could be the image meant.
    """
    twins = [] if twins is None else twins
    roots = [folders] if isinstance(folders, str | os.PathLike) else list(folders)
    found: dict[str, Path] = {}
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"folder {root} does not exist")
        for path in walk_files(root, suffix):
            stem = path.name[: -len(suffix)]
            first = found.get(stem)
            if first is None:
                found[stem] = path
            elif same_content(first, path):
                twins.append((first, path))
            else:
                raise error(
                    f"{path}: ImageId {stem!r} is also at {first}, and the two files differ: "
                    "either could be the image meant; remove one, or point the config at the "
                    "folder holding the one to use"
                )
    return found


def twin_note(twins: list[tuple[Path, Path]]) -> str | None:
    """One line for all identical copies found (None: none), naming one pair."""
    if not twins:
        return None
    first, copy = twins[0]
    return (
        f"{len(twins)} file(s) are identical copies of files found first (e.g. {copy} of "
        f"{first}): each image is read once"
    )
