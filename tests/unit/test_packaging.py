"""The pinned environment: requirements.lock (what `make` installs), envs/runtime.lock and the conda
file generated from it agree with each other, with pyproject.toml and with what is installed."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import tomllib

import pytest
from dag import ROOT
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _conda_env_module():
    spec = importlib.util.spec_from_file_location("conda_env", ROOT / "envs" / "conda_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lock(name: str) -> dict[str, Requirement]:
    text = (ROOT / name).read_text()
    pins = [Requirement(line) for line in _conda_env_module().pins(text)]
    return {canonicalize_name(pin.name): pin for pin in pins}


def _version(pin: Requirement) -> str:
    (spec,) = pin.specifier
    assert spec.operator == "==", pin
    return spec.version


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("lock", ["requirements.lock", "envs/runtime.lock"])
def test_every_lock_entry_is_an_exact_pin_with_its_hashes(lock):
    text = (ROOT / lock).read_text().replace("\\\n", " ")
    entries = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert len(entries) > 100, lock  # the whole closure, PyTorch's CUDA wheels included
    for entry in entries:
        assert "==" in entry and "--hash=sha256:" in entry, f"{lock}: {entry[:80]}"


def test_the_locks_pin_what_pyproject_asks_and_agree_with_each_other():
    runtime, full = _lock("envs/runtime.lock"), _lock("requirements.lock")
    project = _project()
    for spec, lock in [(s, runtime) for s in project["dependencies"]] + [
        (s, full) for s in project["optional-dependencies"]["dev"]
    ]:
        wanted = Requirement(spec)
        pin = lock[canonicalize_name(wanted.name)]
        assert wanted.specifier.contains(_version(pin)), (spec, str(pin))
    for name, pin in runtime.items():
        assert _version(full[name]) == _version(pin), name


def test_the_conda_env_is_generated_from_the_runtime_lock():
    """`make lock` writes envs/ptxseg.yaml with envs/conda_env.py: a hand edit or a stale file fails."""
    expected = _conda_env_module().conda_env((ROOT / "envs" / "runtime.lock").read_text())
    assert (ROOT / "envs" / "ptxseg.yaml").read_text() == expected


def test_the_installed_environment_is_the_lock():
    """`make install` installs from requirements.lock: every pin that applies here is what runs."""
    here = default_environment()
    wrong = []
    for name, pin in _lock("requirements.lock").items():
        if pin.marker is not None and not pin.marker.evaluate(here):
            continue
        installed = importlib.metadata.version(name)
        if installed != _version(pin):
            wrong.append(f"{name} {installed} (lock {_version(pin)})")
    assert not wrong, (
        "installed versions differ from requirements.lock (make install): " + ", ".join(wrong)
    )


def test_a_built_wheel_validates_configs_without_the_checkout(tmp_path):
    """A non-editable install carries the config schema as package data."""
    import subprocess
    import sys

    pip = (sys.executable, "-m", "pip", "-q")
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel"), ROOT],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("ptxseg-*.whl")
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    code = (
        "import ptxseg.config as c, yaml\n"
        f"assert c.__file__.startswith({str(tmp_path / 'site')!r}), c.__file__\n"
        f"c.validate(yaml.safe_load(open({str(ROOT / 'configs' / 'full.yaml')!r})), c.load_schema())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
