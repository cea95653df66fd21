"""OOF predictions apart from training (ptxseg.train.oof): every fold's kept models on the fold it
held out, in its folder, with the prediction job's TTA; a training's runtime, which has no TTA,
refuses to predict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_levers import _siim_repacks

from ptxseg.layout import OOF_CSV, OOF_SUMMARY, model_file
from ptxseg.models import build_model
from ptxseg.runtime import checkpoint
from ptxseg.runtime.options import Runtime
from ptxseg.train.oof import predict_oof, write_fold_oof

SIZE = 64
MEMBERS = ("best", "swa")
FLIPS = Runtime(amp=False, channels_last=False, tta=("none", "hflip"))


@pytest.fixture
def fold_jobs(tmp_path):
    """Two fold jobs' folders of a classifier, each with two kept (untrained) models."""
    repacks = _siim_repacks(tmp_path, sizes=(SIZE,), n=12)
    torch.manual_seed(0)
    fold_models = {}
    for fold in (0, 1):
        folder = tmp_path / "classify" / "densenet169" / f"fold{fold}"
        folder.mkdir(parents=True)
        meta = {"arch": "densenet169", "kind": "classifier", "fold": fold, "size": SIZE}
        fold_models[fold] = []
        for member in MEMBERS:
            path = model_file(folder, member)
            checkpoint.export_model(path, build_model("densenet169", 1), meta)
            fold_models[fold].append(path)
    data = dict(
        folds_csv=tmp_path / "folds.csv",
        manifest_csv=repacks[SIZE][0],
        stats_json=repacks[SIZE][1],
        size=SIZE,
    )
    return fold_models, data


def test_every_fold_is_predicted_on_its_held_out_images_beside_its_models(fold_jobs, tmp_path):
    fold_models, data = fold_jobs
    summaries = predict_oof(kind="classifier", fold_models=fold_models, runtime=FLIPS, **data)
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"image_id": str})
    for fold in fold_models:
        folder = tmp_path / "classify" / "densenet169" / f"fold{fold}"
        oof = pd.read_csv(folder / OOF_CSV, dtype={"image_id": str})
        held_out = folds[folds["fold"] == fold]
        assert oof["image_id"].tolist() == held_out["image_id"].tolist()
        assert oof["has_pneumothorax"].tolist() == held_out["has_pneumothorax"].tolist()
        for member in MEMBERS:
            assert oof[f"prob_{member}"].between(0, 1).all()
        summary = json.loads((folder / OOF_SUMMARY).read_text())
        assert summary["fold"] == summaries[fold]["fold"] == fold
        assert sorted(summary["members"]) == sorted(summaries[fold]["members"]) == sorted(MEMBERS)
        assert "auc" in summary["members"]["best"]
        assert summary["tta"] == [["none", 1.0], ["hflip", 1.0]]  # the job's TTA, as it ran


def test_the_jobs_tta_reaches_the_predictions(fold_jobs, tmp_path):
    fold_models, data = fold_jobs
    oof = tmp_path / "classify" / "densenet169" / "fold0" / OOF_CSV
    probabilities = {}
    for tta in (("none",), ("none", "hflip")):
        runtime = Runtime(amp=False, channels_last=False, tta=tta)
        write_fold_oof(kind="classifier", fold=0, models=fold_models[0], runtime=runtime, **data)
        probabilities[tta] = pd.read_csv(oof)["prob_best"].to_numpy()
    # An untrained network is no mirror image of itself: the flip's average moves every image.
    assert not np.allclose(probabilities[("none",)], probabilities[("none", "hflip")])


def test_a_training_runtime_has_no_tta_and_refuses_to_predict(fold_jobs):
    """A training job's `train` param has no tta (workflow/rules/common.smk, training_numerics)."""
    fold_models, data = fold_jobs
    section = {"device": "cpu", "num_workers": 0, "checkpoint_every_s": 0}
    runtime = Runtime.from_config(section, {"amp": False, "channels_last": False}, 1)
    assert runtime.tta == () and "tta" not in runtime.numerics()
    with pytest.raises(ValueError, match="train.tta"):
        write_fold_oof(kind="classifier", fold=0, models=fold_models[0], runtime=runtime, **data)


def test_models_of_several_folders_are_refused(fold_jobs):
    fold_models, data = fold_jobs
    mixed = [fold_models[0][0], fold_models[1][1]]
    with pytest.raises(ValueError, match="several folders"):
        write_fold_oof(kind="classifier", fold=0, models=mixed, runtime=FLIPS, **data)
