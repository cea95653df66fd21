"""The conda environment lists exactly pyproject's runtime dependencies."""

from __future__ import annotations

import tomllib

import yaml
from dag import ROOT
from packaging.requirements import Requirement


def _normalised(specs):
    return {
        Requirement(spec).name.lower().replace("_", "-"): str(Requirement(spec).specifier)
        for spec in specs
    }


def test_conda_env_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "envs" / "ptxseg.yaml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert _normalised(pip_section) == _normalised(project["dependencies"])
    python = next(
        item for item in env["dependencies"] if isinstance(item, str) and item.startswith("python")
    )
    assert python.split("=")[-1] >= project["requires-python"].lstrip(">=")


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
