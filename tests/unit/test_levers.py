"""The winners' levers in training and prediction: scale TTA, staged recipes with a frozen encoder,
the segmenter head's probability through OOF files into the gate, positives-only segmenters behind
the gate, and the config checks that keep them to segmenters."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from test_ensemble import AREAS, BOTTOMS, TOPS, search, synthetic_oof, write_oof
from torch import nn

from ptxseg import config as config_module
from ptxseg.contracts.scores import Kind, Level, Metric, ScoreTable
from ptxseg.data.repack import read_manifest
from ptxseg.ensemble.oof import Grid
from ptxseg.layout import METRICS, OOF_SUMMARY, head_source, model_file
from ptxseg.models import build_model
from ptxseg.models.parts import encoder_of
from ptxseg.runtime import checkpoint
from ptxseg.runtime.options import Runtime
from ptxseg.runtime.predict import mark_trained, model_passes, scaled_side, tta_passes, tta_predict
from ptxseg.runtime.tta import passes_for, trained_scales
from ptxseg.train.loop import Members, fit
from ptxseg.train.oof import write_fold_oof
from ptxseg.train.run import train_fold
from ptxseg.train.schedules import ScheduleSpec
from ptxseg.train.settings import FitSettings, StageSpec
from ptxseg.train.tasks import segmentation_task

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")

# ----------------------------------------------------------------------------- scale TTA


class IdentityMap(nn.Module):
    """A 'segmenter' whose probability map is its input (logit of it), with a head giving the
    input's mean: scale TTA must give the input back."""

    size_multiple = 32

    def forward(self, x):
        p = x.clamp(1e-4, 1 - 1e-4)
        return torch.logit(p), torch.logit(p.mean((1, 2, 3)))[:, None]


def test_tta_passes_are_flips_times_scales():
    assert tta_passes(["none", "hflip"]) == [("none", 1.0), ("hflip", 1.0)]
    assert tta_passes(["hflip", 0.75, 1.25]) == [("hflip", 0.75), ("hflip", 1.25)]
    assert tta_passes([0.5]) == [("none", 0.5)]
    with pytest.raises(ValueError, match="train.tta"):
        tta_passes(["rotate"])
    assert scaled_side(128, 0.75, 32) == 96 and scaled_side(128, 1.25, 32) == 160
    assert scaled_side(64, 0.1, 32) == 32  # never below one multiple


def test_a_model_takes_the_scale_passes_its_training_covered():
    """One rule (runtime.tta.passes_for): flips always, scales within the span of the training
    scales; a model trained at one size takes the flips at scale 1."""
    passes = tta_passes(["none", "hflip", 0.75, 1.0])
    flips = [("none", 1.0), ("hflip", 1.0)]
    assert trained_scales({"size": 32}) == (1.0,)
    staged = {"size": 1024, "stages": [{"size": 512}, {"size": 1024}]}
    assert trained_scales(staged) == (0.5, 1.0)
    assert passes_for(passes, trained_scales(staged)) == passes
    assert passes_for(passes, (1.0,)) == flips
    assert passes_for(tta_passes(["hflip", 2.0]), (1.0,)) == [("hflip", 1.0)]  # none kept
    assert passes_for(passes, None) == passes  # a model that records nothing: all
    # The rule is the model's: tta_predict averages the passes it takes.
    model = mark_trained(IdentityMap(), {"size": 64})
    assert model_passes(model, passes) == flips
    maps, _ = tta_predict(model, torch.full((1, 1, 64, 64), 0.3), passes, CPU)
    assert torch.allclose(maps, torch.tensor(0.3), atol=1e-5)


