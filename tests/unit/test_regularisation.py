"""The EfficientNet regularisation as model options (#17): drop path, head dropout, BN momentum, SiLU.

Tiny inputs and narrow decoders keep it fast on two CPU cores.
"""

from __future__ import annotations

import pytest
import torch
from timm.layers import DropPath
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ptxseg.models import MODELS, build_model, drop_path_models, get_spec, set_batchnorm_momentum
from ptxseg.models.layers import DropoutConv2d, linear_drop_path_rates

NARROW = (32, 16, 16, 8, 8)  # decoder_channels of the U-Net entries that take them

# (name, options, input side): the builds whose drop path is tested
DROP_PATH_CASES = [
    pytest.param("efficientnet_b4", {}, 32, id="efficientnet_b4"),
    pytest.param("unet_efficientnet_b4", {"decoder_channels": NARROW}, 64, id="unet_b4-smp"),
    pytest.param(
        "unet_efficientnet_b4",
        {"decoder_channels": NARROW, "decoder_block": "residual"},
        64,
        id="unet_b4-residual",
    ),
    pytest.param(
        "attention_unet",
        {"decoder_channels": NARROW, "encoder": "efficientnet-b0"},
        64,
        id="attention-b0",
    ),
    pytest.param("scaled_unet", {"width": 0.5}, 64, id="scaled_unet"),
    pytest.param("scaled_unet_b1", {}, 64, id="scaled_unet_b1"),
]

# (name, options, input side): the builds whose head dropout is tested (no drop path in them, so
# in training only the dropout is random)
DROPOUT_CASES = [
    pytest.param("densenet169", {}, 32, id="densenet169"),
    pytest.param("xception", {}, 32, id="xception"),
    pytest.param("efficientnet_b4", {}, 32, id="efficientnet_b4"),
    pytest.param("unet_resnet34", {"decoder_channels": NARROW}, 64, id="unet_resnet34"),
    pytest.param(
        "unet_efficientnet_b4",
        {"decoder_channels": NARROW, "drop_path_rate": 0.0},
        64,
        id="unet_b4-smp",
    ),
    pytest.param(
        "unet_efficientnet_b4",
        {"decoder_channels": NARROW, "decoder_block": "standard", "drop_path_rate": 0.0},
        64,
        id="unet_b4-standard",
    ),
    pytest.param("attention_unet", {"decoder_channels": NARROW}, 64, id="attention_unet"),
    pytest.param("scaled_unet", {"width": 0.5}, 64, id="scaled_unet"),
]

# Parameters of each entry's default build at num_classes=2, as before the options existed (the
# scaled U-Nets' since B0 took EfficientNet-B0's depths, issue #30).
PARAMETERS = {
    "attention_unet": 24570922,
    "densenet169": 12487810,
    "efficientnet_b4": 17552202,
    "inceptionresnetv2": 54309538,
    "scaled_unet": 10286866,
    "scaled_unet_b1": 15711074,
    "scaled_unet_b2": 23104522,
    "unet_efficientnet_b4": 20225834,
    "unet_resnet34": 24436514,
    "xception": 20811050,
}


def _build(name: str, seed: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, num_classes=2, **options)


def _batch(side: int) -> torch.Tensor:
    return torch.randn(2, 1, side, side, generator=torch.Generator().manual_seed(1))


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _unzero(*models: nn.Module) -> None:
    """BatchNorm weights to one: the scaled U-Net's blocks start as the identity (their last
    BatchNorm's weight zero), so dropping their branch would change nothing at initialisation."""
    for model in models:
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                nn.init.ones_(m.weight)


