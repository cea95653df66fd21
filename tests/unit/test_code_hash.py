"""ptxseg.code_hash: a rule's `code` param changes with the code its script runs, and only then;
and every rule of the workflow takes the hash of its own script."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from ptxseg import code_hash

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of the package that code_hash reads instead of the installed one."""
    copy = tmp_path / "ptxseg"
    shutil.copytree(ROOT / "src" / "ptxseg", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_hash, "_package_root", lambda: copy)
    code_hash._module_imports.cache_clear()
    yield copy
    code_hash._module_imports.cache_clear()


def hash_now(script: Path) -> str:
    code_hash._module_imports.cache_clear()  # files changed since the last call
    return code_hash.code_hash(script)


def test_the_hash_follows_the_code_a_script_runs(package, tmp_path):
    script = tmp_path / "folds.py"
    script.write_text("from ptxseg.data.folds import write_folds\n")
    modules = code_hash.modules_of(script)
    # The module, the packages an import runs, and what the module imports at its top level.
    assert {"ptxseg", "ptxseg.data", "ptxseg.data.folds"} <= set(modules)
    imported = next(n for n in modules if n not in {"ptxseg", "ptxseg.data", "ptxseg.data.folds"})
    assert "ptxseg.deploy.predictor" not in modules  # ptxseg's lazy __getattr__ import runs later
    before = hash_now(script)

    folds = package / "data" / "folds.py"
    os.utime(folds, (1, 1))  # a checkout or a copy: new times, same bytes
    assert hash_now(script) == before
    (package / "deploy" / "predictor.py").write_text("# not run by this script\n")
    assert hash_now(script) == before
    folds.write_text(folds.read_text() + "\n# edited\n")
    edited = hash_now(script)
    assert edited != before
    path = modules[imported]
    path.write_text(path.read_text() + "\n# edited\n")  # a module it imports through another
    assert hash_now(script) != edited
    script.write_text(script.read_text() + "# the script itself\n")
    assert hash_now(script) not in {before, edited}


def test_relative_and_lazy_imports(package, tmp_path):
    (package / "extra").mkdir()
    (package / "extra" / "__init__.py").write_text("from . import one\n")
    (package / "extra" / "one.py").write_text(
        "from .two import thing\n\ndef f():\n    from ptxseg import grids\n"
    )
    (package / "extra" / "two.py").write_text("from ..io import rle\nthing = 1\n")
    script = tmp_path / "s.py"
    script.write_text("def main():\n    import ptxseg.extra\n")  # the script's own: counted
    modules = set(code_hash.modules_of(script))
    assert {"ptxseg.extra", "ptxseg.extra.one", "ptxseg.extra.two", "ptxseg.io.rle"} <= modules
    assert "ptxseg.grids" not in modules  # inside a package module's function: not at import


def test_every_rule_hashes_its_own_script():
    rules = []
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=rule \w+:)", path.read_text()):
            name = re.match(r"rule (\w+):", block)
            script = re.search(r'(?m)^    script:\n        "\.\./scripts/(\w+\.py)"', block)
            if name and script:
                code = re.findall(r'code=code_of\("(\w+\.py)"\)', block)
                assert code == [script[1]], f"{path.name}, rule {name[1]}: code={code}"
                rules.append(name[1])
    assert len(rules) >= 25, rules
