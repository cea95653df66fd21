"""The EfficientNet paper's training process (#17): rmsprop_tf against TensorFlow's RMSProp update,
the exponential schedule against its closed form, the EMA member against its recurrence, and the
recipe keys reaching the training settings. (The EMA resume test is in test_train.py, beside the
loop's other resume tests.)"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch
import yaml
from dag import ROOT
from timm.optim import RMSpropTF

from ptxseg import config as cfg
from ptxseg.layout import EMA
from ptxseg.recipes import member_names
from ptxseg.runtime.options import Runtime
from ptxseg.train.loop import ema_average
from ptxseg.train.schedules import LrSchedule, RmspropSpec, ScheduleSpec, build_optimiser
from ptxseg.train.settings import FitSettings

# ----------------------------------------------------------------------------- rmsprop_tf

X = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -2.0], [2.0, 1.0]])
Y = np.array([1.0, -2.0, 0.5, 3.0])
W0, B0 = np.array([0.5, -0.3]), 0.1
LR, WD = [0.1, 0.05, 0.02], 0.01  # a different rate each step, as a schedule would set
SPEC = RmspropSpec(decay=0.8, momentum=0.7, eps=0.01)  # not the defaults, so a swapped one shows


def _tensorflow_rmsprop(steps: int) -> np.ndarray:
    """TensorFlow's RMSPropOptimizer (tf.compat.v1, as the EfficientNet code uses it), written out
    in float64: ms starts at one; ms <- ms + (1 - rho) * (g^2 - ms);
    mom <- momentum * mom + lr * g / sqrt(ms + eps); var <- var - mom. The L2 weight decay is in
    the loss (wd / 2 * |w|^2), so g includes wd * w."""
    theta = np.append(W0, B0)  # weights then bias
    ms, mom = np.ones(3), np.zeros(3)
    features = np.hstack([X, np.ones((len(X), 1))])
    for step in range(steps):
        residual = features @ theta - Y
        g = 2.0 / len(X) * features.T @ residual + WD * theta  # d/dtheta of mean(r^2) + L2
        ms = ms + (1 - SPEC.decay) * (g**2 - ms)
        mom = SPEC.momentum * mom + LR[step] * g / np.sqrt(ms + SPEC.eps)
        theta = theta - mom
    return theta


def test_rmsprop_tf_is_tensorflows_update():
    model = torch.nn.Linear(2, 1)  # three parameters: two weights and a bias
    with torch.no_grad():
        model.weight.copy_(torch.tensor(W0[None]))
        model.bias.fill_(B0)
    optimiser = build_optimiser(model.parameters(), "rmsprop_tf", LR[0], WD, SPEC)
    assert isinstance(optimiser, RMSpropTF)
    x, y = torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)
    for step in range(3):
        for group in optimiser.param_groups:
            group["lr"] = LR[step]
        optimiser.zero_grad()
        torch.nn.functional.mse_loss(model(x).squeeze(1), y).backward()
        optimiser.step()
        got = np.append(model.weight.detach().numpy()[0], model.bias.item())
        np.testing.assert_allclose(got, _tensorflow_rmsprop(step + 1), rtol=1e-5, atol=1e-6)


def test_other_optimisers_ignore_the_rmsprop_constants():
    parameters = [torch.nn.Parameter(torch.zeros(1))]
    assert isinstance(build_optimiser(parameters, "adamw", 0.1, 0.0, SPEC), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimiser 'sgd'; valid: adam, adamw, rmsprop_tf"):
        build_optimiser(parameters, "sgd", 0.1)


# ----------------------------------------------------------------------------- exponential


def _schedule(peak=0.2):
    optimiser = build_optimiser([torch.nn.Parameter(torch.zeros(1))], "rmsprop_tf", peak)
    spec = ScheduleSpec("exponential", warmup_epochs=1, decay_factor=0.97, decay_epochs=2.4)
    return optimiser, LrSchedule(optimiser, spec, 10)


@pytest.mark.parametrize("epoch, batch", [(1, 0), (1, 3), (2, 4), (3, 2), (9, 1)])
def test_exponential_schedule_is_the_closed_form(epoch, batch):
    _, schedule = _schedule()
    schedule.step_batch(epoch, batch, 5)
    at = epoch + batch / 5  # fractional epochs since step 0, the warm-up included (official)
    assert schedule.lr == pytest.approx(0.2 * 0.97 ** (at / 2.4), rel=1e-12)


def test_exponential_schedule_warms_up_then_decays_every_batch_and_resumes():
    optimiser, schedule = _schedule()
    rates = []
    for epoch in range(4):
        for batch in range(5):
            schedule.step_batch(epoch, batch, 5)
            rates.append(schedule.lr)
    assert rates[:5] == pytest.approx([0.2 * (0.05 + 0.95 * k / 5) for k in range(1, 6)])
    # After warm-up the decay counted from step 0: the first batch after it is 1 epoch in.
    assert rates[5] == pytest.approx(0.2 * 0.97 ** (1 / 2.4))
    assert all(b < a for a, b in pairwise(rates[5:]))  # falls every batch
    assert rates[5 + 12] == pytest.approx(rates[5] * 0.97)  # one factor per 2.4 epochs (12 batches)
    assert schedule.cycle_ends() == []  # no cycle ends: no snapshot points
    # Resumed as the loop does: a fresh schedule on a fresh optimiser, then both states loaded.
    resumed_optimiser, resumed = _schedule()
    resumed_optimiser.load_state_dict(optimiser.state_dict())
    resumed.load_state_dict(schedule.state_dict())
    schedule.step_batch(4, 2, 5)
    resumed.step_batch(4, 2, 5)
    assert resumed.lr == schedule.lr == pytest.approx(0.2 * 0.97 ** (4.4 / 2.4))


# ----------------------------------------------------------------------------- EMA


class _One(torch.nn.Module):
    def __init__(self, value: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([value], dtype=torch.float64))


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_is_the_recurrence_with_the_official_decay_warmup(warmup):
    decay, values = 0.9, [1.0, 3.0, -2.0, 5.0]  # the initial weight, then one per optimiser step
    model = _One(values[0])
    average = ema_average(model, decay, warmup)
    expected = values[0]  # the shadow starts at the initial weights, as TensorFlow's
    for k, value in enumerate(values[1:], start=1):
        with torch.no_grad():
            model.w.fill_(value)  # what an optimiser step would have made of the weight
        average.update_parameters(model)
        d = min(decay, (1 + k) / (10 + k)) if warmup else decay  # k: the global step
        expected = d * expected + (1 - d) * value
        assert average.module.w.item() == pytest.approx(expected, rel=1e-12)
    # with warm-up: 2/11, 3/12, 4/13 (all below 0.9); without: 0.9 every step
    assert expected == pytest.approx(
        (
            ((1 * 2 / 11 + 3 * 9 / 11) * 3 / 12 + -2 * 9 / 12) * 4 / 13 + 5 * 9 / 13
            if warmup
            else ((1 * 0.9 + 3 * 0.1) * 0.9 + -2 * 0.1) * 0.9 + 5 * 0.1
        ),
        rel=1e-12,
    )


def test_ema_averages_batchnorm_statistics_too():
    model = torch.nn.BatchNorm1d(2)
    average = ema_average(model, 0.5, warmup=False)
    model.train()
    model(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))  # running_mean: 0.9 * 0 + 0.1 * [2, 4]
    average.update_parameters(model)
    torch.testing.assert_close(average.module.running_mean, torch.tensor([0.1, 0.2]))
    warmed = ema_average(torch.nn.BatchNorm1d(2), 0.5, warmup=True)
    model.num_batches_tracked.fill_(7)
    warmed.update_parameters(model)
    assert warmed.module.num_batches_tracked.item() == 7  # integer: the model's own count


# ----------------------------------------------------------------------------- recipe keys

EFFICIENTNET = {
    "epochs": 6,
    "optimiser": {"name": "rmsprop_tf", "rmsprop": {"decay": 0.8, "momentum": 0.5, "eps": 0.01}},
    "schedule": {"name": "exponential", "decay_factor": 0.9, "decay_epochs": 1.5},
    "swa": {"enabled": True},
    "ema": {"enabled": True, "decay": 0.99, "warmup": False},
}


def test_recipe_keys_reach_the_settings_and_name_the_ema_member():
    recipe = cfg.validate({"segment": {"recipe": EFFICIENTNET}}, cfg.load_schema())["segment"][
        "recipe"
    ]
    settings = FitSettings.from_config(recipe, 0, Runtime())
    assert settings.optimiser == "rmsprop_tf"
    assert settings.rmsprop == RmspropSpec(decay=0.8, momentum=0.5, eps=0.01)
    assert (settings.schedule.name, settings.schedule.decay_factor) == ("exponential", 0.9)
    assert settings.schedule.decay_epochs == 1.5
    assert (settings.ema_decay, settings.ema_warmup) == (0.99, False)
    assert settings.members == member_names(recipe) == ["best", "swa", EMA]
    assert EMA == "ema"  # the file names model_ema.pt and oof_ema.h5
    assert settings.one_model().members == ["best"]
    assert settings.fingerprint()["rmsprop"] == {"decay": 0.8, "momentum": 0.5, "eps": 0.01}


def test_default_recipe_keeps_adamw_cosine_and_no_ema():
    recipe = cfg.validate({}, cfg.load_schema())["segment"]["recipe"]
    settings = FitSettings.from_config(recipe, 0, Runtime())
    assert (settings.optimiser, settings.schedule.name) == ("adamw", "cosine_restarts")
    assert settings.ema_decay is None and EMA not in settings.members


# ----------------------------------------------------------------------------- to the model


def _preset_settings() -> FitSettings:
    """configs/full.yaml's scaling recipe (the preset), through the constructor the scripts use."""
    config = cfg.load(ROOT / "configs" / "full.yaml", cfg.load_schema())
    return FitSettings.from_config(config["scaling"]["recipe"], 0, Runtime())


