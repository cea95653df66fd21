"""The DAG itself: dry runs of the shipped configs, lint, and real runs of the data stages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT

from ptxseg.data.demo import DemoSpec, write_nih_demo, write_siim_demo
from ptxseg.data.repack import read_manifest
from ptxseg.data.siim import read_index
from ptxseg.io import dicom

pytestmark = pytest.mark.workflow


def snakemake(workdir, *args, check=True, timeout=600):
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        *map(str, args),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result


def write_config(path, base, **sections):
    config = yaml.safe_load((ROOT / base).read_text())
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(config))
    return path


def test_dry_run_of_the_demo_config(tmp_path):
    result = snakemake(tmp_path, "-n", "--configfile", ROOT / "config.yaml")
    for rule in (
        "demo_siim",
        "demo_nih",
        "index_siim",
        "repack_siim",
        "folds_siim",
        "index_nih",
        "repack_nih",
    ):
        assert rule in result.stdout


def test_dry_run_of_the_full_config(tmp_path):
    # The full recipe reads the real downloads; stand-ins with the same layout let the DAG build.
    data = tmp_path / "data"
    for folder in ("train", "test", "nih"):
        (data / folder).mkdir(parents=True)
    (data / "train-rle.csv").write_text("ImageId, EncodedPixels\n")
    (data / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    config = write_config(
        tmp_path / "full.yaml",
        "configs/full.yaml",
        data={
            "source": "files",
            "siim": {
                "train_dicom_dir": str(data / "train"),
                "test_dicom_dir": str(data / "test"),
                "train_rle_csv": str(data / "train-rle.csv"),
            },
            "nih": {
                "image_dir": str(data / "nih"),
                "labels_csv": str(data / "Data_Entry_2017.csv"),
            },
        },
    )
    result = snakemake(tmp_path, "-n", "--configfile", config)
    assert "index_siim" in result.stdout and "demo_siim" not in result.stdout
    assert "results/repack/siim/1024" in result.stdout
    counts = job_counts(result.stdout)
    assert (counts["pretrain_nih"], counts["train_classifier"], counts["train_segmenter"]) == (3, 20, 15)


def job_counts(dry_run_output: str) -> dict[str, int]:
    """Rule -> job count from the job-stats table of a dry run."""
    counts = {}
    for line in dry_run_output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_lint_is_clean():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--lint",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_unknown_config_key_fails_naming_it(tmp_path):
    config = write_config(tmp_path / "typo.yaml", "configs/tiny.yaml", repack={"sizez": [64]})
    result = snakemake(tmp_path, "-n", "--configfile", config, check=False)
    assert result.returncode != 0
    assert (
        "config key 'repack.sizez' is unknown; did you mean 'sizes'?"
        in result.stdout + result.stderr
    )
    wrong_type = write_config(
        tmp_path / "type.yaml", "configs/tiny.yaml", folds={"n_folds": "five"}
    )
    result = snakemake(tmp_path, "-n", "--configfile", wrong_type, check=False)
    assert result.returncode != 0 and "config key 'folds.n_folds'" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    snakemake(workdir, "--cores", 2, "--configfile", ROOT / "configs" / "tiny.yaml")
    return workdir


def test_tiny_run_indexes_repacks_and_folds(tiny_run):
    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    demo = tiny["data"]["demo"]
    index = read_index(tiny_run / "results" / "data" / "siim_index.csv")
    assert (index["split"] == "train").sum() == demo["siim_train"]
    assert (index["split"] == "test").sum() == demo["siim_test"]
    assert index.loc[index["split"] == "train", "has_pneumothorax"].sum() == round(
        demo["positive_fraction"] * demo["siim_train"]
    )

    folds = pd.read_csv(tiny_run / "results" / "data" / "siim_folds.csv", dtype={"image_id": str})
    assert set(folds["fold"]) == set(range(tiny["folds"]["n_folds"]))
    patients = folds.merge(index[["image_id", "patient_id"]], on="image_id")
    assert (patients.groupby("patient_id")["fold"].nunique() == 1).all()  # no patient in two folds
    assert patients["patient_id"].nunique() < len(patients)  # and patients do have several images

    manifest = read_manifest(tiny_run / "results" / "repack" / "siim" / "manifest.csv")
    assert set(manifest["size"]) == set(tiny["repack"]["sizes"])
    for row in manifest.itertuples():
        assert (tiny_run / "results" / "repack" / "siim" / row.image).is_file()
    stats = yaml.safe_load((tiny_run / "results" / "repack" / "siim" / "stats.json").read_text())
    assert set(stats) == {str(s) for s in tiny["repack"]["sizes"]}
    assert all(0.2 < entry["mean"] < 0.8 and 0.1 < entry["std"] < 0.4 for entry in stats.values())

    nih_index = pd.read_csv(tiny_run / "results" / "data" / "nih_index.csv", dtype=str)
    assert len(nih_index) == demo["nih_images"]
    assert nih_index.groupby("patient_id")["split"].nunique().max() == 1
    nih_pngs = list(
        (tiny_run / "results" / "repack" / "nih" / str(tiny["repack"]["nih_size"])).glob("*.png")
    )
    assert len(nih_pngs) == demo["nih_images"]


def test_every_rule_left_a_log_and_a_benchmark(tiny_run):
    for rule in (
        "demo_siim",
        "demo_nih",
        "index_siim",
        "folds_siim",
        "repack_siim",
        "index_nih",
        "repack_nih",
    ):
        assert list((tiny_run / "results" / "logs" / rule).iterdir()), rule
        assert list((tiny_run / "results" / "benchmarks" / rule).glob("*.tsv")), rule


def test_second_run_has_nothing_to_do(tiny_run):
    result = snakemake(tiny_run, "-n", "--configfile", ROOT / "configs" / "tiny.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """A small demo data set on disk, to be copied and damaged by the bad-input tests."""
    root = tmp_path_factory.mktemp("files")
    spec = DemoSpec(
        siim_train=8,
        siim_test=2,
        positive_fraction=0.5,
        image_size=128,
        nih_images=6,
        nih_rgba=1,
        max_images_per_patient=1,
    )
    write_siim_demo(root / "siim", spec, seed=5)
    write_nih_demo(root / "nih", spec, seed=5)
    return root


def files_config(tmp_path, data_root, **data):
    return write_config(
        tmp_path / "files.yaml",
        "configs/tiny.yaml",
        data={
            "source": "files",
            "siim": {
                "train_dicom_dir": str(data_root / "siim" / "dicom-images-train"),
                "test_dicom_dir": str(data_root / "siim" / "dicom-images-test"),
                "train_rle_csv": str(data_root / "siim" / "train-rle.csv"),
            },
            "nih": {
                "image_dir": str(data_root / "nih" / "images"),
                "labels_csv": str(data_root / "nih" / "Data_Entry_2017.csv"),
            },
            **data,
        },
        folds={"n_folds": 2, "group_by": "patient"},
    )


def leftovers(results):
    return [p for p in results.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_truncated_dicom_stops_the_run_naming_it(tmp_path, demo_files):
    data = tmp_path / "data"
    shutil.copytree(demo_files, data)
    victim = sorted(dicom.find_dicoms(data / "siim" / "dicom-images-train").values())[0]
    victim.write_bytes(victim.read_bytes()[:-500])
    config = files_config(tmp_path, data)
    result = snakemake(
        tmp_path, "results/data/siim_index.csv", "--cores", 1, "--configfile", config, check=False
    )
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "index_siim" / "index_siim.log").read_text()
    assert str(victim) in log and "truncated" in log and "data.stop_on_rejects" in log
    rejects = pd.read_csv(tmp_path / "results" / "data" / "siim_rejects.csv", dtype=str)
    assert rejects["image_id"].tolist() == [victim.stem]
    assert not (tmp_path / "results" / "data" / "siim_index.csv").exists()
    assert not leftovers(tmp_path / "results")

    # Told to skip rejects, the same data goes through without the damaged image.
    config = files_config(tmp_path, data, stop_on_rejects=False)
    snakemake(tmp_path, "results/data/siim_index.csv", "--cores", 1, "--configfile", config)
    index = read_index(tmp_path / "results" / "data" / "siim_index.csv")
    assert victim.stem not in set(index["image_id"]) and len(index) == 9


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("not_dicom", "not a DICOM file"),
        ("bad_rle", "RLE holds an odd number of values"),
        ("path_id", "ImageId '../x' is not a valid image id"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, demo_files, damage, expected):
    data = tmp_path / "data"
    shutil.copytree(demo_files, data)
    rle_csv = data / "siim" / "train-rle.csv"
    lines = rle_csv.read_text().splitlines()
    if damage == "not_dicom":
        fake = data / "siim" / "dicom-images-train" / "1.2.3" / "1.2.3.4.dcm"
        fake.parent.mkdir()
        fake.write_text("this is a text file with a .dcm name")
        lines.append("1.2.3.4,-1")
    elif damage == "bad_rle":
        image_id = lines[1].split(",")[0]
        lines[1] = f"{image_id},10 20 30"
    else:
        lines.append("../x,-1")
    rle_csv.write_text("\n".join(lines) + "\n")
    config = files_config(tmp_path, data)
    result = snakemake(
        tmp_path, "results/data/siim_index.csv", "--cores", 1, "--configfile", config, check=False
    )
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "index_siim" / "index_siim.log").read_text()
    assert expected in log
    if damage != "not_dicom":
        assert f"{rle_csv}: line" in log  # the file and the line at fault
    else:
        assert "1.2.3.4.dcm" in log
    assert not (tmp_path / "results" / "data" / "siim_index.csv").exists()
    assert not leftovers(tmp_path / "results")
