"""`ptxseg predict --dicom-out` on the tiny run's test DICOMs: a SEG and a Secondary Capture per
DICOM (and a Parametric Map with --dicom-probability) that pass dciodvfy, read back to the
predicted mask and keep their source's patient and study; PNG inputs keep PNG outputs only; a
source with a malformed StudyInstanceUID stops the run before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pydicom
import pytest

from ptxseg.data.siim import read_index
from ptxseg.io import rle
from ptxseg.io.dicom_outputs import read_segmentation_mask, validate_with_dciodvfy
from ptxseg.io.png import write_png

pytestmark = pytest.mark.workflow


def ptxseg(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptxseg.cli", *map(str, args)], capture_output=True, text=True
    )


def _dciodvfy_errors(path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        if os.environ.get("PTXSEG_REQUIRE_DCIODVFY") == "1":
            pytest.fail("dciodvfy is required (PTXSEG_REQUIRE_DCIODVFY=1) but not on PATH")
        return []
    return validate_with_dciodvfy(path)


def test_dicom_inputs_get_a_valid_seg_and_capture_in_their_study(tiny_run, tmp_path):
    results = tiny_run / "results"
    index = read_index(results / "data" / "siim_index.csv")
    dicoms = [str(tiny_run / p) for p in index[index["split"] == "test"]["path"]]
    png = tmp_path / "plain.png"
    write_png(png, np.random.default_rng(0).integers(0, 255, (96, 80), dtype=np.uint8))
    out, dicom_out = tmp_path / "out", tmp_path / "dicom"
    run = ptxseg(
        "predict", *dicoms, png, "--results", results, "--out", out, "--quiet",
        "--dicom-out", dicom_out, "--dicom-probability",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    predictions = pd.read_csv(out / "predictions.csv", dtype=str, keep_default_na=False)
    assert len(predictions) == len(dicoms) + 1
    written = sorted(p.name for p in dicom_out.iterdir())
    assert len(written) == 3 * len(dicoms)  # SEG, capture and map per DICOM; none for the PNG
    assert not [name for name in written if name.startswith("plain")]
    for path, row in zip(dicoms, predictions.itertuples(), strict=False):
        source = pydicom.dcmread(path, stop_before_pixels=True)
        assert row.ImageId == source.SOPInstanceUID
        stem = dicom_out / row.ImageId
        mask = rle.decode(row.EncodedPixels, (source.Rows, source.Columns))
        np.testing.assert_array_equal(read_segmentation_mask(f"{stem}_seg.dcm"), mask)
        for suffix in ("_seg.dcm", "_capture.dcm", "_probability.dcm"):
            output = pydicom.dcmread(f"{stem}{suffix}", stop_before_pixels=True)
            assert _dciodvfy_errors(f"{stem}{suffix}") == [], suffix
            for key in ("PatientID", "StudyInstanceUID"):
                assert output.get(key) == source.get(key), (suffix, key)
            assert output.SeriesInstanceUID != source.SeriesInstanceUID
            assert output.SOPInstanceUID != source.SOPInstanceUID


def test_a_malformed_study_uid_stops_the_run_before_anything_is_written(tiny_run, tmp_path):
    results = tiny_run / "results"
    index = read_index(results / "data" / "siim_index.csv")
    good = str(tiny_run / index[index["split"] == "test"]["path"].iloc[0])
    broken = tmp_path / "broken.dcm"
    dataset = pydicom.dcmread(good)
    dataset.StudyInstanceUID = "1.2.abc"
    # another image: one SOPInstanceUID in two files would be an ImageId clash
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = (
        "1.2.826.0.1.3680043.8.498.77"
    )
    dataset.save_as(broken)
    out, dicom_out = tmp_path / "out", tmp_path / "dicom"
    run = ptxseg(
        "predict", good, broken, "--results", results, "--out", out, "--quiet",
        "--dicom-out", dicom_out,
    )  # fmt: skip
    assert run.returncode == 2
    assert "broken.dcm" in run.stderr and "StudyInstanceUID" in run.stderr
    assert not (out / "predictions.csv").exists()
    assert not dicom_out.exists() or not any(dicom_out.iterdir())
    # --dicom-probability alone is refused with a clear message.
    run = ptxseg("predict", good, "--results", results, "--out", out, "--dicom-probability")
    assert run.returncode == 2 and "--dicom-out" in run.stderr