def test_the_preset_from_the_config_file_reaches_the_built_model(caplog):
    from timm.layers import DropPath

    from ptxseg.train.run import _built_with, _model

    settings = _preset_settings()
    assert (settings.drop_path_rate, settings.dropout_rate, settings.bn_momentum) == (
        0.2,
        0.2,
        0.99,
    )
    built = _built_with("scaled_unet", {}, settings)
    assert built == {"drop_path_rate": 0.2, "dropout_rate": 0.2, "activation": "silu"}
    model = _model("scaled_unet", 1, settings, "none", None, built)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(m.momentum == pytest.approx(0.01) for m in norms)  # TF 0.99
    rates = [m.drop_prob for m in model.modules() if isinstance(m, DropPath)]
    # Growing with the block's index up to the recipe's rate, as EfficientNet's rate * i / n.
    assert rates == pytest.approx([0.2 * (i + 1) / (len(rates) + 1) for i in range(len(rates))])
    assert any(isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d)) for m in model.modules())
    # An architecture without stochastic depth trains without it, and says so.
    with caplog.at_level("INFO"):
        assert _built_with("unet_resnet34", {}, settings) == {"dropout_rate": 0.2}
    assert "drop_path_rate 0.2 not applied to unet_resnet34: it has no stochastic" in caplog.text
    assert "activation silu not applied to unet_resnet34: its activations are fixed" in caplog.text


