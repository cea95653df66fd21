"""`ptxseg predict` with inputs as people have them: bad files listed and skipped with the others'
rows kept, folders walked, colliding names refused, an earlier run's --out refused, resumed or
overwritten, --strict, the exit statuses, and rows kept after an interruption. The tiny-model
ensemble of test_predictor stands in for the loaded models."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from test_predictor import ENSEMBLE, radiographs, spec_of, tiny_models, torch_predictor

import ptxseg
from ptxseg import cli
from ptxseg.deploy import Predictor
from ptxseg.deploy.files import COLUMNS, write_predictions
from ptxseg.deploy.inputs import InputError, check_inputs
from ptxseg.deploy.out_folder import read_done
from ptxseg.io.dicom import write_dicom
from ptxseg.io.dicom_outputs import validate_with_dciodvfy
from ptxseg.io.png import write_png


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    spec = spec_of(ENSEMBLE)
    return torch_predictor(spec, tiny_models(spec))


@pytest.fixture
def loads(monkeypatch, predictor) -> list[str]:
    """`--model DIR` gives the tiny ensemble; the folders it was asked to load."""
    loaded = []

    def from_export(cls, path, providers=None, threads=None):
        loaded.append(path)
        return predictor

    monkeypatch.setattr(Predictor, "from_export", classmethod(from_export))
    return loaded


def predict(*args, out: Path) -> int:
    return cli.main(["predict", *map(str, args), "--model", "model", "--out", str(out), "--quiet"])


def dicom(path: Path, uid: str, image: np.ndarray | None = None, jpeg: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_dicom(
        path,
        radiographs(1)[0] if image is None else image,
        sop_instance_uid=uid,
        study_instance_uid="1.2.826.0.1.3680043.8.498.1",
        series_instance_uid="1.2.826.0.1.3680043.8.498.2",
        patient_id="p1",
        patient_age=50,
        patient_sex="F",
        view_position="PA",
        jpeg_quality=95 if jpeg else None,
    )
    return path


def png(path: Path, k: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, radiographs(k + 1)[k])
    return path


def truncated(path: Path, keep: float = 0.7) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def ids_in(out: Path) -> list[str]:
    return pd.read_csv(out / "predictions.csv", dtype=str)["ImageId"].tolist()


def test_bad_inputs_are_listed_and_skipped_and_the_others_predicted(tmp_path, loads, capsys):
    images = tmp_path / "images"
    good = [png(images / "a.png"), dicom(images / "b.dcm", "1.2.3.4"), png(images / "c.png", 1)]
    bad = {
        truncated(dicom(images / "cut.dcm", "1.2.3.5")): "pixel data is truncated",
        truncated(
            dicom(images / "cut_native.dcm", "1.2.3.6", jpeg=False)
        ): "pixel data cannot be decoded",
        images / "text.dcm": "not a DICOM file",
        images / "notes.png": "not a readable image",
        images / "empty.png": "empty file",
        tmp_path / "missing.png": "no such file or folder",
    }
    (images / "text.dcm").write_text("PatientName=nobody\n")
    (images / "notes.png").write_text("not an image\n")
    (images / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    assert predict(*good, *bad, out=out) == cli.EXIT_SOME_FAILED
    err = capsys.readouterr().err
    for path, reason in bad.items():
        assert f"skipped {path}: {reason}" in err
    assert "6 input(s) skipped" in err
    assert ids_in(out) == ["a", "1.2.3.4", "c"]
    assert (out / "1.2.3.4_mask.png").is_file()
    # --strict: the same inputs stop the command before any model is loaded.
    loads.clear()
    shutil.rmtree(out)
    assert predict(*good, *bad, "--strict", out=out) == cli.EXIT_ERROR
    assert loads == [] and not out.exists()
    assert "--strict: 6 input(s) cannot be read" in capsys.readouterr().err


def test_only_bad_inputs_load_no_model(tmp_path, loads, capsys):
    (tmp_path / "x.dcm").write_text("hello")
    assert predict(tmp_path / "x.dcm", out=tmp_path / "out") == cli.EXIT_ERROR
    assert loads == [] and "no input could be read" in capsys.readouterr().err


def test_folders_are_walked_recursively(tmp_path, loads, capsys):
    root = tmp_path / "hospital"
    dicom(root / "study" / "series" / "IM0001", "1.2.3.7")  # no extension: found by its preamble
    png(root / "study" / "x.PNG")
    png(root / "y.png", 1)
    (root / "README.txt").write_text("not an input")
    (root / "notes").write_text("no extension, no preamble: not an input")
    (root / "._y.png").write_bytes(b"\0" * 10)  # a hidden macOS resource fork: left alone
    checked = check_inputs([root, root / "y.png"])  # y.png named twice: predicted once
    assert [(Path(i.path).relative_to(root).as_posix(), i.image_id) for i in checked.todo] == [
        ("study/series/IM0001", "1.2.3.7"),
        ("study/x.PNG", "x"),
        ("y.png", "y"),
    ]
    assert checked.rejects == []
    (tmp_path / "empty").mkdir()
    assert predict(root, tmp_path / "empty", out=tmp_path / "out") == cli.EXIT_SOME_FAILED
    assert "empty: a folder with no .dcm, .png or DICOM file" in capsys.readouterr().err
    assert ids_in(tmp_path / "out") == ["1.2.3.7", "x", "y"]


def test_colliding_names_are_an_error_naming_both(tmp_path, loads, capsys):
    first, second = png(tmp_path / "a" / "x.png"), png(tmp_path / "b" / "x.png", 1)
    with pytest.raises(InputError, match=f"{first} and {second} \\(ImageId 'x'\\)"):
        check_inputs([tmp_path / "a", tmp_path / "b"])
    dicom(tmp_path / "c" / "1.dcm", "1.2.3.8")
    dicom(tmp_path / "c" / "copy.dcm", "1.2.3.8")  # one SOP Instance UID in two files
    assert predict(tmp_path / "c", out=tmp_path / "out") == cli.EXIT_ERROR
    assert f"{tmp_path / 'c' / '1.dcm'} and {tmp_path / 'c' / 'copy.dcm'}" in (
        capsys.readouterr().err
    )
    assert loads == [] and not (tmp_path / "out").exists()


def test_a_run_that_predicted_nothing_does_not_hold_its_out(tmp_path, loads):
    """A run stopped before its first image (a damaged model file) leaves a predictions.csv
    without rows: the next run into that folder goes ahead, with one header; one row is a run's."""
    image = png(tmp_path / "in" / "a.png", 0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text(",".join(COLUMNS) + "\n")
    assert predict(image, out=out) == cli.EXIT_OK
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == ",".join(COLUMNS) and len(lines) == 2 and ids_in(out) == ["a"]
    assert predict(image, out=out) == cli.EXIT_ERROR  # now it holds a row: refused


def test_an_earlier_runs_out_is_refused_resumed_or_overwritten(tmp_path, loads, capsys):
    images = [png(tmp_path / "in" / f"{name}.png", k) for k, name in enumerate("abc")]
    out = tmp_path / "out"
    assert predict(*images[:2], out=out) == cli.EXIT_OK
    (out / "notes.txt").write_text("the user's own file")
    before = (out / "predictions.csv").read_text()
    # again without a flag: refused, naming the folder and both flags, before any model loads
    loads.clear()
    assert predict(*images, out=out) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert f"{out} holds another run's outputs" in err and "--resume" in err
    assert "--overwrite" in err and loads == []
    assert (out / "predictions.csv").read_text() == before
    # --resume: a and b are skipped, c appended
    assert predict(*images, "--resume", out=out) == cli.EXIT_OK
    assert ids_in(out) == ["a", "b", "c"]
    assert (out / "predictions.csv").read_text().startswith(before)
    # --overwrite: the earlier outputs go, the user's file stays
    assert predict(images[2], "--overwrite", out=out) == cli.EXIT_OK
    assert ids_in(out) == ["c"] and not (out / "a_mask.png").exists()
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in out.iterdir()) == [
        "c_mask.png",
        "c_overlay.png",
        "c_probability.png",
        "notes.txt",
        "predictions.csv",
    ]
    with pytest.raises(SystemExit):  # one or the other
        predict(images[0], "--overwrite", "--resume", out=out)