def _two_train_passes(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.train()
    torch.manual_seed(3)
    with torch.no_grad():
        return model(x), model(x)


def _eval(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


# ----------------------------------------------------------------------------- drop path


def test_drop_path_models_are_those_whose_builder_takes_it():
    assert drop_path_models() == [
        "attention_unet",
        "efficientnet_b4",
        "scaled_unet",
        "scaled_unet_b1",
        "scaled_unet_b2",
        "unet_efficientnet_b4",
    ]
    for name, spec in MODELS.items():
        assert {"drop_path_rate", "dropout_rate"} <= set(spec.options), name


@pytest.mark.parametrize(("name", "options", "side"), DROP_PATH_CASES)
def test_drop_path_is_off_in_eval_and_on_in_training(name, options, side):
    x = _batch(side)
    dropped = _build(name, drop_path_rate=0.5, **options)
    plain = _build(name, drop_path_rate=0.0, **options)
    assert _same_state(dropped, plain)  # same parameters, keys and initialisation
    _unzero(dropped, plain)
    first = _eval(dropped, x)
    assert torch.equal(first, _eval(dropped, x))
    assert torch.allclose(first, _eval(plain, x), rtol=0, atol=1e-6)
    a, b = _two_train_passes(dropped, x)
    assert not torch.allclose(a, b)
    a, b = _two_train_passes(plain, x)  # rate 0: training is deterministic
    assert torch.equal(a, b)


def test_drop_path_rates_grow_linearly_with_the_block():
    assert linear_drop_path_rates(0.2, 4) == [0.0, 0.05, 0.1, 0.15000000000000002]
    net = _build("scaled_unet", drop_path_rate=0.4, width=0.5).net
    # forward order: encoder stages, then decoder stages (deepest first)
    paths = [m.drop_path for m in net.modules() if hasattr(m, "drop_path")]
    n = 2 * sum(net.depths) - net.depths[-1]
    assert len(paths) == n
    probs = [getattr(p, "drop_prob", 0.0) for p in paths]
    assert probs == pytest.approx(linear_drop_path_rates(0.4, n))
    assert isinstance(paths[0], nn.Identity)  # rate 0 for the first block: no module at all
    timm_net = _build("efficientnet_b4", drop_path_rate=0.2).net.backbone
    last = timm_net.blocks[-1][-1].drop_path
    assert last.drop_prob == pytest.approx(0.2 * 31 / 32)


def test_smp_efficientnet_encoder_keeps_its_own_rate_unless_given():
    # lukemelas' EfficientNet, as smp builds it, drops connections at 0.2 by default: kept, so a
    # recipe without drop_path_rate trains the model as before.
    for options in ({}, {"decoder_block": "residual"}):
        default = _build("unet_efficientnet_b4", decoder_channels=NARROW, **options)
        assert default.net.encoder._drop_connect_rate == 0.2
        given = _build("unet_efficientnet_b4", decoder_channels=NARROW, drop_path_rate=0.3)
        assert given.net.encoder._drop_connect_rate == 0.3


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("densenet169", {}),
        ("inceptionresnetv2", {}),
        ("xception", {}),
        ("unet_resnet34", {}),
    ],
)
def test_architecture_without_drop_path_refuses_a_rate(name, options):
    with pytest.raises(ValueError) as info:
        build_model(name, drop_path_rate=0.2, **options)
    message = str(info.value)
    assert f"model {name!r} has no drop path" in message
    assert "the models that can: attention_unet, efficientnet_b4, scaled_unet" in message
    # None is no drop path: accepted by every entry
    assert get_spec(name).options["drop_path_rate"] is None


def test_attention_unet_drop_path_needs_an_efficientnet_encoder():
    with pytest.raises(ValueError, match="encoder 'resnet34' has no drop path.*efficientnet-b0"):
        build_model("attention_unet", drop_path_rate=0.2)


@pytest.mark.parametrize("rate", [1.0, -0.1, "0.2", True])
@pytest.mark.parametrize("key", ["drop_path_rate", "dropout_rate"])
def test_rates_outside_zero_one_are_refused(key, rate):
    with pytest.raises(ValueError, match=key):
        build_model("scaled_unet", width=0.5, **{key: rate})


# ----------------------------------------------------------------------------- dropout


@pytest.mark.parametrize(("name", "options", "side"), DROPOUT_CASES)
def test_head_dropout_is_off_in_eval_and_on_in_training(name, options, side):
    x = _batch(side)
    dropped = _build(name, dropout_rate=0.5, **options)
    plain = _build(name, **options)
    plain.load_state_dict(dropped.state_dict())  # the same keys (Xception's init is not seeded)
    assert any(isinstance(m, nn.Dropout | nn.Dropout2d) and m.p == 0.5 for m in dropped.modules())
    first = _eval(dropped, x)
    assert torch.equal(first, _eval(dropped, x))
    assert torch.equal(first, _eval(plain, x))
    a, b = _two_train_passes(dropped, x)
    assert not torch.allclose(a, b)
    a, b = _two_train_passes(plain, x)
    assert torch.equal(a, b)


def test_smp_head_gets_dropout_before_its_convolution_with_its_keys():
    model = _build("unet_resnet34", decoder_channels=NARROW, dropout_rate=0.2)
    conv = model.net.segmentation_head[0]
    assert isinstance(conv, DropoutConv2d)
    assert isinstance(conv.dropout, nn.Dropout2d) and conv.dropout.p == 0.2
    plain = _build("unet_resnet34", decoder_channels=NARROW)
    assert type(plain.net.segmentation_head[0]) is nn.Conv2d
    # a checkpoint trained with dropout loads into the model built without it
    plain.load_state_dict(model.state_dict())