def test_the_preset_schedule_from_the_config_file_is_the_paper_compressed():
    settings = _preset_settings()
    spec = settings.schedule
    assert spec.name == "exponential" and spec.decay_factor == 0.97
    optimiser = build_optimiser(
        [torch.nn.Parameter(torch.zeros(1))],
        settings.optimiser,
        settings.lr,
        settings.weight_decay,
        settings.rmsprop,
    )
    assert isinstance(optimiser, RMSpropTF)
    schedule = LrSchedule(optimiser, spec, settings.epochs)
    schedule.step_batch(settings.epochs - 1, 99, 100)  # the last batch of the run
    end = schedule.lr / settings.lr
    # The paper's total decay over its 350 epochs, 0.97 ** (350 / 2.4), within the warm-up's share.
    paper = 0.97 ** (350 / 2.4)
    assert paper < end < paper / 0.97 ** (spec.warmup_epochs / spec.decay_epochs + 1)


def test_drop_path_follows_the_encoder_an_architecture_is_built_with():
    from ptxseg.train.run import _built_with

    settings = _preset_settings()
    silu = {"activation": "silu"}  # the hand-written decoder lets the recipe choose it
    assert _built_with("attention_unet", {}, settings) == {"dropout_rate": 0.2, **silu}  # resnet34
    assert _built_with("attention_unet", {"encoder": "efficientnet-b0"}, settings) == {
        "encoder": "efficientnet-b0",
        "drop_path_rate": 0.2,
        "dropout_rate": 0.2,
        **silu,
    }
    # smp's own decoder is conv-BN-ReLU only; an entry's own activation beats the recipe's
    assert "activation" not in _built_with("unet_efficientnet_b4", {}, settings)
    assert "drop_path_rate" in _built_with("unet_efficientnet_b4", {}, settings)
    own = {"decoder_block": "residual", "activation": "relu"}
    assert _built_with("unet_efficientnet_b4", own, settings)["activation"] == "relu"