def test_scale_tta_with_an_identity_model_returns_the_input_map():
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    smooth = 0.2 + 0.6 * np.exp(-((yy - 0.4) ** 2 + (xx - 0.6) ** 2) / 0.1)
    batch = torch.tensor(np.stack([smooth, np.full_like(smooth, 0.3)]), dtype=torch.float32)
    passes = tta_passes(["none", "hflip", "vflip", 0.75, 1.0, 1.25])
    maps, head = tta_predict(IdentityMap(), batch[:, None], passes, CPU)
    assert maps.shape == (2, 128, 128)
    # A constant map comes back exactly; a smooth one within the resampling error.
    assert torch.allclose(maps[1], torch.tensor(0.3), atol=1e-5)
    assert np.abs(maps[0].numpy() - smooth).max() < 0.01
    assert head.shape == (2,) and head[1] == pytest.approx(0.3, abs=1e-4)


def test_scale_tta_resizes_each_prediction_back_before_averaging():
    """A model that only sees its input's size: each pass's map is resized to the input's."""

    class SizeMap(nn.Module):
        size_multiple = 32

        def forward(self, x):
            return torch.full_like(x, float(x.shape[-1]) / 1000.0)

    maps, head = tta_predict(SizeMap(), torch.zeros(1, 1, 64, 64), tta_passes([0.5, 1.0]), CPU)
    assert head is None and maps.shape == (1, 64, 64)
    expected = (torch.sigmoid(torch.tensor(0.032)) + torch.sigmoid(torch.tensor(0.064))) / 2
    assert torch.allclose(maps, expected)


# ----------------------------------------------------------------------------- staged recipes


def _siim_repacks(root: Path, sizes=(32, 64), n=15) -> dict[int, tuple[Path, Path]]:
    """A tiny SIIM repack at each size (darker rectangles as the pneumothoraces) and its folds."""
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (n, 128, 128)).astype(np.uint8)
    masks = np.zeros((n, 128, 128), np.uint8)
    for k in range(0, n, 2):
        masks[k, 30:80, 20:60] = 255
        base[k, 30:80, 20:60] //= 3
    ids = [f"1.2.{k}" for k in range(n)]
    pd.DataFrame(
        {"image_id": ids, "fold": np.arange(n) % 3, "has_pneumothorax": (masks.max((1, 2)) > 0) * 1}
    ).to_csv(root / "folds.csv", index=False)
    repacks = {}
    for size in sizes:
        folder = root / str(size)
        (folder / "train").mkdir(parents=True)
        (folder / "masks").mkdir()
        rows = []
        for k, image_id in enumerate(ids):
            image = cv2.resize(base[k], (size, size), interpolation=cv2.INTER_AREA)
            mask = cv2.resize(masks[k], (size, size), interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(folder / "train" / f"{image_id}.png"), image)
            cv2.imwrite(str(folder / "masks" / f"{image_id}.png"), mask)
            rows.append(
                {
                    "image_id": image_id,
                    "split": "train",
                    "size": size,
                    "image": f"train/{image_id}.png",
                    "mask": f"masks/{image_id}.png",
                }
            )
        pd.DataFrame(rows).to_csv(folder / f"manifest_{size}.csv", index=False)
        (folder / f"stats_{size}.json").write_text(
            json.dumps({str(size): {"mean": 0.45, "std": 0.2}})
        )
        repacks[size] = (folder / f"manifest_{size}.csv", folder / f"stats_{size}.json")
        assert len(read_manifest(repacks[size][0])) == n
    return repacks


STAGED = FitSettings(
    epochs=99,  # the stages' epochs replace it
    batch_size=4,
    lr=0.005,
    schedule=ScheduleSpec("constant", warmup_epochs=0),
    loss={"name": "bce_dice"},
    monitor="competition",
    monitor_mode="max",
    head_weight=0.3,
    stages=(StageSpec(32, 2, lr=0.01), StageSpec(64, 3, batch_size=3, freeze_encoder_epochs=1)),
    seed=11,
    runtime=Runtime(amp=False, channels_last=False, tta=("none",)),
)
SMALL = {"decoder_channels": [16, 16, 8, 8, 8]}


