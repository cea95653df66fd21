"""Untrusted files: pickles in checkpoints, and DICOM header text with path or control characters."""

from __future__ import annotations

import subprocess
import sys

import pydicom
import pytest
import torch
from dag import files_config, snakemake, train_first_segmenter_fold, write_config

from ptxseg.data.siim import read_index
from ptxseg.io import dicom

pytestmark = pytest.mark.workflow


class Payload:
    """Unpickling this runs a command: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_a_pickle_payload_is_refused(tmp_path):
    evil, marker = tmp_path / "evil.pt", tmp_path / "payload-ran"
    torch.save({"model": {}, "meta": {"arch": "unet_resnet34"}, "extra": Payload(marker)}, evil)
    config = write_config(
        tmp_path / "c.yaml",
        "configs/tiny.yaml",
        segment={"archs": {"unet_resnet34": {"weights": str(evil)}}},
    )
    assert (
        snakemake(
            tmp_path,
            "results/repack/siim/stats_32.json",
            "--cores",
            2,
            "--configfile",
            config,
            check=False,
        ).returncode
        == 0
    )
    result, log = train_first_segmenter_fold(tmp_path, config)
    assert result.returncode != 0
    assert str(evil) in log and "weights_only" in log.replace("weights-only", "weights_only")
    assert not marker.exists()  # the payload never ran


HOSTILE = "../../../tmp/pwned\x1b[2J\r\nFAKE LOG LINE"


def test_hostile_header_text_never_reaches_a_path_or_a_log_unescaped(tmp_path, data):
    victim = sorted(dicom.find_dicoms(data / "siim" / "dicom-images-train").values())[0]
    dataset = pydicom.dcmread(victim)
    dataset.PatientID = HOSTILE
    dataset.PatientName = HOSTILE
    dataset.ViewPosition = "PA\x00../x"
    dataset.save_as(victim)
    config = files_config(tmp_path, data)
    result = snakemake(
        tmp_path,
        "results/repack/siim/stats_32.json",
        "--cores",
        1,
        "--configfile",
        config,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    index = read_index(tmp_path / "results" / "data" / "siim_index.csv")
    row = index.set_index("image_id").loc[victim.stem]
    assert (
        "\x1b" not in row["patient_id"]
        and "\n" not in row["patient_id"]
        and "\\x1b" in row["patient_id"]
    )
    for log in (tmp_path / "results" / "logs").rglob("*.log"):
        text = log.read_text()
        assert "\x1b" not in text and "FAKE LOG LINE\n" not in text.replace("\\x0a", "")
    produced = [p for p in (tmp_path / "results").rglob("*") if "pwned" in p.name]
    assert not produced and not (tmp_path.parent / "pwned").exists()


def test_hostile_sop_instance_uid_is_refused_by_the_predict_command(tmp_path, data):
    victim = sorted(dicom.find_dicoms(data / "siim" / "dicom-images-test").values())[0]
    dataset = pydicom.dcmread(victim)
    dataset.SOPInstanceUID = "../../escaped"
    dataset.save_as(victim)
    (tmp_path / "results" / "ensemble").mkdir(parents=True)
    (tmp_path / "results" / "ensemble" / "ensemble.json").write_text(
        '{"preprocessing": {"n_folds": 0}, "members": {}, "gate_weights": {}, "segmenter_weights": {}}'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptxseg.cli",
            "predict",
            str(victim),
            "--results",
            str(tmp_path / "results"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert f"{victim}: ImageId '../../escaped' is not a valid image id" in result.stderr
    assert not (tmp_path / "escaped_mask.png").exists() and not list(tmp_path.rglob("escaped*"))
