"""ptxseg.Predictor on tiny random models: batches against one image at a time and against the
per-image reference, the gate's spread and calibration, the ONNX export against PyTorch, the
export's checks, inputs and the files `ptxseg predict` writes."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from reference_predict import CPU, reference_predict
from torch import nn

import ptxseg
from ptxseg.contracts.ensemble_spec import CLASSIFY, EnsembleSpec, EnsembleSpecError, ModelKey
from ptxseg.deploy import Prediction, Predictor
from ptxseg.deploy import export as export_module
from ptxseg.deploy import predictor as predictor_module
from ptxseg.deploy.export import onnx_name, write_export
from ptxseg.deploy.files import COLUMNS, write_predictions
from ptxseg.deploy.manifest import MANIFEST, ExportError, sha256
from ptxseg.deploy.resident import Resident
from ptxseg.deploy.torch_backend import TorchBackend
from ptxseg.deploy.tta_module import TTAModule
from ptxseg.io import rle
from ptxseg.io.png import read_grey, write_png
from ptxseg.runtime.predict import mark_trained, tta_outputs

ENSEMBLE = {
    # A classifier, a segmenter head and a classifier of weight 0 (never loaded) in the gate; a
    # second-round segmenter name among the blend's, loaded like any other.
    "gate_weights": {"tiny_cls": 0.6, "head:seg_a": 0.4, "unused_cls": 0.0},
    "segmenter_weights": {"seg_a": 0.7, "seg_b-round2": 0.3},
    "members": {"classify": ["best"], "segment": ["best", "swa"]},
    "cascade": {"gate": 0.425, "top": 0.575, "min_area": 0.0, "bottom": 0.52},
    "preprocessing": {
        "normalisation": {"method": "clahe", "clip_limit": 2.0, "tile_grid": 8},
        "stats": {"16": {"mean": 0.5, "std": 0.25}, "24": {"mean": 0.45, "std": 0.3}},
        "classify_size": 16,
        "segment_size": 24,
        "n_folds": 2,
        "tta": ["none", "hflip", 0.75, 1.0],
    },
}


class TinyClassifier(nn.Module):
    size_multiple = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


class TinySegmenter(nn.Module):
    size_multiple = 8  # scale TTA rounds the side to a multiple, as a U-Net's does

    def __init__(self, head: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 1, 3, padding=1)
        self.head = nn.Linear(4, 1) if head else None

    def forward(self, x):
        features = torch.relu(self.conv(x))
        maps = self.out(features) * 3
        return maps if self.head is None else (maps, self.head(features.mean((2, 3))))


def tiny_models(spec: EnsembleSpec, seed: int = 0) -> dict[ModelKey, nn.Module]:
    torch.manual_seed(seed)
    models = {}
    for key in spec.model_keys():
        if key.stage == CLASSIFY:  # trained at one size: the flips only
            models[key] = mark_trained(TinyClassifier(), {"size": 16})
        else:  # trained 12 -> 24 px: the 0.75 passes too
            stages = [{"size": 12}, {"size": 24}]
            models[key] = mark_trained(
                TinySegmenter(head=key.arch == "seg_a"), {"size": 24, "stages": stages}
            )
    return {key: model.eval() for key, model in models.items()}


def spec_of(ensemble: dict) -> EnsembleSpec:
    return EnsembleSpec.from_dict(ensemble, "ensemble.json")


def torch_predictor(spec: EnsembleSpec, models: dict[ModelKey, nn.Module]) -> Predictor:
    modules = {key: TTAModule(model, spec.passes).eval() for key, model in models.items()}
    return Predictor(spec, TorchBackend(modules, CPU))


def radiographs(n: int, seed: int = 1) -> list[np.ndarray]:
    """Smooth random images of a few sizes (one square at the segmenters' side)."""
    rng = np.random.default_rng(seed)
    shapes = [(40, 36), (24, 24), (50, 64), (33, 30)]
    images = []
    for k in range(n):
        noise = rng.random((8, 8)).astype(np.float32)
        image = cv2.resize(noise, shapes[k % len(shapes)][::-1], interpolation=cv2.INTER_CUBIC)
        images.append(np.clip(image * 255, 0, 255).astype(np.uint8))
    return images


@pytest.fixture(scope="module")
def ensemble():
    spec = spec_of(ENSEMBLE)
    models = tiny_models(spec)
    return spec, models, torch_predictor(spec, models)


# The export's tests take one kept segmenter member: six graphs rather than ten.
EXPORTED = {**ENSEMBLE, "members": {"classify": ["best"], "segment": ["best"]}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ensemble):
    """(the export folder, its manifest, the PyTorch predictor of the same models)."""
    spec = spec_of(EXPORTED)
    keys = set(spec.model_keys())
    predictor = torch_predictor(spec, {k: m for k, m in ensemble[1].items() if k in keys})
    folder = tmp_path_factory.mktemp("export")
    manifest = write_export(spec, predictor.backend.modules, folder, "sha256:test")
    return folder, manifest, predictor


def test_the_ensemble_runs_its_weighted_models_only(ensemble):
    spec, models, _ = ensemble
    assert spec.classifiers == ["tiny_cls"] and spec.segmenters == ["seg_a", "seg_b-round2"]
    assert len(models) == 2 * 1 + 2 * 2 * 2  # folds x members, unused_cls not among them
    head_only = copy.deepcopy(ENSEMBLE)
    head_only["segmenter_weights"] = {"seg_a": 0.0, "seg_b-round2": 1.0}
    assert spec_of(head_only).segmenters == ["seg_a", "seg_b-round2"]  # its head has weight


def test_batches_give_the_per_image_reference(ensemble):
    spec, models, predictor = ensemble
    images = radiographs(7)
    batched = list(predictor.predict_many(images, batch_size=3))
    assert [p.image_id for p in batched] == [f"image_{k}" for k in range(7)]
    for image, prediction in zip(images, batched, strict=True):
        mask, probability, blended = reference_predict(spec, models, image)
        assert prediction.mask.shape == image.shape and prediction.mask.dtype == bool
        assert rle.encode(prediction.mask) == rle.encode(mask)
        assert prediction.probability == pytest.approx(probability, abs=1e-6)
        expected_map = cv2.resize(blended, image.shape[::-1], interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(np.rint(prediction.probability_map * 255), expected_map)
        assert prediction.probability_map.dtype == np.float32
    assert any(p.found for p in batched) and not all(p.found for p in batched)
    # One image at a time, the batch of one is the reference bit for bit.
    single = predictor.predict(images[0])
    assert single.probability == reference_predict(spec, models, images[0])[1]


def test_uncertainty_is_the_gate_spread_over_folds_and_passes(ensemble):
    spec, models, predictor = ensemble
    image = radiographs(1)[0]
    prediction = predictor.predict(image)
    inputs = {side: predictor_inputs(spec, image, side) for side in (16, 24)}
    # The classifier takes 2 passes (flips), the segmenter's head 4 (flips x 0.75, 1.0): each
    # model's scales are averaged per flip, so the spread is over (fold, flip).
    values = np.zeros((spec.n_folds, spec.n_flips))
    for fold in range(spec.n_folds):
        for source, weight in (("tiny_cls", 0.6), ("seg_a", 0.4)):
            keys = [k for k in spec.model_keys() if k.arch == source and k.fold == fold]
            per_member = []
            for key in keys:
                x = inputs[spec.sizes[key.stage]]
                outputs = list(tta_outputs(models[key], x, spec.passes))
                assert len(outputs) == (2 if key.stage == CLASSIFY else 4)
                by_pass = [float((p if h is None else h).ravel()[0]) for p, h in outputs]
                per_member.append(np.reshape(by_pass, (-1, spec.n_flips)).mean(axis=0))
            values[fold] += weight * np.mean(per_member, axis=0)
    assert values.mean() == pytest.approx(prediction.probability, abs=1e-6)
    assert prediction.uncertainty == pytest.approx(values.std(), abs=1e-6)
    assert prediction.uncertainty > 0


def predictor_inputs(spec: EnsembleSpec, image: np.ndarray, side: int) -> torch.Tensor:
    from ptxseg.deploy.images import prepare

    return torch.from_numpy(prepare(image, 0, spec, [side]).inputs[side][None])


def test_without_a_gate_there_is_no_probability(ensemble):
    _, models, _ = ensemble
    ungated = copy.deepcopy(ENSEMBLE)
    ungated["gate_weights"] = {}
    spec = spec_of(ungated)
    keep = {k: m for k, m in models.items() if k in set(spec.model_keys())}
    prediction = torch_predictor(spec, keep).predict(radiographs(1)[0])
    assert (prediction.probability, prediction.calibrated_probability) == (None, None)
    assert prediction.uncertainty is None
    assert rle.encode(prediction.mask) == rle.encode(
        reference_predict(spec, keep, radiographs(1)[0])[0]
    )


def test_calibration_applies_to_the_gate_probability(ensemble):
    calibration = pytest.importorskip("ptxseg.scoring.calibration")
    _, models, predictor = ensemble
    image = radiographs(1)[0]
    plain = predictor.predict(image)
    assert plain.calibrated_probability == plain.probability  # no "calibration" key
    calibrated = copy.deepcopy(ENSEMBLE)
    calibrated["calibration"] = {"method": "temperature", "temperature": 2.5}
    prediction = torch_predictor(spec_of(calibrated), models).predict(image)
    expected = calibration.Calibrator.from_dict(calibrated["calibration"]).apply(
        np.array([plain.probability])
    )[0]
    assert prediction.probability == plain.probability
    assert prediction.calibrated_probability == pytest.approx(expected, abs=1e-7)
    assert prediction.calibrated_probability != pytest.approx(plain.probability, abs=1e-3)
    calibrated["calibration"] = {"method": "temperature"}
    with pytest.raises(EnsembleSpecError, match=r"ensemble.json: calibration\.temperature"):
        torch_predictor(spec_of(calibrated), models)


def test_predict_many_streams_its_input(ensemble):
    _, _, predictor = ensemble
    drawn = []

    def images():
        for k, image in enumerate(radiographs(12)):
            drawn.append(k)
            yield image

    stream = predictor.predict_many(images(), batch_size=2)
    next(stream)
    assert len(drawn) <= 4  # this batch and the one read ahead, not the twelve
    assert len(list(stream)) == 11


def test_inputs_paths_and_arrays(ensemble, tmp_path):
    _, _, predictor = ensemble
    image = radiographs(1)[0]
    write_png(tmp_path / "chest.png", image)
    from_file = predictor.predict(tmp_path / "chest.png")
    from_array = predictor.predict(image)
    assert (from_file.image_id, from_file.source) == ("chest", str(tmp_path / "chest.png"))
    assert from_array.source is None and from_file.probability == from_array.probability
    deep = predictor.predict(image.astype(np.uint16) * 200)  # stretched over its own range
    assert deep.mask.shape == image.shape
    with pytest.raises(ValueError, match=r"image 0: expected a 2-D grey image"):
        predictor.predict(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        predictor.predict(tmp_path / "nothing.png")
    with pytest.raises(ValueError, match="batch_size"):
        next(predictor.predict_many([image], batch_size=0))


def test_spec_errors_name_the_file_and_key():
    broken = copy.deepcopy(ENSEMBLE)
    del broken["preprocessing"]["stats"]["24"]
    with pytest.raises(EnsembleSpecError, match=r"ensemble.json: key 'preprocessing.stats.24'"):
        spec_of(broken)
    broken = copy.deepcopy(ENSEMBLE)
    broken["gate_weights"]["head:seg_c"] = 0.1
    with pytest.raises(EnsembleSpecError, match="'head:seg_c' names no segmenter"):
        spec_of(broken)
    broken = copy.deepcopy(ENSEMBLE)
    broken["preprocessing"]["tta"] = ["rotate"]
    with pytest.raises(EnsembleSpecError, match="unknown TTA mode"):
        spec_of(broken)


# ----------------------------------------------------------------------------- ONNX


def test_stacked_flips_equal_the_passes_one_by_one(ensemble):
    spec, models, _ = ensemble
    x = torch.randn(3, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    model = models[ModelKey("segment", "seg_a", 0, "best")]
    with torch.no_grad():
        one_by_one = TTAModule(model, spec.passes)(x)
        stacked = TTAModule(model, spec.passes, stack_flips=True)(x)
    assert [tuple(t.shape) for t in one_by_one] == [(3, 24, 24), (3,), (3, 4)]
    for a, b in zip(one_by_one, stacked, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_onnx_export_predicts_as_pytorch(exported):
    folder, manifest, predictor = exported
    spec = predictor.spec
    assert json.loads((folder / MANIFEST).read_text()) == manifest
    assert len(manifest["models"]) == len(spec.model_keys())
    for entry in manifest["models"]:
        assert sha256(folder / entry["file"]) == entry["sha256"]
    assert manifest["tta_passes"] == [
        ["none", 0.75],
        ["hflip", 0.75],
        ["none", 1.0],
        ["hflip", 1.0],
    ]
    assert manifest["ptxseg_version"] == ptxseg.__version__
    assert manifest["preprocessing"] == EXPORTED["preprocessing"]
    onnx = Predictor.from_export(folder)
    images = radiographs(6)
    for a, b in zip(predictor.predict_many(images, 4), onnx.predict_many(images, 4), strict=True):
        assert abs(a.probability - b.probability) <= 1e-3
        assert abs(a.uncertainty - b.uncertainty) <= 1e-3
        assert np.abs(a.probability_map - b.probability_map).max() <= 1 / 255 + 1e-6
        assert rle.encode(a.mask) == rle.encode(b.mask)


def test_an_architectures_other_models_are_its_first_graph_with_their_weights(
    ensemble, tmp_path, monkeypatch
):
    """One trace per architecture: the other folds' graphs are the first's with their own weights
    (checked against PyTorch like every graph), unless the weights do not map onto it."""
    spec = spec_of(EXPORTED)
    keys = set(spec.model_keys())
    modules = torch_predictor(spec, {k: m for k, m in ensemble[1].items() if k in keys})
    traced = []
    real = export_module._trace
    monkeypatch.setattr(
        export_module,
        "_trace",
        lambda module, *a, **k: traced.append(module) or real(module, *a, **k),
    )
    manifest = write_export(spec, modules.backend.modules, tmp_path, "sha256:test")
    archs = {(m["stage"], m["arch"]) for m in manifest["models"]}
    assert len(traced) == len(archs) < len(manifest["models"])
    first, other = (tmp_path / m["file"] for m in manifest["models"][:2])
    assert first.read_bytes() != other.read_bytes()  # fold 1's weights, not fold 0's
    # A member whose weights do not map onto the graph is traced itself.
    monkeypatch.setattr(export_module, "_swap_weights", lambda *a: False)
    traced.clear()
    write_export(spec, modules.backend.modules, tmp_path / "again", "sha256:test")
    assert len(traced) == len(manifest["models"])
    # So is one whose swapped graph does not give PyTorch's outputs (here: the template's own
    # weights left in it), and the export still ends with every graph checked.
    monkeypatch.setattr(
        export_module, "_swap_weights", lambda template, module, path: shutil.copy(template, path)
    )
    traced.clear()
    again = write_export(spec, modules.backend.modules, tmp_path / "3", "sha256:test")
    assert len(traced) == len(manifest["models"]) and len(again["models"]) == len(traced)


def test_export_without_torch_in_a_subprocess(exported):
    folder, _, _ = exported
    code = (
        "import sys, numpy as np, ptxseg\n"
        f"p = ptxseg.Predictor.from_export({str(folder)!r})\n"
        "print(p.predict(np.full((30, 30), 80, np.uint8)).probability)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 0 <= float(result.stdout) <= 1


def copy_export(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for path in folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def test_a_damaged_export_names_the_file(exported, tmp_path):
    """A model file is checked when first read, with the first batch: before any prediction."""
    folder, manifest, _ = exported
    copy = copy_export(folder, tmp_path)
    name = manifest["models"][1]["file"]
    (copy / name).write_bytes((copy / name).read_bytes()[:-100])
    image = np.full((30, 30), 80, np.uint8)
    with pytest.raises(ExportError, match=rf"{name}: sha256 \w+ differs from manifest.json's"):
        Predictor.from_export(copy).predict(image)
    # Damaged and the manifest's digest made to match: onnxruntime refuses it, named.
    edited = json.loads((copy / MANIFEST).read_text())
    edited["models"][1]["sha256"] = sha256(copy / name)
    (copy / MANIFEST).write_text(json.dumps(edited))
    with pytest.raises(ExportError, match=rf"{name}: onnxruntime cannot load it"):
        Predictor.from_export(copy).predict(image)
    (copy / name).unlink()
    with pytest.raises(ExportError, match=rf"{name}: model file missing from the export"):
        Predictor.from_export(copy)


def test_an_export_without_its_manifest(exported, tmp_path):
    with pytest.raises(
        ExportError, match="manifest.json not found: .* is not a ptxseg ONNX export"
    ):
        Predictor.from_export(tmp_path)
    with pytest.raises(ExportError, match="no such folder"):
        Predictor.from_export(tmp_path / "absent")
    folder, _, _ = exported
    copy = copy_export(folder, tmp_path)
    edited = json.loads((copy / MANIFEST).read_text())
    left_out = onnx_name(ModelKey("segment", "seg_a", 1, "best"))
    edited["models"] = [m for m in edited["models"] if m["file"] != left_out]
    (copy / MANIFEST).write_text(json.dumps(edited))
    with pytest.raises(ExportError, match="no model file listed for segment/seg_a/fold1/best"):
        Predictor.from_export(copy)
    del edited["cascade"]
    (copy / MANIFEST).write_text(json.dumps(edited))
    with pytest.raises(EnsembleSpecError, match=r"manifest.json: key 'cascade' missing"):
        Predictor.from_export(copy)


def test_import_ptxseg_is_light():
    code = (
        "import sys, ptxseg\n"
        "assert 'torch' not in sys.modules and 'ptxseg.deploy' not in sys.modules\n"
        "assert ptxseg.Predictor.__name__ == 'Predictor'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- files


def test_files_of_ptxseg_predict(ensemble, tmp_path):
    _, _, predictor = ensemble
    images = radiographs(5)
    predictions = list(predictor.predict_many(images))
    _, timings = write_predictions(iter(predictions), tmp_path, total=5, quiet=True)
    table = pd.read_csv(tmp_path / "predictions.csv", dtype=str, keep_default_na=False)
    assert tuple(table.columns) == COLUMNS and len(table) == 5
    assert timings.images == 5 and timings.per_image is not None
    for prediction, row in zip(predictions, table.itertuples(), strict=True):
        assert isinstance(prediction, Prediction)
        mask = read_grey(tmp_path / f"{row.ImageId}_mask.png") > 0
        assert np.array_equal(mask, prediction.mask) and rle.encode(mask) == row.EncodedPixels
        assert float(row.uncertainty) == pytest.approx(prediction.uncertainty, abs=1e-6)
        assert float(row.calibrated_probability) == round(prediction.probability, 4)
        probability = read_grey(tmp_path / f"{row.ImageId}_probability.png")
        assert np.array_equal(probability, np.rint(prediction.probability_map * 255))
        assert (tmp_path / f"{row.ImageId}_overlay.png").is_file()


def test_threads_reach_both_backends(exported, ensemble, tmp_path, monkeypatch):
    """`ptxseg predict --threads N`: onnxruntime's threads per session; PyTorch's thread count
    (the process's), which `--results` passes to `TorchBackend.load`."""
    import onnxruntime as ort

    from ptxseg import cli
    from ptxseg.deploy import torch_backend

    folder, _, _ = exported
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), radiographs(1)[0])
    seen = []
    session = ort.InferenceSession

    def counted(path, options, **kwargs):
        seen.append(options.intra_op_num_threads)
        return session(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counted)
    args = ["predict", str(image), "--threads", "1", "--quiet"]
    assert cli.main([*args, "--model", str(folder), "--out", str(tmp_path / "onnx")]) == 0
    assert seen and set(seen) == {1}

    class Loaded(Exception):
        pass

    def load(cls, results, spec, device, threads):
        raise Loaded(threads)

    monkeypatch.setattr(torch_backend.TorchBackend, "load", classmethod(load))
    monkeypatch.setattr(torch_backend.EnsembleSpec, "from_results", lambda path: ensemble[0])
    with pytest.raises(Loaded) as loaded:
        cli.main([*args, "--results", str(tmp_path), "--out", str(tmp_path / "pt")])
    assert loaded.value.args == (1,)
    monkeypatch.undo()

    before = torch.get_num_threads()
    monkeypatch.setattr(torch_backend, "model_files", lambda results, spec: {})
    try:
        torch.set_num_threads(2)  # not the test processes' one: the call must set it
        torch_backend.TorchBackend.load(tmp_path, ensemble[0], "cpu", 1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_models_load_once_a_round_within_the_budget(ensemble, monkeypatch):
    """Models beyond the budget are loaded once per round, not per batch; the predictions are
    those of every model held in memory."""
    monkeypatch.setattr(predictor_module, "ROUND_IMAGES", 8)
    spec, models, everything = ensemble
    modules = {key: TTAModule(model, spec.passes).eval() for key, model in models.items()}
    keys = list(modules)
    resident = Resident(dict.fromkeys(keys, 1), modules.__getitem__, budget=3)
    predictor = Predictor(spec, TorchBackend(resident, CPU))
    images = radiographs(13)
    assert predictor.round_images(2) == 8  # 24 px: the images' cap, not the pixels'
    monkeypatch.setattr(predictor_module, "ROUND_PIXELS", 24**2 * 3)
    assert predictor.round_images(2) == 3 and predictor.round_images(4) == 4  # a batch at least
    monkeypatch.setattr(predictor_module, "ROUND_PIXELS", 24**2 * 100)
    got = list(predictor.predict_many(images, batch_size=2))
    expected = list(everything.predict_many(images, batch_size=2))
    assert [g.image_id for g in got] == [e.image_id for e in expected]
    for a, b in zip(got, expected, strict=True):
        assert a.probability == b.probability and np.array_equal(a.mask, b.mask)
        assert np.array_equal(a.probability_map, b.probability_map)
    # Rounds: the first batch (2 images), then 8 images (4 batches), then the last 3 images.
    rounds = 3
    assert len(resident.kept) == 3
    assert resident.loads == 3 + (len(keys) - 3) * rounds


def test_a_killed_export_resumes_keeping_the_graphs_it_finished(ensemble, tmp_path, monkeypatch):
    spec = spec_of(EXPORTED)
    keys = spec.model_keys()
    modules = torch_predictor(spec, {k: m for k, m in ensemble[1].items() if k in keys})
    modules = modules.backend.modules
    sources = {}
    for key in keys:  # the checkpoints the graphs come from (only their bytes matter here)
        sources[key] = tmp_path / f"{onnx_name(key)}.pt"
        sources[key].write_bytes(repr(key).encode())
    straight = write_export(spec, modules, tmp_path / "straight", "sha256:test", sources=sources)
    real, made = export_module._export_one, []

    def export_one(module, key, *args, **kwargs):
        if len(made) == 3:
            raise KeyboardInterrupt  # killed while making the fourth graph
        made.append(key)
        return real(module, key, *args, **kwargs)

    monkeypatch.setattr(export_module, "_export_one", export_one)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        write_export(spec, modules, out, "sha256:test", sources=sources)
    assert not (out / MANIFEST).exists()
    assert made == keys[:3]
    made.clear()
    monkeypatch.setattr(export_module, "_export_one", real)
    counted = []
    monkeypatch.setattr(
        export_module,
        "_export_one",
        lambda m, key, *a, **k: counted.append(key) or real(m, key, *a, **k),
    )
    resumed = write_export(spec, modules, out, "sha256:test", sources=sources)
    assert counted == keys[3:]  # the three finished graphs kept, their models not even loaded
    assert resumed == json.loads((out / MANIFEST).read_text())
    assert [m["sha256"] for m in resumed["models"]] == [m["sha256"] for m in straight["models"]]
    assert resumed["models"] == straight["models"]
    # Another checkpoint, a damaged graph: those two are made again, the rest kept.
    sources[keys[0]].write_bytes(b"retrained")
    (out / onnx_name(keys[4])).write_bytes(b"damaged")
    counted.clear()
    write_export(spec, modules, out, "sha256:test", sources=sources)
    assert counted == [keys[0], keys[4]]
    # Without sources (no checkpoint to compare), every graph is made afresh.
    counted.clear()
    write_export(spec, modules, out, "sha256:test")
    assert counted == keys


def test_the_float_map_keeps_the_models_precision(ensemble):
    """`Prediction.float_probability_map` (the Parametric Map's): the segmenters' blend of their
    models' float maps, without the cascade's uint8 steps; within their rounding of the map the
    cascade reads (half a 1/255 step each: a model's map, the blend, its resize to the image's
    size), and not in 1/255 steps."""
    _, _, predictor = ensemble
    for prediction in predictor.predict_many(radiographs(3), batch_size=2):
        precise, stepped = prediction.float_probability_map, prediction.probability_map
        assert precise.dtype == np.float32 and precise.shape == stepped.shape
        assert precise.min() >= 0.0 and precise.max() <= 1.0
        assert np.abs(precise - stepped).max() <= 1.5 / 255 + 1e-6
        assert not np.allclose(precise * 255, np.rint(precise * 255), atol=1e-3)