def test_overwrite_never_removes_an_input(tmp_path, loads, capsys):
    out = tmp_path / "out"
    assert predict(png(tmp_path / "a.png"), out=out) == cli.EXIT_OK
    assert predict(out / "a_mask.png", "--overwrite", out=out) == cli.EXIT_ERROR
    assert "a_mask.png is an input: --overwrite would remove it" in capsys.readouterr().err
    assert (out / "a_mask.png").is_file()


def test_dicom_out_sources_are_checked_before_models_load(tmp_path, loads, capsys):
    good = dicom(tmp_path / "good.dcm", "1.2.3.9")
    broken = dicom(tmp_path / "broken.dcm", "1.2.3.10")
    dataset = pydicom.dcmread(broken)
    dataset.StudyInstanceUID = "1.2.abc"
    dataset.save_as(broken)
    out, dicom_out = tmp_path / "out", tmp_path / "dicom"
    assert predict(good, broken, "--dicom-out", dicom_out, out=out) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "broken.dcm: StudyInstanceUID '1.2.abc' is not a valid UID" in err
    assert loads == [] and not out.exists() and not dicom_out.exists()
    assert predict(good, "--dicom-out", dicom_out, out=out) == cli.EXIT_OK
    assert sorted(p.name for p in dicom_out.iterdir()) == ["1.2.3.9_capture.dcm", "1.2.3.9_seg.dcm"]
    # an earlier run's DICOM outputs are refused as its PNGs are
    assert predict(good, "--dicom-out", dicom_out, out=tmp_path / "other") == cli.EXIT_ERROR
    assert f"{dicom_out} holds another run's outputs" in capsys.readouterr().err