def _train_staged(root, repacks, name, settings=STAGED, stop_after_epoch=None):
    return train_fold(
        kind="segmenter",
        arch="unet_resnet34",
        fold=0,
        folds_csv=root / "folds.csv",
        manifest_csv=repacks[64][0],
        stats_json=repacks[64][1],
        size=64,
        settings=settings,
        options=SMALL,
        out_dir=root / name,
        state_path=root / "checkpoints" / f"{name}.pt",
        stop_after_epoch=stop_after_epoch,
        stage_repacks={32: repacks[32]},
    )


def test_a_staged_recipe_changes_size_and_freezes_the_encoder_at_the_right_epoch(
    tmp_path, monkeypatch
):
    repacks = _siim_repacks(tmp_path)
    seen = []  # (epoch of the stage, image side, encoder trainable, decoder trainable)
    original = fit.__globals__["_train_epoch"]

    def spy(model, loader, *args):
        epoch = args[3]
        result = original(model, loader, *args)
        encoder = list(encoder_of(model).parameters())
        side = next(iter(loader))["image"].shape[-1]
        seen.append((epoch, side, encoder[0].requires_grad, model.net.decoder.blocks[0].training))
        return result

    monkeypatch.setitem(fit.__globals__, "_train_epoch", spy)
    summary = _train_staged(tmp_path, repacks, "run")
    assert [s[:3] for s in seen] == [
        (0, 32, True),
        (1, 32, True),
        (0, 64, False),  # the first epoch of the second stage: encoder frozen
        (1, 64, True),
        (2, 64, True),
    ]
    metrics = pd.read_csv(tmp_path / "run" / METRICS)
    assert metrics["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert metrics["stage"].tolist() == [0, 0, 1, 1, 1]
    assert metrics["size"].tolist() == [32, 32, 64, 64, 64]
    assert metrics["lr"].tolist() == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.005])
    assert "head_auc" in metrics
    assert summary["epochs"] == 5 and [s["size"] for s in summary["stages"]] == [32, 64]
    # The hand-over and resume files of the stages are gone once the job is complete.
    assert not (tmp_path / "checkpoints" / "run.stages").exists()
    # The training writes no OOF prediction: the prediction job does (write_fold_oof), with its
    # TTA, whose scales reach the staged model over its stages' span (32 -> 64: 0.5 to 1.0).
    assert not list((tmp_path / "run").glob("oof*"))
    tta = ("none", "hflip", 0.5, 1.0, 1.5)
    oof_summary = write_fold_oof(
        kind="segmenter",
        fold=0,
        models=[model_file(tmp_path / "run", member) for member in STAGED.members],
        folds_csv=tmp_path / "folds.csv",
        manifest_csv=repacks[64][0],
        stats_json=repacks[64][1],
        size=64,
        runtime=replace(STAGED.runtime, tta=tta),
    )
    assert oof_summary["tta"] == [[f, s] for s in (0.5, 1.0) for f in ("none", "hflip")]
    assert json.loads((tmp_path / "run" / OOF_SUMMARY).read_text())["tta"] == oof_summary["tta"]
    # The head's OOF probability is written beside the maps, per member.
    oof = pd.read_csv(tmp_path / "run" / "oof_ids.csv", dtype={"image_id": str})
    folds = pd.read_csv(tmp_path / "folds.csv", dtype={"image_id": str})
    assert oof["image_id"].tolist() == folds.loc[folds["fold"] == 0, "image_id"].tolist()
    assert "prob_best" in oof and oof["prob_best"].between(0, 1).all()
    assert "head_auc" in oof_summary["members"]["best"]
    assert {"competition", "all_empty"} <= set(oof_summary["members"]["best"])


