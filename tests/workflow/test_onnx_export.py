"""`ptxseg export` and `ptxseg predict --model` on the tiny run's ensemble: the ONNX path against the
PyTorch path and against the per-image prediction it replaced, without torch, and its errors."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from reference_predict import reference_predict

from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.data.siim import read_index
from ptxseg.deploy import Predictor
from ptxseg.deploy.images import read_any
from ptxseg.infer.test_set import load_member
from ptxseg.io import rle
from ptxseg.io.png import read_grey, write_png
from ptxseg.layout import Layout
from ptxseg.scoring.cascade import Cascade

pytestmark = pytest.mark.workflow


def ptxseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptxseg.cli", *map(str, args)], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def results(tiny_run) -> Path:
    return tiny_run / "results"


@pytest.fixture(scope="module")
def exported(results, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "model"
    run = ptxseg("export", "--results", results, "--out", folder)
    assert run.returncode == 0, run.stderr
    return folder


@pytest.fixture(scope="module")
def images(tiny_run, results, tmp_path_factory) -> list[str]:
    """The tiny run's test DICOMs and a PNG of another size."""
    index = read_index(results / "data" / "siim_index.csv")
    dicoms = [str(tiny_run / p) for p in index[index["split"] == "test"]["path"]]
    png = tmp_path_factory.mktemp("png") / "from_png.png"
    write_png(png, np.random.default_rng(0).integers(0, 255, (200, 180), dtype=np.uint8))
    return [*dicoms, str(png)]


def test_export_writes_the_ensemble_models_and_manifest(results, exported):
    ensemble_json = results / "ensemble" / "ensemble.json"
    manifest = json.loads((exported / "manifest.json").read_text())
    spec = EnsembleSpec.read(ensemble_json)
    listed = [(m["stage"], m["arch"], m["fold"], m["member"]) for m in manifest["models"]]
    assert listed == [(k.stage, k.arch, k.fold, k.member) for k in spec.model_keys()]
    assert {m["arch"] for m in manifest["models"]} == {"densenet169", "unet_resnet34"}
    for model in manifest["models"]:
        assert (
            hashlib.sha256((exported / model["file"]).read_bytes()).hexdigest() == model["sha256"]
        )
    ensemble = json.loads(ensemble_json.read_text())
    digest = hashlib.sha256(ensemble_json.read_bytes()).hexdigest()
    assert manifest["config_hash"] == f"sha256:{digest}"
    for key in ("gate_weights", "segmenter_weights", "cascade", "members", "preprocessing"):
        assert manifest[key] == ensemble[key], key
    assert manifest.get("calibration") == ensemble.get("calibration")
    assert "oof" in ensemble and "oof" not in manifest  # the search's record stays behind
    assert EnsembleSpec.from_dict(manifest, "manifest.json") == replace(spec, search=None)
    assert manifest["opset"] >= 17 and len(manifest["tta_passes"]) == 4  # tiny: 2 flips x 2 scales
    heads = [m["outputs"] for m in manifest["models"] if m["stage"] == "segment"]
    assert heads[0] == ["maps", "head", "head_passes"]  # the tiny segmenters have a head


def test_onnx_predicts_as_pytorch_on_the_test_images(results, exported, images, tmp_path):
    pytorch = list(Predictor.from_results(results, device="cpu").predict_many(images, 3))
    onnx = list(Predictor.from_export(exported).predict_many(images, 4))
    assert [p.image_id for p in onnx] == [p.image_id for p in pytorch]
    for a, b in zip(pytorch, onnx, strict=True):
        assert abs(a.probability - b.probability) <= 1e-3
        assert abs(a.uncertainty - b.uncertainty) <= 1e-3
        assert np.abs(a.probability_map - b.probability_map).max() <= 1 / 255 + 1e-6
        assert rle.encode(a.mask) == rle.encode(b.mask), a.image_id
    # The same under a cascade that draws masks (the tiny run's draws none): the export's models
    # with the manifest's cascade changed, the results' with ensemble.json's.
    level = int(np.median([np.rint(p.probability_map * 255).max() for p in pytorch]))
    drawing = drawing_results(results, tmp_path / "results", level)
    copy = tmp_path / "model"
    copy.mkdir()
    for path in exported.glob("*.onnx"):
        (copy / path.name).symlink_to(path)
    manifest = json.loads((exported / "manifest.json").read_text())
    manifest["cascade"] = EnsembleSpec.from_results(drawing).cascade.as_dict()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    pytorch = Predictor.from_results(drawing, device="cpu").predict_many(images, 3)
    onnx = Predictor.from_export(copy).predict_many(images, 4)
    masks = [(rle.encode(a.mask), rle.encode(b.mask)) for a, b in zip(pytorch, onnx, strict=True)]
    assert all(a == b for a, b in masks)
    assert 0 < sum(a != "-1" for a, _ in masks) < len(masks)


