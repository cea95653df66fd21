"""What a workflow script runs of the package, as one hash: the script's text and the source of
every ptxseg module it imports, directly or through other modules' module-level imports (their
packages' __init__ files included, which an import runs).

Each rule takes it as a param, so Snakemake reruns a job when the code it runs changes (its
`params` trigger) and not when only a file's time does: the workflow's own profile
(profiles/default) leaves out Snakemake's `code` trigger, which for a `script:` rule compares the
script's modification time, so a `git pull` or a copy that touches a script reran every job of
its rule. Imports are read from the source (ast), never executed: building the DAG imports no
torch. Written here because Snakemake hashes no code beyond a rule's own text.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
from functools import cache, lru_cache
from pathlib import Path

PACKAGE = "ptxseg"


@lru_cache(maxsize=1)
def _package_root() -> Path:
    spec = importlib.util.find_spec(PACKAGE)  # runs only ptxseg/__init__.py
    if spec is None or spec.origin is None:
        raise ImportError(f"{PACKAGE} is not installed")
    return Path(spec.origin).parent


def module_file(name: str) -> Path | None:
    """The source file of the package module ``name`` (a package's __init__.py), None where the
    name is not a module of the package (e.g. a class imported from one)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = _package_root().joinpath(*parts[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _module_level(tree: ast.Module):
    """The statements an import of the module runs: its body, into if/try/with blocks, not into
    functions or classes (a lazy import inside a function, like ptxseg's own `__getattr__`, runs
    only when called; counted, it would tie every script to the whole package)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            todo.extend(ast.iter_child_nodes(node))


def _imported(source: str, module: str, where: str, everywhere: bool = False) -> set[str]:
    """Every package module name ``source`` imports at module level (``everywhere``: in its
    functions too, as for the script itself, whose `main` is what runs), and the names after
    `from X import` as candidate submodules; relative imports resolved against ``module`` (a
    package's name for its __init__.py)."""
    names = set()
    tree = ast.parse(source, filename=where)
    for node in ast.walk(tree) if everywhere else _module_level(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.rsplit(".", node.level - 1)[0] if node.level > 1 else module
                prefix = f"{base}.{node.module}" if node.module else base
            else:
                prefix = node.module or ""
            names.add(prefix)
            names.update(f"{prefix}.{alias.name}" for alias in node.names)
    return names


def _parents(name: str) -> list[str]:
    """ptxseg.a.b -> [ptxseg, ptxseg.a]: the packages an import of it runs first."""
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]


@cache
def _module_imports(path: Path, name: str) -> frozenset[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return frozenset(_imported(path.read_text(), package, str(path)))


def modules_of(script: str | os.PathLike) -> dict[str, Path]:
    """Every package module a script runs, by name: its imports, theirs, and so on."""
    script = Path(script)
    found: dict[str, Path] = {}
    todo = list(_imported(script.read_text(), "", str(script), everywhere=True))
    while todo:
        name = todo.pop()
        for candidate in (*_parents(name), name):
            if candidate in found:
                continue
            path = module_file(candidate)
            if path is None:
                continue
            found[candidate] = path
            todo.extend(_module_imports(path, candidate))
    return found


def code_hash(script: str | os.PathLike) -> str:
    """sha256 of the script's bytes and of each module it runs (by name, in name order)."""
    digest = hashlib.sha256(Path(script).read_bytes())
    for name, path in sorted(modules_of(script).items()):
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]
