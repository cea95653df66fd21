"""The one module that knows the results layout: paths built and parsed back the same way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ptxseg import layout
from ptxseg.layout import Layout


def test_paths_and_wildcard_patterns_come_from_the_same_functions():
    results = Layout("out")
    assert results.model("segment", "unet_resnet34", 3, "swa") == (
        "out/segment/unet_resnet34/fold3/model_swa.pt"
    )
    pattern = results.model("segment", "{arch}", "{fold}", "{member}")
    assert pattern == "out/segment/{arch}/fold{fold}/model_{member}.pt"
    assert pattern.format(arch="unet_resnet34", fold=3, member="swa") == results.model(
        "segment", "unet_resnet34", 3, "swa"
    )
    assert results.model("pretrain", "densenet169", None, "best") == (
        "out/pretrain/densenet169/model_best.pt"
    )
    assert results.oof_maps("a", 0, "snapshot1") == "out/segment/a/fold0/oof_snapshot1.h5"
    assert results.test_maps("a", 2) == "out/predict/segment/a/fold2.h5"
    assert results.repack_manifest("siim", 512) == "out/repack/siim/manifest_512.csv"
    assert results.training_state("segment", "a", 1) == "out/checkpoints/segment/a/fold1.pt"
    assert results.training_state("pretrain", "a") == "out/checkpoints/pretrain/a.pt"


@pytest.mark.parametrize(
    ("path", "fold"),
    [
        ("results/segment/a/fold3/model_best.pt", 3),
        ("results/predict/segment/a/fold12.h5", 12),
        ("fold0", 0),
    ],
)
def test_fold_of_reads_the_fold_back(path, fold):
    assert layout.fold_of(path) == fold


def test_fold_of_a_path_without_a_fold_says_so():
    with pytest.raises(ValueError, match="no fold<k> part"):
        layout.fold_of("results/pretrain/a/model_best.pt")


def test_member_names_and_columns_round_trip():
    assert [layout.snapshot_index(layout.snapshot_member(k)) for k in (0, 7)] == [0, 7]
    assert layout.snapshot_index("best") is None and layout.snapshot_index("snapshotx") is None
    columns = ["image_id", layout.probability_column("best"), layout.probability_column("swa")]
    assert layout.probability_members(columns) == ["best", "swa"]
    assert layout.fold_columns(["image_id", "fold10", "fold2", "folder"]) == ["fold2", "fold10"]


def test_model_and_map_files_name_their_member():
    results = Layout()
    for member in ("best", "swa", "ema", layout.snapshot_member(2)):
        assert layout.model_member(results.model("segment", "a-round2", 3, member)) == member
        assert layout.model_member(results.model("pretrain", "x", None, member)) == member
        assert layout.oof_maps_member(results.oof_maps("a-round2", 3, member)) == member
    assert layout.model_member(results.oof_maps("a", 0, "best")) is None
    assert layout.oof_maps_member(results.test_maps("a", 0)) is None
    assert layout.oof_maps_member(results.fold_file("segment", "a", 0, layout.OOF_IDS)) is None


def test_training_files_name_their_job():
    results = Layout()
    metrics = results.fold_file("classify", "densenet169", 4, layout.METRICS)
    assert layout.training_job_of(metrics) == ("classify", "densenet169", 4)
    assert layout.training_job_of(results.pretrain_file("xception", layout.METRICS)) == (
        "pretrain",
        "xception",
        None,
    )
    bench = results.benchmark("train_segmenter", layout.job_name("a", 1))
    assert bench == "results/benchmarks/train_segmenter/a_fold1.tsv"
    assert layout.benchmark_rule_of(bench) == "train_segmenter"


def test_the_layout_imports_nothing_heavy():
    """The Snakefile asks it at DAG build."""
    code = (
        "import sys, ptxseg.layout, ptxseg.recipes\n"
        "heavy = {'torch', 'numpy', 'pandas'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
