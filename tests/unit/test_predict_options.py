"""`ptxseg predict`'s options of how it reports and draws: stderr has one line a stage by default
(inputs checked, models ready, images predicted; the outputs written on stdout), every library's
lines with --verbose; a --device the run cannot honour is refused before anything is read or
loaded, and the device models run on stated; --fill tints the region in the PNG overlay and the
Secondary Capture. The tiny-model ensemble of test_predictor stands in for the loaded models."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import torch
from test_predictor import ENSEMBLE, radiographs, spec_of, tiny_models, torch_predictor

from ptxseg import cli
from ptxseg.deploy import Predictor
from ptxseg.io.dicom import write_dicom
from ptxseg.io.png import read_grey, write_png

STAGES = ("inputs checked: 3 to predict", "models ready: ", "3 image(s) predicted")


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    spec = spec_of(ENSEMBLE)
    return torch_predictor(spec, tiny_models(spec))


@pytest.fixture
def loads(monkeypatch, predictor) -> list[str]:
    """Either loader gives the tiny ensemble, logging a line a model as checkpoint loading does
    (`ptxseg.models.weights`); the folders it was asked to load."""
    loaded = []

    def load(path) -> Predictor:
        loaded.append(str(path))
        for key in predictor.spec.model_keys():
            logging.getLogger("ptxseg.models.weights").info("loaded checkpoint %s", key)
        return predictor

    monkeypatch.setattr(
        Predictor,
        "from_export",
        classmethod(lambda cls, path, providers=None, threads=None: load(path)),
    )
    monkeypatch.setattr(
        Predictor,
        "from_results",
        classmethod(lambda cls, path="results", device="auto", threads=None: load(path)),
    )
    return loaded


def inputs(folder: Path) -> list[Path]:
    """Two DICOMs and a PNG."""
    folder.mkdir()
    images = radiographs(3)
    paths = []
    for k in range(2):
        paths.append(folder / f"{k}.dcm")
        write_dicom(
            paths[-1],
            images[k],
            sop_instance_uid=f"1.2.826.0.1.3680043.8.498.{k + 1}",
            study_instance_uid="1.2.826.0.1.3680043.8.498.10",
            series_instance_uid="1.2.826.0.1.3680043.8.498.11",
            patient_id="p1",
            patient_age=50,
            patient_sex="F",
            view_position="PA",
        )
    paths.append(folder / "plain.png")
    write_png(paths[-1], images[2])
    return paths


def run(tmp_path: Path, *extra: str) -> int:
    out = tmp_path / "out"
    return cli.main(
        [
            "predict",
            *map(str, inputs(tmp_path / "images")),
            "--model",
            "model",
            "--out",
            str(out),
            "--dicom-out",
            str(tmp_path / "dicom"),
            "--dicom-probability",
            *extra,
        ]
    )


def test_a_default_run_logs_one_line_a_stage(tmp_path, loads, capsys):
    assert run(tmp_path) == cli.EXIT_OK
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    for stage in STAGES:
        assert sum(stage in line for line in lines) == 1, (stage, lines)
    # The one other line: one input of three gets no DICOM outputs.
    assert len(lines) <= len(STAGES) + 1, lines
    assert not [line for line in lines if "checkpoint" in line or "highdicom" in line]
    assert "onnxruntime on the CPU" not in captured.err  # the stand-in is PyTorch's, on the CPU
    assert "models ready: 10, PyTorch on the CPU" in captured.err
    assert captured.out.startswith("outputs written: 3 image(s)")


def test_verbose_logs_every_library(tmp_path, loads, capsys):
    root = logging.getLogger()
    before = (root.level, list(root.handlers), logging.getLogger("ptxseg").level)
    assert run(tmp_path, "--verbose") == cli.EXIT_OK
    lines = capsys.readouterr().err.splitlines()
    for stage in STAGES:
        assert any(stage in line for line in lines), stage
    checkpoints = [line for line in lines if "loaded checkpoint" in line]
    assert len(checkpoints) == len(loads) * 10  # one a model
    assert any("highdicom" in line for line in lines)  # its INFO lines, writing the DICOMs
    assert len(lines) > len(STAGES) + 1 + len(checkpoints)
    # Nothing of --verbose stays behind for the next command in the process.
    assert (root.level, list(root.handlers), logging.getLogger("ptxseg").level) == before


def test_cuda_with_an_export_is_refused_before_anything_is_read(tmp_path, loads, capsys):
    assert run(tmp_path, "--device", "cuda") == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "--device cuda: an export (--model) runs with onnxruntime on the CPU" in err
    assert loads == [] and not (tmp_path / "out").exists()


def test_cuda_without_a_gpu_is_refused_before_anything_is_read(
    tmp_path, loads, capsys, monkeypatch
):
    """The code path of a machine without CUDA (CI's), whatever this machine has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images = inputs(tmp_path / "images")
    out = tmp_path / "out"
    args = ["predict", *map(str, images), "--results", str(tmp_path / "results"), "--out", str(out)]
    assert cli.main([*args, "--device", "cuda"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "--device cuda: no CUDA GPU is visible (CUDA_VISIBLE_DEVICES=" in err
    assert "--device cpu or auto predicts on the CPU" in err
    assert loads == [] and not out.exists()
    # auto (the default) predicts on the CPU and says so.
    assert cli.main(args) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "models ready: 10, PyTorch on the CPU (no GPU visible)" in err
    assert "training" not in err


def test_fill_reaches_the_png_overlay_and_the_capture(tmp_path, loads):
    plain, filled = tmp_path / "plain", tmp_path / "filled"
    plain.mkdir()
    filled.mkdir()
    assert run(plain) == cli.EXIT_OK and run(filled, "--fill") == cli.EXIT_OK
    uid = "1.2.826.0.1.3680043.8.498.1"
    mask = read_grey(plain / "out" / f"{uid}_mask.png") > 0
    assert mask.any()
    for folder, name in (("out", f"{uid}_overlay.png"), ("dicom", f"{uid}_capture.dcm")):
        if name.endswith(".png"):
            outlined, tinted = (cv2.imread(str(f / folder / name)) for f in (plain, filled))
        else:
            outlined, tinted = (
                pydicom.dcmread(f / folder / name).pixel_array for f in (plain, filled)
            )
        assert np.array_equal(outlined[~mask], tinted[~mask]), name  # the outline is on the mask
        assert (outlined[mask] != tinted[mask]).any(), name