def test_classifier_dropout_option_and_dropout_rate_agree_or_fail():
    assert _build("densenet169", dropout_rate=0.3).net.dropout.p == 0.3
    assert _build("densenet169", dropout=0.3).net.dropout.p == 0.3
    assert _build("densenet169", dropout=0.3, dropout_rate=0.3).net.dropout.p == 0.3
    with pytest.raises(ValueError, match="give one of them"):
        build_model("densenet169", dropout=0.3, dropout_rate=0.2)


# ----------------------------------------------------------------------------- defaults


def test_default_builds_are_as_before():
    """All None: the parameters of before, no new module with an effect, the same keys with them."""
    for name in sorted(MODELS):
        default = _build(name)
        assert sum(p.numel() for p in default.parameters()) == PARAMETERS[name], name
        assert not any(
            isinstance(m, DropoutConv2d | nn.Dropout2d | DropPath) for m in default.modules()
        ), name
        extra = {"drop_path_rate": 0.2} if name in drop_path_models() else {}
        if name == "attention_unet":
            extra = {}  # its default encoder (resnet34) has no drop path
        regularised = _build(name, dropout_rate=0.2, **extra)
        assert list(regularised.state_dict()) == list(default.state_dict()), name


@pytest.mark.parametrize(
    ("name", "options", "side"),
    [
        pytest.param("unet_resnet34", {"decoder_channels": NARROW}, 64, id="unet_resnet34"),
        pytest.param("efficientnet_b4", {}, 32, id="efficientnet_b4"),
        pytest.param("scaled_unet", {}, 64, id="scaled_unet"),
    ],
)
def test_default_build_trains_and_evaluates_exactly_as_the_plain_model(name, options, side):
    # The library's own model (or the plain ScaledUNet) under the same seed, same batch.
    x = _batch(side)
    default = _build(name, **options)
    explicit = _build(name, drop_path_rate=None, dropout_rate=None, **options)
    if name == "unet_resnet34":
        import segmentation_models_pytorch as smp

        torch.manual_seed(0)
        reference = smp.Unet("resnet34", encoder_weights=None, classes=2, decoder_channels=NARROW)
    elif name == "scaled_unet":
        from ptxseg.models.scaled_unet.model import ScaledUNet

        torch.manual_seed(0)
        reference = ScaledUNet(2)
    else:  # timm's model is built inside PooledClassifier: the explicit build is the reference
        reference = explicit.net
    assert _same_state(default.net, reference)
    x3 = x.expand(-1, 3, -1, -1)
    torch.manual_seed(5)
    expected = reference.train()(x3)
    torch.manual_seed(5)
    assert torch.equal(default.train()(x), expected)
    torch.manual_seed(5)
    assert torch.equal(explicit.train()(x), expected)


# ----------------------------------------------------------------------------- SiLU


def test_silu_where_asked():
    net = _build("scaled_unet", width=0.5, activation="silu").net
    assert any(isinstance(m, nn.SiLU) for m in net.modules())
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())
    relu = _build("scaled_unet", width=0.5).net
    assert not any(isinstance(m, nn.SiLU) for m in relu.modules())
    for block in ("residual", "standard"):
        unet = _build(
            "unet_efficientnet_b4", decoder_channels=NARROW, decoder_block=block, activation="silu"
        ).net
        assert any(isinstance(m, nn.SiLU) for m in unet.decoder.modules())
        assert not any(isinstance(m, nn.ReLU | nn.LeakyReLU) for m in unet.decoder.modules())
    out = _build("scaled_unet", width=0.5, activation="silu")(_batch(32))
    assert out.shape == (2, 2, 32, 32)


def test_unknown_activation_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="unknown activation 'gelu'; valid: relu, silu"):
        build_model("scaled_unet", activation="gelu")
    with pytest.raises(ValueError, match="not to smp's Unet decoder"):
        build_model("unet_efficientnet_b4", activation="silu")  # smp's decoder is ReLU only


# ----------------------------------------------------------------------------- BN momentum


@pytest.mark.parametrize(
    ("name", "options"),
    [("scaled_unet", {"width": 0.5}), ("efficientnet_b4", {})],
)
def test_batchnorm_momentum_in_tensorflow_convention(name, options):
    model = _build(name, **options)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    before = [m.momentum for m in norms]
    assert set_batchnorm_momentum(model, None) == 0
    assert [m.momentum for m in norms] == before
    assert set_batchnorm_momentum(model, 0.99) == len(norms) > 0
    assert all(m.momentum == pytest.approx(0.01) for m in norms)
    for bad in (1.0, 0.0, -0.5, "0.99"):
        with pytest.raises(ValueError, match="tf_momentum"):
            set_batchnorm_momentum(model, bad)
