"""The EfficientNet preset per architecture and per stage, and the paper's constants as its keys
(issue #30, items 3 and 4): the learning-rate rule of the effective batch, the parameter groups
without weight decay, the stepped schedule counted from step 0 with the official warm-up, no
gradient clipping; each from a config file to the optimiser and schedule the trainer builds."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import yaml
from dag import ROOT

from ptxseg import config as cfg
from ptxseg.presets import batch_lr
from ptxseg.recipes import recipe_for
from ptxseg.runtime.options import Runtime
from ptxseg.train.loop import Members, _parts, _train_epoch
from ptxseg.train.schedules import LrSchedule, ScheduleSpec, build_optimiser, parameter_groups
from ptxseg.train.settings import FitSettings

# A segment stage on the preset, its architectures at other batches, one with accumulation, and
# progressive stages with their own batches (the last with its own rate).
SEGMENT = {
    "size": 64,
    "archs": {
        "unet_resnet34": {"weights": "none"},
        "unet_efficientnet_b4": {"weights": "none", "recipe": {"batch_size": 8}},
        "attention_unet": {"weights": "none", "recipe": {"batch_size": 8, "accumulate": 4}},
    },
    "recipe": {
        "preset": "efficientnet",
        "epochs": 40,
        "batch_size": 16,
        "stages": [
            {"size": 32, "epochs": 30, "batch_size": 32},
            {"size": 64, "epochs": 10},
        ],
    },
}


def _config_file(tmp_path, segment=SEGMENT) -> dict:
    """The config as the workflow reads it: written to a file, loaded and validated."""
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump({"segment": segment}))
    return cfg.load(path)


def _settings(config: dict, arch: str) -> FitSettings:
    return FitSettings.from_config(recipe_for(config, "segment", arch), 0, Runtime())


def _trainer_parts(model: torch.nn.Module, settings: FitSettings, tmp_path):
    """The optimiser and schedule the training loop builds for ``settings``."""
    return _parts(model, settings, Members(best=tmp_path / "best.pt"), {})


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1, bias=True),
        torch.nn.BatchNorm2d(4),
        torch.nn.SiLU(),
        torch.nn.Conv2d(4, 1, 1, bias=True),
    )


# ----------------------------------------------------------------------------- the rate rule


def test_the_rate_rule_is_the_papers():
    assert batch_lr(0.016, 4096) == pytest.approx(0.256)  # the paper: 0.256 at batch 4096
    assert batch_lr(0.016, 256) == pytest.approx(0.016)  # the official code's base rate
    assert batch_lr(0.016, 16) == pytest.approx(0.001)
    assert batch_lr(0.016, 8, accumulate=4) == batch_lr(0.016, 32)  # the effective batch counts


def test_the_preset_rate_follows_each_architectures_and_stages_effective_batch(tmp_path):
    """From a config file: the preset expands beneath the architectures' overrides, so
    unet_efficientnet_b4 at batch 8 trains at 0.0005, not the stage's 0.001; batch x accumulate
    counts; each stage's own batch sets its rate, a stage's own lr wins."""
    segment = yaml.safe_load(yaml.safe_dump(SEGMENT))
    segment["recipe"]["stages"][1]["lr"] = 0.0001
    config = _config_file(tmp_path, segment)
    expected = {
        "unet_resnet34": 0.016 * 16 / 256,  # 0.001
        "unet_efficientnet_b4": 0.016 * 8 / 256,  # 0.0005
        "attention_unet": 0.016 * 8 * 4 / 256,  # 0.002: an effective batch of 32
    }
    for arch, lr in expected.items():
        settings = _settings(config, arch)
        assert settings.lr == pytest.approx(lr), arch
        (_, first), (_, last) = settings.stage_plan(64)
        # Stage 0 at its own batch of 32 (x accumulate); stage 1 at its own written rate.
        assert first.batch_size == 32
        assert first.lr == pytest.approx(0.016 * 32 * settings.accumulate / 256), arch
        assert last.lr == 0.0001
        optimiser = _trainer_parts(_net(), first, tmp_path).optimiser
        assert [group["lr"] for group in optimiser.param_groups] == pytest.approx([first.lr] * 2)
    # Without the stage's rate, the last stage takes the rule at the recipe's batch.
    config = _config_file(tmp_path)
    (_, _), (_, last) = _settings(config, "unet_efficientnet_b4").stage_plan(64)
    assert last.batch_size == 8 and last.lr == pytest.approx(0.0005)


def test_a_rate_written_beside_the_preset_wins(tmp_path):
    segment = yaml.safe_load(yaml.safe_dump(SEGMENT))
    segment["archs"]["unet_resnet34"]["recipe"] = {"optimiser": {"lr": 0.0003}}
    config = _config_file(tmp_path, segment)
    assert _settings(config, "unet_resnet34").lr == 0.0003
    assert _settings(config, "unet_resnet34").lr_per_256 is None
    assert _settings(config, "unet_efficientnet_b4").lr == pytest.approx(0.0005)


def test_the_preset_decay_counts_each_stages_own_epochs(tmp_path):
    """Warm-up and decay are written for the official 350 epochs: each stage scales them to its
    own epochs, so the 30-epoch and the 10-epoch stage both end 145 steps of 0.97 down."""
    config = _config_file(tmp_path)
    for stage_epochs, (_, stage) in zip(
        (30, 10), _settings(config, "unet_resnet34").stage_plan(64), strict=True
    ):
        assert stage.epochs == stage_epochs
        parts = _trainer_parts(_net(), stage, tmp_path)
        schedule = parts.schedule
        assert schedule.epochs == stage_epochs
        warmup, decay = schedule.spec.scaled(stage_epochs)
        assert warmup == pytest.approx(5 * stage_epochs / 350)
        assert decay == pytest.approx(2.4 * stage_epochs / 350)
        schedule.step_batch(stage_epochs - 1, 99, 100)  # the stage's last batch
        assert schedule.lr / stage.lr == pytest.approx(0.97**145)


# ----------------------------------------------------------------------------- constants


def test_the_preset_keeps_weight_decay_off_batchnorm_and_biases(tmp_path):
    config = _config_file(tmp_path)
    settings = _settings(config, "unet_resnet34")
    assert (settings.weight_decay, settings.decay_norm_and_bias) == (1e-5, False)
    net = _net()
    optimiser = _trainer_parts(net, settings, tmp_path).optimiser
    decayed, free = optimiser.param_groups
    names = {id(p): name for name, p in net.named_parameters()}
    assert decayed["weight_decay"] == 1e-5 and free["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decayed["params"]) == ["0.weight", "3.weight"]
    assert sorted(names[id(p)] for p in free["params"]) == [
        "0.bias",
        "1.bias",
        "1.weight",
        "3.bias",
    ]
    # Every parameter once: a frozen one (a stage's encoder) is kept for when it thaws.
    net[0].weight.requires_grad_(False)
    groups = parameter_groups(net, 1e-5, False)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters())) == 6
    # Without the preset: one group, decay on everything.
    plain = FitSettings.from_config(cfg.validate({})["segment"]["recipe"], 0, Runtime())
    assert plain.decay_norm_and_bias is True
    (group,) = _trainer_parts(_net(), plain, tmp_path).optimiser.param_groups
    assert group["weight_decay"] == plain.weight_decay and len(group["params"]) == 6


def test_a_batchnorm_weight_is_not_decayed_by_a_step():
    """With no gradient, RMSProp's L2 term alone moves a decayed weight; BatchNorm's stays."""
    net = _net()
    optimiser = build_optimiser(parameter_groups(net, 0.5, False), "rmsprop_tf", 0.1)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    optimiser.step()
    after = dict(net.named_parameters())
    assert not torch.equal(after["0.weight"], before["0.weight"])
    for name in ("1.weight", "1.bias", "0.bias", "3.bias"):
        assert torch.equal(after[name], before[name]), name


def _tensorflow_rate(step: int, steps_per_epoch: int, peak: float) -> float:
    """utils.build_learning_rate of the official code: exponential_decay(staircase=True) of the
    global step, decay_steps = steps_per_epoch x 2.4, replaced by peak x step / warmup_steps
    while step < warmup_steps (5 epochs)."""
    warmup_steps = int(5 * steps_per_epoch)
    if step < warmup_steps:
        return peak * step / warmup_steps
    return peak * 0.97 ** math.floor(step / (steps_per_epoch * 2.4))


def test_the_stepped_schedule_is_the_official_one_counted_from_step_0():
    peak, batches = 0.2, 5
    optimiser = build_optimiser([torch.nn.Parameter(torch.zeros(1))], "rmsprop_tf", peak)
    spec = ScheduleSpec("exponential", warmup_epochs=5, warmup_from=0.0, staircase=True)
    schedule = LrSchedule(optimiser, spec, 20)
    rates = []
    for epoch in range(20):
        for batch in range(batches):
            schedule.step_batch(epoch, batch, batches)
            rates.append(schedule.lr)
    warmup = 5 * batches
    # The warm-up from 0: the official ramp one step on (no batch trains at rate 0).
    assert rates[:warmup] == pytest.approx([peak * (k + 1) / warmup for k in range(warmup)])
    # After it, the official rate at every step: 0.97 every 12 steps (2.4 epochs) from step 0.
    for step in range(warmup, len(rates)):
        assert rates[step] == pytest.approx(_tensorflow_rate(step, batches, peak), rel=1e-12)
    assert rates[warmup] == pytest.approx(peak * 0.97**2)  # 5 epochs in: two steps already
    # Constant within each 2.4 epochs, stepping at 24, 36, 48 ... steps (7.2 epochs: no float slip).
    changes = [k for k in range(warmup + 1, len(rates)) if rates[k] != rates[k - 1]]
    assert changes == list(range(36, len(rates), 12))
    # The continuous option: the same decay from step 0, smoothly per batch.
    fresh = build_optimiser([torch.nn.Parameter(torch.zeros(1))], "rmsprop_tf", peak)
    smooth = LrSchedule(fresh, ScheduleSpec("exponential", warmup_epochs=5, warmup_from=0.0), 20)
    smooth.step_batch(7, 1, batches)
    assert smooth.lr == pytest.approx(peak * 0.97 ** (7.2 / 2.4))


def test_reference_epochs_scale_warmup_and_decay_to_the_run():
    optimiser = build_optimiser([torch.nn.Parameter(torch.zeros(1))], "adamw", 1.0)
    spec = ScheduleSpec(
        "exponential", warmup_epochs=5, warmup_from=0.0, staircase=True, reference_epochs=350
    )
    assert spec.scaled(35) == pytest.approx((0.5, 0.24))
    schedule = LrSchedule(optimiser, spec, 35)
    schedule.step_batch(0, 4, 10)  # 0.4 epochs in: still warming up, 5 of its 5 batches
    assert schedule.lr == pytest.approx(1.0)
    schedule.step_batch(0, 5, 10)  # 0.5 epochs in: two decay steps (0.48) behind it
    assert schedule.lr == pytest.approx(0.97**2)
    with pytest.raises(ValueError, match="reference_epochs .* exponential schedule only"):
        ScheduleSpec("cosine_restarts", reference_epochs=350)


def test_no_gradient_clipping_under_the_preset(tmp_path, monkeypatch):
    """From the shipped full.yaml's search recipe (the preset) to the training loop's step."""
    config = cfg.load(ROOT / "configs" / "full.yaml")
    preset = FitSettings.from_config(config["scaling"]["recipe"], 0, Runtime())
    plain = FitSettings.from_config(config["segment"]["recipe"], 0, Runtime())
    assert preset.grad_clip is None and plain.grad_clip == 5.0
    calls = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, norm: calls.append(norm))
    batch = {"image": torch.randn(2, 1, 8, 8), "target": torch.ones(2, 1, 8, 8)}
    runtime = Runtime(amp=False, channels_last=False)
    for settings in (preset, plain):
        settings = replace(settings.one_model(), runtime=runtime)
        net = _net()
        parts = _trainer_parts(net, settings, tmp_path)
        _train_epoch(
            net,
            [batch],
            torch.nn.BCEWithLogitsLoss(),
            parts,
            settings,
            0,
            torch.device("cpu"),
            Members(best=tmp_path / "best.pt"),
        )
    assert calls == [5.0]  # the plain recipe's clip only
