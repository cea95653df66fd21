"""The segmenters' image-level head (``classification_head``), `encoder_of` and `freeze`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base import SegmentationModel
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ptxseg.models import MODELS, build_model, encoder_of, freeze, model_names
from ptxseg.models.flops import flops_per_image
from ptxseg.models.outputs import split_logits

SIDE = 64
HEAD_PREFIX = "net.classification_head."

# Every segmenter entry at its defaults (the scaled U-Nets' defaults are their small B0-B2), and
# the hand-written decoder of unet_efficientnet_b4 beside its smp Unet.
CASES = [pytest.param(name, {}, id=name) for name in model_names("segmenter")] + [
    pytest.param(
        "unet_efficientnet_b4", {"decoder_block": "residual"}, id="unet_efficientnet_b4-residual"
    )
]


def _build(name, options, seed=0, **extra):
    torch.manual_seed(seed)
    return build_model(name, **options, **extra)


def _batch(batch=2):
    return torch.randn(batch, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def _ids(parameters):
    return {id(p) for p in parameters}


def _first_conv(model):
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def test_every_segmenter_entry_takes_the_option():
    for name in model_names("segmenter"):
        assert MODELS[name].options["classification_head"] is False, name
    with pytest.raises(ValueError, match=r"does not accept option\(s\) classification_head"):
        build_model("densenet169", classification_head=True)


@pytest.mark.parametrize(("name", "options"), CASES)
def test_head_returns_mask_and_image_logits_in_train_and_eval(name, options):
    model = _build(name, options, classification_head=True)
    x = _batch()
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            out = model(x)
        assert isinstance(out, tuple) and len(out) == 2
        masks, image = split_logits(out)
        assert masks.shape == (2, 1, SIDE, SIDE)
        assert image.shape == (2, 1)
        assert torch.isfinite(masks).all() and torch.isfinite(image).all()


@pytest.mark.parametrize(("name", "options"), CASES)
def test_without_head_the_model_is_the_plain_one(name, options):
    plain = _build(name, options).eval()
    off = _build(name, options, classification_head=False).eval()
    head = _build(name, options, classification_head=True).eval()
    plain_state, off_state = plain.state_dict(), off.state_dict()
    assert list(off_state) == list(plain_state)
    assert all(torch.equal(off_state[k], v) for k, v in plain_state.items())
    # the head only adds its own keys
    head_state = head.state_dict()
    assert [k for k in head_state if not k.startswith(HEAD_PREFIX)] == list(plain_state)
    assert any(k.startswith(HEAD_PREFIX) for k in head_state)
    assert all(head_state[k].shape == v.shape for k, v in plain_state.items())
    if not isinstance(head.net, SegmentationModel):
        # the hand-written U-Nets build the head last, so the other weights are drawn the same
        # (smp builds its head before initialising the decoder: there they differ)
        assert all(torch.equal(head_state[k], v) for k, v in plain_state.items())
    x = _batch()
    with torch.no_grad():
        out, masks = off(x), plain(x)
        head_masks, _ = head(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, SIDE, SIDE)
    assert torch.equal(out, masks)
    if not isinstance(head.net, SegmentationModel):
        assert torch.equal(head_masks, masks)  # the head does not touch the mask path


@pytest.mark.parametrize(("name", "options"), CASES)
def test_image_loss_backpropagates_into_the_encoder_only(name, options):
    model = _build(name, options, classification_head=True).train()
    _, image = model(_batch())
    F.binary_cross_entropy_with_logits(image, torch.tensor([[1.0], [0.0]])).backward()
    first = _first_conv(model).weight
    assert first.grad is not None and first.grad.abs().sum() > 0
    encoder = _ids(encoder_of(model).parameters())
    head = _ids(model.net.classification_head.parameters())
    for parameter in model.parameters():
        if id(parameter) not in encoder | head:  # decoder and mask head: off the image's path
            assert parameter.grad is None or not parameter.grad.any()


@pytest.mark.parametrize(("name", "options"), CASES)
def test_encoder_of_is_a_part_holding_the_first_convolution(name, options):
    model = _build(name, options, classification_head=True)
    keys = list(model.state_dict())
    encoder = encoder_of(model)
    assert isinstance(encoder, nn.Module)
    inside, everything = _ids(encoder.parameters()), _ids(model.parameters())
    assert inside and inside < everything
    assert id(_first_conv(model).weight) in inside
    assert not inside & _ids(model.net.classification_head.parameters())
    assert list(model.state_dict()) == keys  # finding the encoder registers nothing
    assert encoder_of(model.net) is not None  # the bare architecture works too


@pytest.mark.parametrize(("name", "options"), CASES)
def test_freeze_stops_the_encoder_and_its_batchnorm_statistics(name, options):
    model = _build(name, options, classification_head=True)
    model.train()
    encoder = encoder_of(model)
    freeze(encoder, True)
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert frozen == _ids(encoder.parameters())
    assert not any(m.training for m in encoder.modules())

    inside = {id(m) for m in encoder.modules()}
    norms = [(id(m) in inside, m) for m in model.modules() if isinstance(m, _BatchNorm)]
    assert any(enc for enc, _ in norms) and any(not enc for enc, _ in norms)
    before = [(enc, m, m.running_mean.clone(), m.running_var.clone()) for enc, m in norms]
    masks, image = model(_batch())
    (masks.mean() + image.mean()).backward()
    changed = {
        enc: [
            not (torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var))
            for e, m, mean, var in before
            if e == enc
        ]
        for enc in (True, False)
    }
    assert not any(changed[True]), "a frozen encoder's BatchNorm statistics moved"
    assert any(changed[False]), "the decoder's BatchNorm statistics should still move"
    assert all(p.grad is None for p in encoder.parameters())

    model.train()  # flips the frozen layers back: callers freeze after model.train()
    assert all(m.training for m in model.modules())
    freeze(encoder, False)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in encoder.modules())


def test_encoder_of_a_model_without_encoder_raises():
    model = build_model("densenet169")
    with pytest.raises(ValueError, match=r"model 'densenet169' .*has no encoder"):
        encoder_of(model)
    with pytest.raises(ValueError, match=r"model 'Linear' .*has no encoder"):
        encoder_of(nn.Linear(2, 1))


@pytest.mark.parametrize(
    ("name", "options"),
    [
        pytest.param("unet_resnet34", {}, id="smp"),
        pytest.param("attention_unet", {}, id="encoder-unet"),
        pytest.param("scaled_unet", {}, id="scaled-unet"),
    ],
)
def test_head_dropout_is_the_recipe_dropout_rate(name, options):
    def dropouts(model):
        return [m.p for m in model.net.classification_head.modules() if isinstance(m, nn.Dropout)]

    assert dropouts(_build(name, options, classification_head=True)) == []
    model = _build(name, options, classification_head=True, dropout_rate=0.3)
    assert dropouts(model) == [0.3]
    head = model.net.classification_head  # smp's: pool, flatten, dropout, linear, activation
    assert isinstance(head[0], nn.AdaptiveAvgPool2d) and isinstance(head[3], nn.Linear)
    assert head[3].out_features == 1
    _, image = model.train()(_batch())
    image.sum().backward()
    assert head[3].weight.grad is not None


def test_flops_count_a_model_with_a_head():
    plain = flops_per_image(build_model("scaled_unet"), SIDE)
    with_head = flops_per_image(build_model("scaled_unet", classification_head=True), SIDE)
    assert with_head > plain  # the head's linear layer is counted; nothing breaks on the tuple


@pytest.mark.parametrize("name", ["unet_resnet34", "scaled_unet"])
def test_checkpoint_of_a_head_model_round_trips(tmp_path, name):
    source = _build(name, {}, classification_head=True).eval()
    path = tmp_path / "head.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model(name, weights=path, classification_head=True).eval()
    x = _batch()
    with torch.no_grad():
        for a, b in zip(source(x), loaded(x), strict=True):
            assert torch.equal(a, b)


def test_encoder_of_sees_through_torch_compile():
    model = build_model("unet_resnet34")
    assert encoder_of(torch.compile(model)) is model.net.encoder  # compiling is lazy: no cost