def test_a_staged_run_killed_inside_the_second_stage_resumes_to_the_same_weights(tmp_path):
    repacks = _siim_repacks(tmp_path)
    _train_staged(tmp_path, repacks, "straight")
    stopped = _train_staged(tmp_path, repacks, "resumed", stop_after_epoch=4)
    assert stopped == {"stopped_after_epoch": 4}
    assert (tmp_path / "checkpoints" / "resumed.stages" / "stage0" / "done.json").exists()
    _train_staged(tmp_path, repacks, "resumed")
    for member in ("best",):
        a = checkpoint.load(model_file(tmp_path / "straight", member))["model"]
        b = checkpoint.load(model_file(tmp_path / "resumed", member))["model"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    straight = pd.read_csv(tmp_path / "straight" / METRICS).drop(columns="seconds")
    resumed = pd.read_csv(tmp_path / "resumed" / METRICS).drop(columns="seconds")
    pd.testing.assert_frame_equal(straight, resumed)


def test_the_last_stage_must_be_at_the_stage_size():
    with pytest.raises(ValueError, match="last stage's size 32"):
        replace(STAGED, stages=(StageSpec(64, 1), StageSpec(32, 1))).stage_plan(64)
    plan = STAGED.stage_plan(64)
    assert [size for size, _ in plan] == [32, 64]
    assert plan[0][1].members == ["best"] and plan[1][1].freeze_encoder_epochs == 1


def test_a_run_killed_after_its_last_epoch_rewrites_its_metrics_on_resume(tmp_path):
    repacks = _siim_repacks(tmp_path, sizes=(32,), n=9)
    from ptxseg.train.run import _siim_split

    train, held, rows, _ = _siim_split(tmp_path / "folds.csv", *repacks[32], 32, 0, True, None)
    settings = replace(STAGED, stages=(), epochs=1, head_weight=None)
    task = segmentation_task({"name": "bce_dice"}, 4, CPU, rows["has_pneumothorax"].to_numpy() == 1)
    out = tmp_path / "out"
    members = Members(best=out / "best.pt", metrics_csv=out / "metrics.csv", state=out / "state.pt")

    def run():
        model = build_model("unet_resnet34", **SMALL)
        return fit(model, train, held, task, settings, members, {"arch": "x"}, CPU)

    first = run()
    (out / "metrics.csv").unlink()  # as Snakemake removes a failed job's outputs
    second = run()  # resumes after the last epoch: nothing to train
    assert len(first) == len(second) == 1
    assert pd.read_csv(out / "metrics.csv")["epoch"].tolist() == [1]


# ----------------------------------------------------------------------------- the gate's sources


def _with_heads(segmenters, probabilities):
    """Add a head's OOF probability column to every fold's oof_ids.csv of each segmenter."""
    for arch, folds in segmenters.items():
        for files in folds.values():
            table = pd.read_csv(files.ids_csv, dtype={"image_id": str})
            k = [int(i.split(".")[-1]) for i in table["image_id"]]
            table["prob_best"] = probabilities[arch][k]
            table.to_csv(files.ids_csv, index=False)


GRID = Grid(gates=(0.0, 0.5), tops=tuple(TOPS), min_areas=tuple(AREAS), bottoms=tuple(BOTTOMS))


def test_a_segmenter_head_joins_the_gate_when_it_beats_the_classifiers(tmp_path):
    truth, good, _ = synthetic_oof(n=40)
    labels = truth.any((1, 2))
    rng = np.random.default_rng(7)
    # The maps draw false positives on every empty image; only a good gate removes them.
    noisy = good.copy()
    noisy[~labels, 2:8, 2:8] = 230
    segmenters, classifiers = write_oof(tmp_path, truth, {"net": noisy}, {"coin": rng.random(40)})
    _with_heads(segmenters, {"net": np.where(labels, 0.8, 0.2) + rng.normal(0, 0.05, 40)})
    result = search(tmp_path, segmenters, classifiers, GRID)
    assert result.gate_weights[head_source("net")] >= 0.9
    scores = ScoreTable.read(tmp_path / "s.csv")
    assert scores.one(kind=Kind.GATE, level=Level.BLEND).score > 0.95
    heads = scores.select(kind=Kind.HEAD)
    assert {r.level for r in heads} == {Level.SINGLE, Level.ARCHITECTURE}
    assert {r.arch for r in heads} == {"net"}
    assert result.cascade.gate == 0.5
    ungated = scores.select(level=Level.CASCADE_UNGATED)
    cascade = scores.select(level=Level.CASCADE)
    assert len(ungated) == 2 and {r.scored_at for r in ungated} == {r.scored_at for r in cascade}
    assert all(r.cascade.gate == 0 for r in ungated)
    for row in cascade:  # the best gated cascade is here the chosen cascade itself
        gated = scores.one(level=Level.CASCADE_GATED, basis=row.scored_at.basis)
        assert gated.score == pytest.approx(row.score)
    # The gate is what removes the false positives: the cascade beats the ungated one.
    assert min(r.score for r in cascade) > max(r.score for r in ungated) + 0.2


def test_without_any_image_level_source_the_gate_stays_at_zero(tmp_path):
    truth, good, _ = synthetic_oof(n=20)
    segmenters, classifiers = write_oof(tmp_path, truth, {"net": good}, {})
    result = search(tmp_path, segmenters, classifiers, GRID)
    assert result.gate_weights == {} and result.cascade.gate == 0.0
    scores = ScoreTable.read(tmp_path / "s.csv")
    assert not scores.select(level=(Level.CASCADE_UNGATED, Level.CASCADE_GATED))
    assert len(scores.select(level=Level.CASCADE)) == 2


def test_a_positives_only_segmenter_is_scored_behind_the_gate(tmp_path):
    truth, good, _ = synthetic_oof(n=40)
    labels = truth.any((1, 2))
    rng = np.random.default_rng(3)
    # Trained on positives only: it finds a region in every image, empty or not.
    eager = good.copy()
    eager[~labels, 10:20, 10:20] = 240
    classifier = np.where(labels, 0.75, 0.25) + rng.normal(0, 0.05, 40)
    segmenters, classifiers = write_oof(tmp_path, truth, {"eager": eager}, {"seer": classifier})
    with pytest.raises(ValueError, match="only behind the gate"):
        search(
            tmp_path,
            segmenters,
            classifiers,
            replace(GRID, gates=(0.0,)),
            positive_only=["eager"],
        )
    result = search(tmp_path, segmenters, classifiers, GRID, positive_only=["eager"])
    assert result.searched.positive_only == ("eager",) and result.cascade.gate > 0
    scores = ScoreTable.read(tmp_path / "s.csv")
    tuned = scores.select(kind=Kind.SEGMENTER, level=Level.SINGLE, metric=Metric.COMPETITION_TUNED)
    assert len(tuned) == 2 and all(r.cascade.gate > 0 for r in tuned)  # each behind a gate
    assert max(r.score for r in scores.select(level=Level.ARCHITECTURE)) > 0.9


# ----------------------------------------------------------------------------- config


def _demo_config() -> dict:
    """config.yaml without its ablation, whose levers merge into the segment recipe."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.pop("ablation")
    return config


def test_config_keeps_the_levers_to_segmenters_and_checks_stages_and_crops():
    config = _demo_config()
    config["classify"]["recipe"]["head"] = {"enabled": True}
    config["segment"]["archs"]["unet_resnet34"]["recipe"] = {
        "stages": [{"size": 32, "epochs": 1}, {"size": 96, "epochs": 4, "crop": {"size": 128}}]
    }
    with pytest.raises(config_module.ConfigError) as error:
        config_module.validate(config)
    text = str(error.value)
    assert "'classify.recipe.head.enabled' (for xception): a segmenter option" in text
    assert "stages[1].size' is 96, but the last stage must train at segment.size (64)" in text
    assert "stages[1].crop.size' is 128, larger than the images it crops (96 px)" in text


def _settings_of(config: dict, arch: str = "unet_resnet34") -> FitSettings:
    from ptxseg.recipes import recipe_for

    validated = config_module.validate(config)
    return FitSettings.from_config(
        recipe_for(validated, "segment", arch),
        validated["seed"],
        Runtime.from_config(validated["runtime"], validated["train"], 1),
    )


def test_the_recipe_keys_reach_the_fit_settings_from_the_config_file():
    config = _demo_config()
    config["segment"]["recipe"] |= {
        "head": {"enabled": True, "weight": 0.25},
        "crop": {"size": 32, "positive_share": 0.7},
        "freeze_encoder_epochs": 1,
        "loss": {"name": "combined", "weights": {"bce": 1, "symmetric_lovasz": 0.5}},
    }
    config["train"]["tta"] = ["none", "hflip", 0.75, 1.25]
    settings = _settings_of(config)
    assert settings.head_weight == 0.25 and settings.model_options()["classification_head"]
    assert settings.crop == {"size": 32, "positive_share": 0.7}
    assert settings.freeze_encoder_epochs == 1
    assert settings.loss["weights"]["symmetric_lovasz"] == 0.5
    assert settings.runtime.tta == ("none", "hflip", 0.75, 1.25)
    task = segmentation_task(settings.loss, 2, CPU, np.array([True]), head_weight=0.25)
    assert type(task.loss).__name__ == "ImageHeadLoss"


def test_the_stages_reach_the_fit_settings_from_the_config_file():
    config = _demo_config()
    stages = [
        {"size": 32, "epochs": 2, "lr": 0.01},
        {"size": 64, "epochs": 4, "batch_size": 4, "freeze_encoder_epochs": 2},
    ]
    config["segment"]["archs"]["unet_resnet34"]["recipe"] = {
        "stages": stages,
        "crop": {"size": 32},  # beside stages the recipe's crop would be ignored: refused
    }
    with pytest.raises(config_module.ConfigError, match=r"crop.size' is set beside stages"):
        config_module.validate(config)
    stages[1]["crop"] = {"size": 32, "positive_share": 0.7}
    config["segment"]["archs"]["unet_resnet34"]["recipe"] = {"stages": stages}
    settings = _settings_of(config)
    plan = settings.stage_plan(config["segment"]["size"])
    assert [(size, s.epochs, s.lr, s.batch_size) for size, s in plan] == [
        (32, 2, 0.01, settings.batch_size),
        (64, 4, settings.lr, 4),
    ]
    assert plan[0][1].crop is None and plan[0][1].freeze_encoder_epochs == 0
    assert plan[1][1].freeze_encoder_epochs == 2
    assert plan[1][1].crop == {"size": 32, "positive_share": 0.7}
    assert plan[0][1].members == ["best"] and plan[1][1].members == settings.members


# ----------------------------------------------------------------------------- augmentation seeds


def test_reseeded_transforms_draw_independently_and_reproducibly(tmp_path):
    """Two flips at p=0.5 fired together on every image before (one seed for every transform)."""
    from ptxseg.data.datasets import RepackedImages
    from ptxseg.data.transforms import build_augment

    image = np.arange(256, dtype=np.uint8).reshape(16, 16)  # every pixel its own value
    cv2.imwrite(str(tmp_path / "a.png"), image)
    flips = {
        "transform": {
            "__class_fullname__": "Compose",
            "transforms": [
                {"__class_fullname__": "HorizontalFlip", "p": 0.5},
                {"__class_fullname__": "VerticalFlip", "p": 0.5},
            ],
        }
    }
    dataset = RepackedImages(
        ["a"], [tmp_path / "a.png"], mean=0.5, std=0.25, augment=build_augment(flips)
    )
    kinds = []
    for seed in range(200):
        dataset.reseed(seed)
        out = dataset[0]["image"][0]
        dataset.reseed(seed)
        assert torch.equal(out, dataset[0]["image"][0])  # the same seed, the same draws
        kinds.append((bool(out[0, 0] > out[0, -1]), bool(out[0, 0] > out[-1, 0])))  # (h, v)
    together = sum(h == v for h, v in kinds)
    assert 60 < together < 140, together  # about half, not always