def _scaling_candidate_model(config_path, name: str, phi: int):
    """Candidate ``name`` of the config file's scaling search, built as its job builds it."""
    from ptxseg.train.run import _built_with, _model
    from ptxseg.train.scaling_job import ARCH, candidate_recipe

    scaling = cfg.load(config_path, cfg.load_schema())["scaling"]
    settings = FitSettings.from_config(scaling["recipe"], 0, Runtime())
    options, grown = candidate_recipe(name, scaling, settings)
    # B0 and B1 (phi 0 and 1): the official 0.2 dropout; drop path 0.2 at every phi
    assert grown.drop_path_rate == 0.2 == grown.dropout_rate
    return _model(ARCH, 1, grown, "none", None, _built_with(ARCH, options, grown)), grown


@pytest.mark.parametrize(
    "recipe",
    [
        pytest.param(None, id="full.yaml"),  # the shipped search, activation written out
        pytest.param({"preset": "efficientnet"}, id="preset-alone"),
    ],
)
@pytest.mark.parametrize(("name", "phi"), [("b0", 0), ("a1.20_b1.10_g1.10", 1)])
def test_silu_drop_path_and_dropout_of_the_preset_reach_the_scaled_unet(
    tmp_path, recipe, name, phi
):
    """From a config file's scaling section to the model its candidate job trains (issue #30)."""
    from timm.layers import DropPath

    path = ROOT / "configs" / "full.yaml"
    if recipe is not None:
        config = yaml.safe_load(path.read_text())
        config["scaling"]["recipe"] = recipe
        path = tmp_path / "preset.yaml"
        path.write_text(yaml.safe_dump(config))
    model, grown = _scaling_candidate_model(path, name, phi)
    modules = list(model.modules())
    assert grown.activation == "silu"
    assert any(isinstance(m, torch.nn.SiLU) for m in modules)
    assert not any(isinstance(m, torch.nn.ReLU) for m in modules)
    # rate * i / n over the n encoder and decoder blocks: the first block has none
    rates = [m.drop_prob for m in modules if isinstance(m, DropPath)]
    blocks = sum(model.net.depths) + sum(model.net.depths[:-1])
    assert rates == pytest.approx([grown.drop_path_rate * i / blocks for i in range(1, blocks)])
    dropouts = [m.p for m in modules if isinstance(m, torch.nn.Dropout | torch.nn.Dropout2d)]
    assert dropouts == [grown.dropout_rate]
