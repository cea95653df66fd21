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
