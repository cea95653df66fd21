"""data.siim.root from a config file: the layout found at DAG build and logged, the index and its
one label file written from it; a download the index could not read stops the DAG build in
seconds, before any job, naming the folder and the fix."""

from __future__ import annotations

import time

import pytest
from dag import snakemake, write_config
from siim_layouts import competition, mirror, real_sample

from ptxseg.data.siim import read_index, read_rle_csv

pytestmark = [pytest.mark.workflow, pytest.mark.realdata]


def config_with_root(tmp_path, root):
    nih = tmp_path / "nih"
    nih.mkdir()
    (nih / "Data_Entry_2017.csv").write_text("Image Index,Finding Labels,Patient ID\n")
    return write_config(
        tmp_path / "root.yaml",
        "configs/tiny.yaml",
        data={
            "source": "files",
            "siim": {"root": root},
            "nih": {"image_dir": str(nih), "labels_csv": str(nih / "Data_Entry_2017.csv")},
        },
    )


def test_a_mirror_root_reaches_the_index(tmp_path, real_data):
    sample = real_sample(real_data)
    train, test = sample.ids[:-3], sample.ids[-3:]
    root = mirror(tmp_path / "siim", sample, train, test, twin=True)
    work = tmp_path / "work"
    config = config_with_root(tmp_path, str(root))
    result = snakemake(work, "results/data/siim_index.csv", "--cores", 1, "--configfile", config)
    assert "SIIM-ACR layout 'mirror'" in result.stderr
    index = read_index(work / "results" / "data" / "siim_index.csv")
    assert sorted(index.loc[index["split"] == "train", "image_id"]) == sorted(train)
    assert sorted(index.loc[index["split"] == "test", "image_id"]) == sorted(test)
    assert all(str(root / "pneumothorax") not in path for path in index["path"])
    labels = read_rle_csv(work / "results" / "data" / "siim_labels.csv")
    assert set(labels) == set(train)
    log = (work / "results" / "logs" / "index_siim" / "index_siim.log").read_text()
    assert log.count("identical copies of files found first") == 1 and "Traceback" not in log


def test_the_competition_download_alone_stops_the_dag_build(tmp_path, real_data):
    sample = real_sample(real_data)
    root = competition(tmp_path / "kaggle", sample, sample.ids[-3:], sample.ids[:-3])
    start = time.monotonic()
    result = snakemake(
        tmp_path / "work",
        "-n",
        "--configfile",
        config_with_root(tmp_path, [str(root)]),
        check=False,
    )
    assert result.returncode != 0 and time.monotonic() - start < 120
    said = result.stdout + result.stderr  # Snakemake reports a Snakefile's error on stdout
    assert f"{root / 'stage_2_images'}" in said and "no train images" in said
    assert "dicom-images-train" in said and "Job stats" not in said
