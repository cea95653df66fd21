"""The training engine: metrics, losses, schedules, sampling, and the loop's resume, NaN and SWA paths."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from ptxseg.data.datasets import RepackedImages
from ptxseg.models import build_model
from ptxseg.runtime import checkpoint
from ptxseg.runtime.device import pick_device
from ptxseg.runtime.options import Runtime
from ptxseg.train.loop import Members, NonFiniteLossError, Task, _finish_swa, fit
from ptxseg.train.losses import build_loss
from ptxseg.train.metrics import (
    all_empty_score,
    classification_metrics,
    competition_score,
    dice_per_image,
    multilabel_auc,
    segmentation_metrics,
)
from ptxseg.train.sampling import epoch_indices, positive_fraction
from ptxseg.train.schedules import LrSchedule, ScheduleSpec, build_optimiser
from ptxseg.train.settings import FitSettings
from ptxseg.train.tasks import segmentation_task

# ----------------------------------------------------------------------------- metrics


def test_competition_metric_hand_worked_cases():
    empty = np.zeros((4, 4), bool)
    square = np.zeros((4, 4), bool)
    square[:2, :2] = True  # 4 pixels
    shifted = np.zeros((4, 4), bool)
    shifted[:2, 1:3] = True  # 4 pixels, 2 shared with square
    assert competition_score(empty, empty) == 1.0
    assert competition_score(empty, square) == 0.0
    assert competition_score(square, empty) == 0.0
    assert competition_score(square, square) == 1.0
    assert competition_score(shifted, square) == pytest.approx(2 * 2 / (4 + 4))
    # The mean over images, each image weighted the same whatever its size.
    predicted = np.stack([empty, square, shifted])
    truth = np.stack([empty, empty, square])
    assert dice_per_image(predicted, truth).tolist() == [1.0, 0.0, 0.5]
    assert competition_score(predicted, truth) == pytest.approx(0.5)
    assert all_empty_score(truth) == pytest.approx(2 / 3)


def test_segmentation_metrics_threshold_probabilities():
    truth = np.zeros((2, 8, 8), bool)
    truth[1, 2:6, 2:6] = True
    probabilities = truth.astype(np.float32) * 0.9 + 0.05
    metrics = segmentation_metrics(probabilities, truth)
    assert metrics == {"competition": 1.0, "all_empty": 0.5, "dice": 1.0, "mean_iou": 1.0}


def test_classifier_metrics():
    labels = np.array([0, 0, 1, 1])
    metrics = classification_metrics(labels, np.array([0.1, 0.6, 0.4, 0.9]))
    assert metrics["auc"] == pytest.approx(0.75)
    assert metrics["accuracy"] == 0.5 and metrics["f1"] == pytest.approx(0.5)
    assert np.isnan(classification_metrics(np.array([1, 1]), np.array([0.2, 0.9]))["auc"])


def test_multilabel_auc_per_class_and_mean():
    labels = np.array([[0, 1], [1, 1], [0, 0], [1, 0]])
    probabilities = np.array([[0.1, 0.8], [0.9, 0.7], [0.2, 0.3], [0.8, 0.1]])
    metrics = multilabel_auc(labels, probabilities, ["A", "B"])
    assert metrics["auc_A"] == 1.0 and metrics["auc_B"] == 1.0 and metrics["auc"] == 1.0


# ----------------------------------------------------------------------------- losses


@pytest.mark.parametrize("name", ["bce", "bce_dice", "focal", "lovasz"])
def test_segmenter_losses_are_lower_for_better_logits(name):
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    loss = build_loss(name, "segmenter")
    good = loss(target * 8 - 4, target)
    bad = loss(4 - target * 8, target)
    assert good < bad and torch.isfinite(good)


def test_classifier_losses_and_refusals():
    logits, target = torch.tensor([[2.0], [-2.0]]), torch.tensor([[1.0], [0.0]])
    assert build_loss("bce", "classifier")(logits, target) < 0.2
    assert build_loss("focal", "multilabel")(torch.zeros(3, 14), torch.ones(3, 14)) > 0
    with pytest.raises(ValueError, match="for segmenters"):
        build_loss("lovasz", "classifier")
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge", "segmenter")


# ----------------------------------------------------------------------------- schedules


def _optimiser(lr=1.0):
    return build_optimiser([torch.nn.Parameter(torch.zeros(1))], "adamw", lr)


def test_warmup_ramps_then_cosine_restarts_at_cycle_ends():
    optimiser = _optimiser()
    schedule = LrSchedule(
        optimiser, ScheduleSpec("cosine_restarts", warmup_epochs=1, cycle_epochs=2, min_lr=0.0), 5
    )
    rates = []
    for epoch in range(5):
        for batch in range(4):
            schedule.step_batch(epoch, batch, 4)
            rates.append(schedule.lr)
    assert rates[:4] == pytest.approx([0.2875, 0.525, 0.7625, 1.0])  # linear warm-up from 5%
    assert rates[4] == pytest.approx(1.0) and rates[7] < rates[5] < rates[4]  # annealing
    assert rates[12] == pytest.approx(1.0)  # restart after a 2-epoch cycle
    assert schedule.cycle_ends() == [3, 5]


def test_cycle_mult_and_other_schedules():
    schedule = LrSchedule(
        _optimiser(), ScheduleSpec("cosine_restarts", cycle_epochs=2, cycle_mult=2), 14
    )
    assert schedule.cycle_ends() == [2, 6, 14]
    plateau = LrSchedule(
        _optimiser(), ScheduleSpec("plateau", plateau_patience=0, plateau_factor=0.5), 5
    )
    plateau.step_epoch(1.0)
    plateau.step_epoch(0.5)  # mode max: worse, the rate halves
    assert plateau.lr == pytest.approx(0.5) and plateau.cycle_ends() == []
    constant = LrSchedule(_optimiser(), ScheduleSpec("constant"), 3)
    constant.step_batch(2, 0, 1)
    assert constant.lr == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        ScheduleSpec("linear")


# ----------------------------------------------------------------------------- sampling


def test_sampling_modes():
    positive = np.zeros(28, dtype=bool)
    positive[:8] = True
    rng = np.random.default_rng(0)
    assert sorted(epoch_indices(positive, "all", 0, 5, rng)) == list(range(28))
    assert sorted(epoch_indices(positive, "positive", 0, 5, rng)) == list(range(8))
    first = epoch_indices(positive, "positive_fraction", 0, 5, rng, 0.8, 0.4)
    last = epoch_indices(positive, "positive_fraction", 4, 5, rng, 0.8, 0.4)
    assert positive[first].mean() == pytest.approx(0.8) and positive[last].mean() == pytest.approx(
        0.4
    )
    assert len(set(last.tolist())) == len(last) == 20  # negatives drawn without repeats
    assert positive_fraction(2, 5, 0.8, 0.4) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="unknown sampling"):
        epoch_indices(positive, "balanced", 0, 5, rng)


# ----------------------------------------------------------------------------- the loop


@pytest.fixture
def tiny_set(tmp_path):
    rng = np.random.default_rng(0)
    ids, images, masks, positive = [], [], [], []
    for k in range(12):
        image = rng.integers(0, 255, (32, 32), dtype=np.uint8)
        mask = np.zeros((32, 32), np.uint8)
        if k % 2:
            mask[8:20, 4:14] = 255
            image[8:20, 4:14] //= 3  # darker, as a pneumothorax
        cv2.imwrite(str(tmp_path / f"{k}.png"), image)
        cv2.imwrite(str(tmp_path / f"{k}_mask.png"), mask)
        ids.append(str(k))
        images.append(tmp_path / f"{k}.png")
        masks.append(tmp_path / f"{k}_mask.png")
        positive.append(bool(k % 2))
    augment = __import__("ptxseg.data.transforms", fromlist=["build_augment"]).build_augment(
        {"transform": {"__class_fullname__": "HorizontalFlip", "p": 0.5}}
    )
    train = RepackedImages(
        ids[:8], images[:8], mean=0.5, std=0.25, masks=masks[:8], augment=augment
    )
    held_out = RepackedImages(ids[8:], images[8:], mean=0.5, std=0.25, masks=masks[8:])
    return train, held_out, np.array(positive[:8])


SETTINGS = FitSettings(
    epochs=4,
    batch_size=4,
    lr=0.01,
    schedule=ScheduleSpec("cosine_restarts", warmup_epochs=1, cycle_epochs=1),
    snapshots=2,
    swa_start=2,
    sampling="positive_fraction",
    monitor="competition",
    monitor_mode="max",
    seed=3,
    runtime=Runtime(amp=False, channels_last=False),
)


def _run(tmp_path, name, tiny_set, stop_after_epoch=None, settings=SETTINGS):
    train, held_out, positive = tiny_set
    torch.manual_seed(0)
    model = build_model("unet_resnet34", decoder_channels=(16, 16, 8, 8, 8))
    task = segmentation_task(
        {"name": "bce_dice"}, 4, torch.device("cpu"), positive, amp=False, channels_last=False
    )
    out = tmp_path / name
    members = Members(
        best=out / "best.pt",
        swa=out / "swa.pt",
        ema=out / "ema.pt",
        snapshots=[out / f"s{k}.pt" for k in range(settings.snapshots)],
        metrics_csv=out / "metrics.csv",
        state=out / "state.pt",
    )
    history = fit(
        model,
        train,
        held_out,
        task,
        settings,
        members,
        {"arch": "unet_resnet34"},
        torch.device("cpu"),
        stop_after_epoch=stop_after_epoch,
    )
    return history, members


def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_set):
    straight, members = _run(tmp_path, "straight", tiny_set)
    assert (
        len(straight) == 4 and members.swa.exists() and all(p.exists() for p in members.snapshots)
    )
    assert straight["snapshot"].tolist() == [0, 0, 1, 1]

    partial, resumed_members = _run(tmp_path, "resumed", tiny_set, stop_after_epoch=3)
    assert len(partial) == 3 and resumed_members.state.exists() and not resumed_members.swa.exists()
    # Snakemake deletes a killed job's outputs before the rerun: only the state (kept outside
    # the outputs in the pipeline) and the copies beside it remain.
    written = [resumed_members.best, resumed_members.snapshots[0], resumed_members.metrics_csv]
    assert all(path.exists() for path in written)
    for path in written:
        path.unlink()
    resumed, _ = _run(tmp_path, "resumed", tiny_set)  # the rerun of the "killed" job
    assert resumed["epoch"].tolist() == [1, 2, 3, 4]
    for a, b in [
        (members.best, resumed_members.best),
        (members.swa, resumed_members.swa),
        (members.snapshots[0], resumed_members.snapshots[0]),
        (members.snapshots[1], resumed_members.snapshots[1]),
    ]:
        left, right = checkpoint.load(a)["model"], checkpoint.load(b)["model"]
        assert left.keys() == right.keys()
        assert all(torch.equal(left[k], right[k]) for k in left), a.name
    np.testing.assert_allclose(straight["train_loss"], resumed["train_loss"])


def _weights(path: Path) -> dict:
    return checkpoint.load(path)["model"]


def test_killed_run_with_ema_resumes_to_the_same_average(tmp_path, tiny_set):
    # The EfficientNet recipe's parts together: rmsprop_tf, exponential decay (no snapshots), EMA.
    efficientnet = replace(
        SETTINGS,
        optimiser="rmsprop_tf",
        lr=0.001,
        schedule=ScheduleSpec("exponential", warmup_epochs=1, decay_epochs=0.5),
        snapshots=0,
        ema_decay=0.9,
    )
    assert efficientnet.members == ["best", "swa", "ema"]
    straight, members = _run(tmp_path, "straight", tiny_set, settings=efficientnet)
    partial, resumed_members = _run(
        tmp_path, "resumed", tiny_set, stop_after_epoch=2, settings=efficientnet
    )
    assert len(partial) == 2 and not resumed_members.ema.exists()
    assert checkpoint.load(resumed_members.state)["ema"]["n_averaged"] > 1
    resumed, _ = _run(tmp_path, "resumed", tiny_set, settings=efficientnet)
    assert resumed["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(straight["train_loss"], resumed["train_loss"])
    ema, again = _weights(members.ema), _weights(resumed_members.ema)
    assert ema.keys() == again.keys() and all(torch.equal(ema[k], again[k]) for k in ema)
    assert checkpoint.load(members.ema)["meta"]["member"] == "ema"
    # A model of its own, BatchNorm statistics included: neither the best model nor the SWA.
    for other in (_weights(members.best), _weights(members.swa)):
        assert any(not torch.equal(ema[k], other[k]) for k in ema if k.endswith("weight"))
        assert any(not torch.equal(ema[k], other[k]) for k in ema if k.endswith("running_mean"))


def test_resume_state_from_other_settings_is_not_used(tmp_path, tiny_set, caplog):
    _run(tmp_path, "run", tiny_set, stop_after_epoch=1)
    changed = FitSettings(**{**SETTINGS.__dict__, "lr": 0.02})
    with caplog.at_level(logging.WARNING):
        history, _ = _run(tmp_path, "run", tiny_set, settings=changed)
    assert "starting over" in caplog.text and history["epoch"].tolist() == [1, 2, 3, 4]


def test_swa_averages_and_recomputes_batchnorm(tmp_path, tiny_set):
    _, members = _run(tmp_path, "swa", tiny_set)
    swa = checkpoint.load(members.swa)["model"]
    last = checkpoint.load(members.snapshots[-1])["model"]  # the model after the final epoch
    weights = [
        k for k in swa if k.endswith("weight") and "bn" not in k and swa[k].dtype.is_floating_point
    ]
    assert any(not torch.equal(swa[k], last[k]) for k in weights)
    running = [k for k in swa if k.endswith("running_mean")]
    assert running and any(not torch.equal(swa[k], last[k]) for k in running)


def test_swa_batchnorm_statistics_are_collected_with_dropout_off(tiny_set):
    """The averaged model's BatchNorm statistics are those it has at inference: a dropout of 0.9
    before the BatchNorm (on in training, where it rescales what it keeps by 10) leaves them as
    they are without it, and the model is left in eval mode."""
    train, _, _ = tiny_set

    def finished(dropout: float) -> AveragedModel:
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 1), torch.nn.Dropout(dropout), torch.nn.BatchNorm2d(4)
        )
        swa = AveragedModel(net)
        _finish_swa(swa, train, SETTINGS, torch.device("cpu"))
        return swa

    dropped, kept = finished(0.9), finished(0.0)
    norm, kept_norm = dropped.module[2], kept.module[2]
    assert kept_norm.running_var.min() > 0
    assert torch.allclose(norm.running_mean, kept_norm.running_mean, atol=1e-6)
    assert torch.allclose(norm.running_var, kept_norm.running_var, rtol=1e-5)
    assert not any(module.training for module in dropped.modules())


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, tiny_set):
    train, held_out, positive = tiny_set
    _run(tmp_path, "nan", tiny_set, stop_after_epoch=1)
    state = tmp_path / "nan" / "state.pt"
    before = state.read_bytes()

    class Exploding(torch.nn.Module):
        def forward(self, logits, target):
            return torch.tensor(float("nan"), requires_grad=True)

    model = build_model("unet_resnet34", decoder_channels=(16, 16, 8, 8, 8))
    task = Task(loss=Exploding(), evaluate=lambda m, d: {}, positive=positive)
    members = Members(
        best=tmp_path / "nan" / "best.pt",
        swa=tmp_path / "nan" / "swa.pt",
        snapshots=[tmp_path / "nan" / "s0.pt", tmp_path / "nan" / "s1.pt"],
        state=state,
    )
    settings = FitSettings(
        **{**SETTINGS.__dict__, "seed": 4}
    )  # other settings: starts over, epoch 1
    with pytest.raises(NonFiniteLossError, match=r"loss became nan in epoch 1, batch 1.*state.pt"):
        fit(
            model,
            train,
            held_out,
            task,
            settings,
            members,
            {"arch": "unet_resnet34"},
            torch.device("cpu"),
        )
    assert state.read_bytes() == before  # the last good state is untouched
    assert checkpoint.load(state)["epoch"] == 0


def test_snapshot_count_must_fit_the_schedule(tmp_path, tiny_set):
    settings = FitSettings(**{**SETTINGS.__dict__, "snapshots": 5})
    with pytest.raises(ValueError, match="5 snapshots asked for, but the schedule ends only 3"):
        _run(tmp_path, "x", tiny_set, settings=settings)


def test_checkpoint_with_a_pickle_payload_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this would run on load",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": Payload()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="evil.pt: cannot be loaded safely"):
        checkpoint.load(path)


def test_gpu_requested_without_one_falls_back_with_a_warning(caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert pick_device("cuda").type == "cpu"
    assert "running on the CPU" in caplog.text
    assert pick_device("auto").type == "cpu"
    with pytest.raises(ValueError):
        pick_device("tpu")


def test_state_is_written_at_the_interval_and_after_the_last_epoch(tmp_path, tiny_set, monkeypatch):
    written = []
    save = checkpoint.save

    def spy(path, payload):
        if Path(path).name == "state.pt":
            written.append(payload["epoch"])
        save(path, payload)

    monkeypatch.setattr(checkpoint, "save", spy)
    slow_writes = Runtime(amp=False, channels_last=False, checkpoint_every_s=3600.0)
    sparse = FitSettings(**{**SETTINGS.__dict__, "runtime": slow_writes})
    history, members = _run(tmp_path, "sparse", tiny_set, settings=sparse)
    assert len(history) == 4 and written == [3]  # 0-based: after the last epoch only
    assert members.best.exists() and members.swa.exists()


def test_steps_per_epoch_cuts_each_epoch_to_that_many_batches(tmp_path, tiny_set):
    full, _ = _run(
        tmp_path, "full", tiny_set, settings=FitSettings(**{**SETTINGS.__dict__, "sampling": "all"})
    )
    short = FitSettings(**{**SETTINGS.__dict__, "sampling": "all", "steps_per_epoch": 1})
    history, _ = _run(tmp_path, "short", tiny_set, settings=short)
    assert (full["images"] > SETTINGS.batch_size).all()
    assert (history["images"] == SETTINGS.batch_size).all()


def _staged_settings(tmp_path, span: str | None) -> list[FitSettings]:
    """The stages' settings of a segment recipe read from a config file: 2 + 2 epochs, the
    positive share sliding 0.8 -> 0.4 (``span`` as written, or the schema's default)."""
    import yaml

    from ptxseg import config as cfg
    from ptxseg.recipes import recipe_for

    sampling = {"mode": "positive_fraction", "start": 0.8, "end": 0.4}
    if span is not None:
        sampling["span"] = span
    recipe = {
        "batch_size": 4,
        "stages": [{"size": 32, "epochs": 2}, {"size": 64, "epochs": 2}],
        "sampling": sampling,
        "monitor": "competition",
        "monitor_mode": "max",
    }
    path = tmp_path / f"span-{span}.yaml"
    path.write_text(yaml.safe_dump({"segment": {"size": 64, "recipe": recipe}}))
    config = cfg.load(path)
    settings = FitSettings.from_config(recipe_for(config, "segment", "unet_resnet34"), 3, Runtime())
    return [replace(stage, runtime=SETTINGS.runtime) for _, stage in settings.stage_plan(64)]


@pytest.mark.parametrize(
    ("span", "images"),
    [
        # One slide over the 4 epochs: the 2nd stage's epochs are the run's 3rd and 4th, at
        # shares 0.53 and 0.4: 4 positives and round(4 x 0.47 / 0.53) = 3, then all 4, negatives.
        (None, [7, 8]),
        ("run", [7, 8]),
        # Restarted: the 2nd stage begins again at 0.8 (4 positives, 1 negative), then 0.4.
        ("stage", [5, 8]),
    ],
)
def test_the_positive_share_slides_once_over_the_stages(tmp_path, tiny_set, span, images):
    first, second = _staged_settings(tmp_path, span)
    whole = span != "stage"
    assert (first.sampling_offset, first.sampling_epochs) == ((0, 4) if whole else (0, None))
    assert (second.sampling_offset, second.sampling_epochs) == ((2, 4) if whole else (0, None))
    history, _ = _run(tmp_path, f"second-{span}", tiny_set, settings=second)
    assert history["images"].tolist() == images


def test_the_full_config_slides_the_positive_share_once_over_its_stages():
    from dag import ROOT

    from ptxseg import config as cfg
    from ptxseg.recipes import recipe_for

    config = cfg.load(ROOT / "configs" / "full.yaml")
    recipe = recipe_for(config, "segment", "unet_resnet34")
    assert recipe["sampling"]["span"] == "run"
    plan = FitSettings.from_config(recipe, 0, Runtime()).stage_plan(1024)
    assert [(s.sampling_offset, s.sampling_epochs) for _, s in plan] == [(0, 40), (30, 40)]
    last = plan[-1][1]
    first_share = positive_fraction(last.sampling_offset, last.sampling_epochs, 0.8, 0.4)
    assert first_share == pytest.approx(0.8 - 0.4 * 30 / 39)  # 0.49, not a restart at 0.8
    assert positive_fraction(39, 40, 0.8, 0.4) == pytest.approx(0.4)