def drawing_results(results: Path, folder: Path, level: int) -> Path:
    """The tiny run's models under a cascade that draws masks (the tiny run's own draws none):
    top and bottom at ``level``, no minimum area."""
    folder.mkdir()
    for part in ("classify", "segment"):
        (folder / part).symlink_to(results / part)
    drawing = Cascade(gate=0.0, top=level / 255, min_area=0.0, bottom=level / 255)
    spec = replace(EnsembleSpec.from_results(results), cascade=drawing)
    spec.write(folder / "ensemble" / "ensemble.json")
    return folder


def test_predict_cli_gives_the_old_per_image_rle(results, images, tmp_path):
    """The batched command against the per-image loop it replaced, on the same models."""
    spec = EnsembleSpec.from_results(results)
    layout = Layout(str(results))
    models = {
        key: load_member(
            layout.model(key.stage, key.arch, key.fold, key.member), torch.device("cpu")
        ).eval()
        for key in spec.model_keys()
    }
    decoded = [read_any(path) for path in images]
    blended = [reference_predict(spec, models, image)[2] for image, _ in decoded]
    level = int(np.median([b.max() for b in blended]))  # about half the images reach it
    drawing = drawing_results(results, tmp_path / "results", level)
    run = ptxseg(
        "predict", *images, "--results", drawing, "--out", tmp_path / "out", "--device", "cpu",
        "--batch-size", 4,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "time to the first image" in run.stdout
    rows = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype=str, keep_default_na=False)
    spec = EnsembleSpec.from_results(drawing)
    for (image, image_id), row in zip(decoded, rows.itertuples(), strict=True):
        mask, probability, map_ = reference_predict(spec, models, image)
        assert row.ImageId == image_id
        assert row.EncodedPixels == rle.encode(mask), image_id
        assert float(row.classifier_probability) == pytest.approx(probability, abs=1e-4)
        written = read_grey(tmp_path / "out" / f"{image_id}_probability.png")
        expected = cv2.resize(map_, image.shape[::-1], interpolation=cv2.INTER_LINEAR)
        assert np.abs(written.astype(int) - expected).max() <= 1, image_id
    drawn = (rows["EncodedPixels"] != "-1").sum()
    assert 0 < drawn < len(rows), rows["EncodedPixels"].tolist()


def test_predict_with_model_writes_what_results_writes(results, exported, images, tmp_path):
    by_results, by_model = tmp_path / "results", tmp_path / "model"
    first = ptxseg("predict", *images, "--results", results, "--out", by_results, "--quiet")
    second = ptxseg("predict", *images, "--model", exported, "--out", by_model, "--quiet")
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert "%|" not in second.stderr  # --quiet: no progress bar
    names = sorted(p.name for p in by_results.iterdir())
    assert names == sorted(p.name for p in by_model.iterdir()) and len(names) == 1 + 3 * len(images)
    a = pd.read_csv(by_results / "predictions.csv", dtype=str, keep_default_na=False)
    b = pd.read_csv(by_model / "predictions.csv", dtype=str, keep_default_na=False)
    assert list(a.columns) == list(b.columns)
    assert list(a.columns) == [
        "ImageId", "EncodedPixels", "source", "classifier_probability", "mask_pixels",
        "calibrated_probability", "uncertainty",
    ]  # fmt: skip
    exact = ["ImageId", "EncodedPixels", "source", "mask_pixels"]
    assert a[exact].equals(b[exact])
    for column in ("classifier_probability", "calibrated_probability", "uncertainty"):
        assert np.abs(a[column].astype(float) - b[column].astype(float)).max() <= 1e-3, column
    for name in names:
        if name.endswith("_probability.png"):
            difference = read_grey(by_results / name).astype(int) - read_grey(by_model / name)
            assert np.abs(difference).max() <= 1, name
        elif name.endswith(".png"):
            assert (by_results / name).read_bytes() == (by_model / name).read_bytes(), name


def test_predict_with_model_imports_no_torch(exported, images, tmp_path):
    code = (
        "import sys\n"
        "from ptxseg.cli import main\n"
        f"code = main(['predict', *{images!r}, '--model', {str(exported)!r}, "
        f"'--out', {str(tmp_path)!r}, '--quiet'])\n"
        "assert code == 0, code\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == len(images)


def test_predict_with_a_damaged_export_names_the_file(exported, images, tmp_path):
    copy = tmp_path / "model"
    copy.mkdir()
    for path in exported.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((copy / "manifest.json").read_text())
    damaged = manifest["models"][-1]["file"]
    (copy / damaged).write_bytes(b"not an onnx graph")
    run = ptxseg("predict", images[0], "--model", copy, "--out", tmp_path / "out")
    assert run.returncode == 2 and f"{damaged}: sha256" in run.stderr, run.stderr
    (copy / damaged).unlink()
    run = ptxseg("predict", images[0], "--model", copy, "--out", tmp_path / "out")
    assert run.returncode == 2 and f"{damaged}: model file missing" in run.stderr, run.stderr
    (copy / "manifest.json").unlink()
    run = ptxseg("predict", images[0], "--model", copy, "--out", tmp_path / "out")
    assert run.returncode == 2 and "manifest.json not found" in run.stderr, run.stderr
