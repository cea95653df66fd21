"""The DAG itself: dry runs of the shipped configs, lint, and real runs of the data stages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from dag import (
    ROOT,
    checkout_copy,
    full_config_with_stand_ins,
    job_counts,
    snakemake,
    write_config,
)

from ptxseg.config import validate
from ptxseg.contracts.ensemble_spec import EnsembleSpec
from ptxseg.contracts.scores import Basis, Kind, Level, ScoredAt, ScoreTable, SelectedOn
from ptxseg.data.repack import read_manifest
from ptxseg.data.siim import read_index
from ptxseg.ensemble.submission import validate_submission
from ptxseg.io import rle
from ptxseg.io.maps import SUFFIX, read_rows
from ptxseg.io.png import read_grey, write_png
from ptxseg.layout import Layout

pytestmark = pytest.mark.workflow


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
    counts = job_counts(result.stdout)  # all 3 segmenters and 4 classifiers on all 5 folds
    assert (counts["pretrain_nih"], counts["train_classifier"], counts["train_segmenter"]) == (
        3,
        20,
        15,
    )
    assert (counts["predict_classifier"], counts["predict_segmenter"], counts["submission"]) == (
        4,
        3,
        1,
    )


def test_dry_run_of_the_full_config(tmp_path):
    # The full recipe reads the real downloads; stand-ins with the same layout let the DAG build.
    config = full_config_with_stand_ins(tmp_path)
    result = snakemake(tmp_path, "-n", "--configfile", config)
    assert "index_siim" in result.stdout and "demo_siim" not in result.stdout
    assert "results/repack/siim/1024" in result.stdout
    counts = job_counts(result.stdout)
    assert (counts["pretrain_nih"], counts["train_classifier"], counts["train_segmenter"]) == (
        3,
        20,
        15,
    )
    # The scaling search, whose recipe is the EfficientNet preset (test_config checks its keys),
    # plans B0 and every candidate of the grid.
    result = snakemake(tmp_path, "-n", "results/scaling/summary.csv", "--configfile", config)
    assert job_counts(result.stdout)["scaling_candidate"] >= 2


def test_lint_is_clean(tmp_path):
    # From the repository root, as `make lint` runs it (the Snakefile's default config.yaml is
    # relative to it), in a copy: a Snakemake run writes its log into the root's .snakemake/.
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=checkout_copy(tmp_path / "checkout"),
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

    layout = Layout(str(tiny_run / "results"))
    for size in tiny["repack"]["sizes"]:  # one job, manifest and stats per size
        manifest = read_manifest(layout.repack_manifest("siim", size))
        assert set(manifest["size"]) == {size} and len(manifest) == len(index)
        for row in manifest.itertuples():
            assert (Path(layout.repack_root("siim")) / row.image).is_file()
        stats = json.loads(Path(layout.repack_stats("siim", size)).read_text())
        assert set(stats) == {str(size)}
        assert 0.2 < stats[str(size)]["mean"] < 0.8 and 0.1 < stats[str(size)]["std"] < 0.4

    nih_index = pd.read_csv(tiny_run / "results" / "data" / "nih_index.csv", dtype=str)
    assert len(nih_index) == demo["nih_images"]
    assert nih_index.groupby("patient_id")["split"].nunique().max() == 1
    nih_pngs = list(Path(layout.repack_images("nih", tiny["repack"]["nih_size"])).glob("*.png"))
    assert len(nih_pngs) == demo["nih_images"]


def test_tiny_run_ends_in_a_valid_submission(tiny_run):
    results = tiny_run / "results"
    index = read_index(results / "data" / "siim_index.csv")
    test = index[index["split"] == "test"]
    validate_submission(results / "submission.csv", test)  # raises on any problem
    table = pd.read_csv(results / "submission.csv", dtype=str)
    assert sorted(table["ImageId"]) == sorted(test["image_id"])
    ensemble = EnsembleSpec.from_results(results)
    oof = ensemble.searched.oof
    # The cascade chosen on these images can always draw nothing, so it is never below the
    # all-empty baseline on them; the cross-fitted headline can be (it was, 0.462 vs 0.5, on
    # 2026-12-07's tiny run): choices made on 8 images do not carry to the other 8.
    assert oof.cascade_in_sample >= oof.all_empty - 1e-9
    assert 0 <= oof.cascade <= 1
    scores = ScoreTable.read(results / "ensemble" / "scores.csv")
    levels = {Level.SINGLE, Level.ARCHITECTURE, Level.BLEND, Level.CASCADE, Level.ALL_EMPTY}
    assert levels <= {row.level for row in scores}
    # The cascade's score at the images' own size (256 px demo images) beside its score on the
    # maps, each row saying which; the pipeline's result is the first.
    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    side, size = tiny["data"]["demo"]["image_size"], tiny["segment"]["size"]
    assert len(scores.select(level=Level.CASCADE)) == 2
    native = scores.one(level=Level.CASCADE, basis=Basis.OWN_SIZE)
    assert native.scored_at == ScoredAt.own_size([(side, side)], "train-rle.csv")
    assert native.score == pytest.approx(oof.cascade_in_sample)
    at_size = scores.one(level=Level.CASCADE, basis=Basis.MAPS)
    assert at_size.scored_at.side == size
    assert at_size.score == pytest.approx(oof.cascade_in_sample_at_size)
    images = pd.read_csv(results / "ensemble" / "oof_images.csv", dtype={"image_id": str})
    assert images["dice_native"].mean() == pytest.approx(oof.cascade_in_sample)
    # The headline is cross-fitted: each fold's images by the choices made on the other folds.
    nested = scores.one(level=Level.CASCADE_NESTED)
    assert nested.scored_at == native.scored_at and nested.selected_on == SelectedOn.OTHER_FOLDS
    assert images["dice_native_nested"].mean() == pytest.approx(oof.cascade)
    low, high = oof.cascade_interval
    assert low <= oof.cascade <= high
    # A choice on the edge of its grid, unless that edge is a natural bound, is a warning that
    # names the key to widen.
    for name, (low, high) in {"top": (0, 1), "min_area": (0, None), "bottom": (0, 1)}.items():
        grid, chosen = (
            sorted(validate(tiny)["ensemble"]["grid"][name]),
            getattr(ensemble.cascade, name),
        )
        on_edge = (chosen == grid[-1] and (high is None or chosen < high)) or (
            chosen == grid[0] and chosen > low
        )
        warnings = ensemble.searched.warnings
        warned = any(w.startswith(f"ensemble.grid.{name}:") for w in warnings)
        assert on_edge == warned, (name, chosen, warnings)


def test_predict_command_on_new_files(tiny_run, tmp_path):
    results = tiny_run / "results"
    index = read_index(results / "data" / "siim_index.csv")
    test = index[index["split"] == "test"].head(2)
    png = tmp_path / "from_png.png"
    write_png(png, np.full((200, 180), 90, np.uint8))
    inputs = [str(tiny_run / p) for p in test["path"]] + [str(png)]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptxseg.cli",
            "predict",
            *inputs,
            "--results",
            str(results),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype=str)
    assert rows["ImageId"].tolist() == [*test["image_id"], "from_png"]
    submission = pd.read_csv(results / "submission.csv", dtype=str).set_index("ImageId")
    for row in rows.itertuples():
        mask_path = tmp_path / "out" / f"{row.ImageId}_mask.png"
        overlay = tmp_path / "out" / f"{row.ImageId}_overlay.png"
        assert mask_path.is_file() and overlay.is_file()
        mask = read_grey(mask_path) > 0
        assert rle.encode(mask) == row.EncodedPixels
        if row.ImageId in submission.index:  # the same cascade as the submission
            assert row.EncodedPixels == submission.loc[row.ImageId, "EncodedPixels"]
    assert read_grey(tmp_path / "out" / "from_png_mask.png").shape == (200, 180)
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "ptxseg.cli",
            "predict",
            str(png),
            "--results",
            str(tmp_path / "nothing"),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "ensemble.json not found" in missing.stderr


def test_tiny_run_trains_every_model_and_writes_oof(tiny_run):
    tiny = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    results = tiny_run / "results"
    folds = pd.read_csv(results / "data" / "siim_folds.csv", dtype={"image_id": str})
    pretrain = json.loads((results / "pretrain" / "densenet169" / "summary.json").read_text())
    assert pretrain["epochs"] == 1
    # recipe.steps_per_epoch (1 in the tiny config's pretraining) reaches the loop: the epoch
    # trained one batch, not the whole NIH train split.
    recipe = tiny["pretrain"]["recipe"]
    assert recipe["steps_per_epoch"] == 1 and pretrain["images_train"] > recipe["batch_size"]
    epoch = pd.read_csv(results / "pretrain" / "densenet169" / "metrics.csv").iloc[0]
    assert epoch["images"] == recipe["batch_size"]
    for fold in range(tiny["folds"]["n_folds"]):
        held_out = folds[folds["fold"] == fold]
        oof = pd.read_csv(
            results / "classify" / "densenet169" / f"fold{fold}" / "oof.csv",
            dtype={"image_id": str},
        )
        assert sorted(oof["image_id"]) == sorted(held_out["image_id"])  # exactly its held-out fold
        assert oof["prob_best"].between(0, 1).all()
        seg = results / "segment" / "unet_resnet34" / f"fold{fold}"
        ids = pd.read_csv(seg / "oof_ids.csv", dtype={"image_id": str})
        assert sorted(ids["image_id"]) == sorted(held_out["image_id"])
        kept = ("best", "swa", "ema", "snapshot0")  # tiny's recipe keeps an EMA of the weights
        for member in kept:
            maps = read_rows(seg / f"oof_{member}{SUFFIX}", slice(None))
            assert maps.dtype == np.uint8 and maps.shape == (len(ids), 32, 32)
            assert (seg / f"model_{member}.pt").is_file()
        # The prediction job reports each member's OOF score and its baseline, and the TTA
        # passes it took (tiny's train.tta: flips; its 2.0 scale is beyond the training's).
        summary = json.loads((seg / "oof_summary.json").read_text())
        for member in kept:
            assert {"competition", "all_empty"} <= set(summary["members"][member])
        assert summary["tta"] == [["none", 1.0], ["hflip", 1.0]]
        assert "members" not in json.loads((seg / "summary.json").read_text())  # the training's
        # The pseudo-labels take pseudo_labels.tta, not train.tta.
        log = results / "logs" / "pseudo_label_nih" / f"fold{fold}.log"
        assert "TTA passes (pseudo_labels.tta; " in log.read_text()
        assert "[('none', 1.0), ('vflip', 1.0)]" in log.read_text()
        metrics = pd.read_csv(seg / "metrics.csv")
        assert {"epoch", "lr", "train_loss", "val_loss", "competition", "snapshot"} <= set(
            metrics.columns
        )
    assert not list(
        (results / "checkpoints").rglob("*.pt")
    )  # resume states go once a job is complete
    # The EMA member is scored beside the others by the search, and differs from the best model.
    singles = ScoreTable.read(results / "ensemble" / "scores.csv").select(
        kind=Kind.SEGMENTER, level=Level.SINGLE
    )
    assert {"best", "swa", "ema", "snapshot0"} <= {row.member for row in singles}
    ema = torch.load(seg / "model_ema.pt", weights_only=True)["model"]
    best = torch.load(seg / "model_best.pt", weights_only=True)["model"]
    assert any(not torch.equal(ema[k], best[k]) for k in best if best[k].is_floating_point())


def test_every_rule_left_a_log_and_a_benchmark(tiny_run):
    for rule in (
        "demo_siim",
        "demo_nih",
        "index_siim",
        "folds_siim",
        "repack_siim",
        "index_nih",
        "repack_nih",
        "pretrain_nih",
        "train_classifier",
        "train_segmenter",
        "predict_classifier",
        "predict_segmenter",
        "ensemble",
        "submission",
    ):
        assert list((tiny_run / "results" / "logs" / rule).iterdir()), rule
        assert list((tiny_run / "results" / "benchmarks" / rule).glob("*.tsv")), rule


def test_second_run_has_nothing_to_do(tiny_run):
    result = snakemake(tiny_run, "-n", "--configfile", ROOT / "configs" / "tiny.yaml")
    assert "Nothing to be done" in result.stdout + result.stderr