def test_rows_of_finished_images_survive_an_interruption(predictor, tmp_path):
    finished = list(predictor.predict_many(radiographs(3)))

    def interrupted():
        yield from finished
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_predictions(interrupted(), tmp_path, quiet=True)
    table = pd.read_csv(tmp_path / "predictions.csv", dtype=str)
    assert tuple(table.columns) == COLUMNS
    assert table["ImageId"].tolist() == ["image_0", "image_1", "image_2"]
    # a line cut off by a killed run: dropped on --resume, so that image is predicted again
    with open(tmp_path / "predictions.csv", "a") as handle:
        handle.write("image_3,1 2")
    assert read_done(tmp_path / "predictions.csv") == {"image_0", "image_1", "image_2"}
    assert (tmp_path / "predictions.csv").read_text().endswith("\n")
    write_predictions(iter(finished[:1]), tmp_path, quiet=True)  # appended, no second header
    with open(tmp_path / "predictions.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert [row[0] for row in rows] == ["ImageId", "image_0", "image_1", "image_2", "image_0"]


def test_ctrl_c_exits_130_with_the_rows_kept(tmp_path, loads, monkeypatch, capsys):
    images = [png(tmp_path / "in" / f"{name}.png", k) for k, name in enumerate("abc")]
    predict_many = Predictor.predict_many

    def interrupted(self, paths, batch_size=8, on_error=None):
        for k, prediction in enumerate(predict_many(self, paths, 1, on_error)):
            if k == 2:
                raise KeyboardInterrupt
            yield prediction

    monkeypatch.setattr(Predictor, "predict_many", interrupted)
    out = tmp_path / "out"
    assert predict(*images, out=out) == cli.EXIT_INTERRUPTED
    assert "--resume continues" in capsys.readouterr().err
    assert ids_in(out) == ["a", "b"]
    monkeypatch.setattr(Predictor, "predict_many", predict_many)
    assert predict(*images, "--resume", out=out) == cli.EXIT_OK
    assert ids_in(out) == ["a", "b", "c"]


def test_a_file_that_fails_after_the_check_is_skipped(predictor, tmp_path, loads, monkeypatch):
    images = [png(tmp_path / f"{name}.png", k) for k, name in enumerate("abc")]
    failed = []
    damaged = truncated(tmp_path / "b.png", 0.3)  # e.g. changed on disk after the check
    stream = predictor.predict_many(
        images, batch_size=2, on_error=lambda path, error: failed.append((path, str(error)))
    )
    assert [p.image_id for p in stream] == ["a", "c"]
    assert failed == [(damaged, f"{damaged}: not a readable image")]
    with pytest.raises(ValueError, match="b.png: not a readable image"):  # the API as before
        list(predictor.predict_many(images))


def test_colour_and_16_bit_pngs_are_converted_and_logged(tmp_path):
    grey = radiographs(1)[0]
    cv2.imwrite(str(tmp_path / "colour.png"), np.dstack([grey, grey, grey]))
    cv2.imwrite(str(tmp_path / "deep.png"), grey.astype(np.uint16) * 200)
    png(tmp_path / "plain.png")
    notes = check_inputs([tmp_path]).notes
    assert notes == [
        f"{tmp_path / 'colour.png'}: colour made grey",
        f"{tmp_path / 'deep.png'}: 16-bit stretched to 8 bits over its own range",
    ]


def test_a_real_siim_dicom_cut_short(real_data, tmp_path, loads, capsys):
    source = sorted((real_data / "siim-sample").glob("*.dcm"))[0]
    whole = shutil.copy(source, tmp_path / "whole.dcm")
    cut = truncated(Path(shutil.copy(source, tmp_path / "cut.dcm")), 0.9)
    checked = check_inputs([whole, cut])
    assert [i.path for i in checked.todo] == [str(whole)]
    assert [str(r) for r in checked.rejects] == [
        f"{cut}: pixel data is truncated (the file ends inside it)"
    ]


def test_the_hospital_dx_image_predicted_to_valid_dicom_outputs(real_data, tmp_path, loads):
    """highdicom's dx_image.dcm (MONOCHROME1, 169 x 211, Laterality empty) through `ptxseg
    predict --dicom-out --dicom-probability`: every output without a dciodvfy error (where
    dciodvfy is installed; CI requires it), the map the prediction's float probabilities."""
    source = real_data / "hospital" / "dx_image.dcm"
    out, dicom_out = tmp_path / "out", tmp_path / "dicom"
    args = ["--dicom-out", dicom_out, "--dicom-probability"]
    assert predict(source, *args, out=out) == cli.EXIT_OK
    (image_id,) = ids_in(out)
    outputs = sorted(dicom_out.iterdir())
    assert [p.name.removeprefix(image_id) for p in outputs] == [
        "_capture.dcm",
        "_probability.dcm",
        "_seg.dcm",
    ]
    probability = pydicom.dcmread(dicom_out / f"{image_id}_probability.dcm").pixel_array
    assert probability.dtype == np.float32 and probability.shape == (169, 211)
    assert not np.allclose(probability * 255, np.rint(probability * 255), atol=1e-3)
    if shutil.which("dciodvfy") is None:
        if os.environ.get("PTXSEG_REQUIRE_DCIODVFY") == "1":
            pytest.fail("PTXSEG_REQUIRE_DCIODVFY=1 but dciodvfy (dicom3tools) is not on PATH")
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    for path in outputs:
        assert validate_with_dciodvfy(path) == [], path.name


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--version"])
    assert stopped.value.code == 0 and capsys.readouterr().out == f"ptxseg {ptxseg.__version__}\n"
