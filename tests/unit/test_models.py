"""The model registry: every entry builds and trains on grey input; weights load offline or fail fast."""

from __future__ import annotations

import logging
import time

import pytest
import torch
from imagenet_files import LEGACY, REFERENCES
from torch import nn

from ptxseg.models import (
    MODELS,
    CheckpointError,
    UnknownModelError,
    WeightsNotFoundError,
    build_model,
    get_spec,
    imagenet_weight_file,
    model_names,
)
from ptxseg.models.unet_decoder import AttentionGate, ConvUnit, IdentityGate

CLASSIFIERS = model_names("classifier")
SEGMENTERS = model_names("segmenter")


class Payload:
    """Not a tensor: a checkpoint holding one must be refused (unpickling runs code)."""


def _side(spec, at_least=64):
    """A small input side the entry accepts (its min_size at least, a multiple of its stride)."""
    side = max(spec.min_size, at_least)
    return -(-side // spec.size_multiple) * spec.size_multiple


def _first_parameter(model):
    return next(p for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------- registry


def test_registry_table():
    assert set(CLASSIFIERS) == {"inceptionresnetv2", "xception", "densenet169", "efficientnet_b4"}
    assert set(SEGMENTERS) == {
        "unet_resnet34",
        "unet_efficientnet_b4",
        "attention_unet",
        "scaled_unet",
        "scaled_unet_b1",
        "scaled_unet_b2",
    }
    assert model_names() == sorted(MODELS)
    for spec in MODELS.values():
        assert spec.size_multiple == (32 if spec.kind == "segmenter" else 1)
        if spec.name.startswith("scaled_unet"):  # trained from scratch: no ImageNet file exists
            assert spec.imagenet is None
        else:
            assert spec.imagenet is not None and spec.imagenet.submodule in ("backbone", "encoder")
    assert get_spec("inceptionresnetv2").min_size == 75


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownModelError) as info:
        build_model("unet_resnet35")
    message = str(info.value)
    assert message.startswith("unknown model 'unet_resnet35'; valid: attention_unet, densenet169")
    assert all(name in message for name in MODELS)
    assert "did you mean 'unet_resnet34'" in message
    assert isinstance(info.value, ValueError)


def test_unknown_option_names_accepted_options():
    with pytest.raises(
        ValueError, match=r"does not accept option\(s\) dropuot; it accepts: dropout"
    ):
        build_model("densenet169", dropuot=0.2)
    with pytest.raises(ValueError, match="not to smp's Unet decoder"):
        build_model("unet_efficientnet_b4", activation="leaky_relu")


# ---------------------------------------------------------------- forward / backward


@pytest.mark.parametrize("name", sorted(MODELS))
def test_builds_trains_and_evaluates_on_grey_input(name):
    spec = get_spec(name)
    side = _side(spec)
    for num_classes in (1, 14):
        torch.manual_seed(0)
        model = build_model(name, num_classes=num_classes)
        assert all(key.startswith("net.") for key in model.state_dict())
        x = torch.randn(2, 1, side, side)
        out = model(x)
        expected = (2, num_classes) if spec.kind == "classifier" else (2, num_classes, side, side)
        assert out.shape == expected
        out.float().pow(2).mean().backward()
        first = _first_parameter(model)
        assert first.grad is not None and first.grad.abs().sum() > 0
        model.eval()
        with torch.no_grad():
            assert model(x[:1]).shape == (1, *expected[1:])


@pytest.mark.parametrize(
    ("name", "options"),
    [
        pytest.param("unet_efficientnet_b4", {"decoder_block": "residual"}, id="residual-b4"),
        pytest.param(
            "attention_unet",
            {"encoder": "efficientnet-b4", "decoder_block": "residual"},
            id="attention-residual-b4",
        ),
        pytest.param("unet_resnet34", {"decoder_channels": (128, 64, 32, 16, 8)}, id="narrow-r34"),
    ],
)
def test_segmenter_variants_train(name, options):
    model = build_model(name, num_classes=2, **options)
    out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 2, 64, 64)
    out.mean().backward()
    assert _first_parameter(model).grad is not None


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifiers_take_any_size_from_min_size(name):
    spec = get_spec(name)
    model = build_model(name, num_classes=3, dropout=0.2).eval()
    assert model.net.dropout.p == 0.2
    with torch.no_grad():
        for side in (spec.min_size, spec.min_size + 64, 97):
            assert model(torch.zeros(1, 1, side, side)).shape == (1, 3)
        if spec.min_size > 1:  # min_size is the true minimum
            with pytest.raises(RuntimeError):
                model(torch.zeros(1, 1, spec.min_size - 1, spec.min_size - 1))


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenters_need_multiples_of_32(name):
    model = build_model(name).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 96)).shape == (1, 1, 32, 96)
        with pytest.raises(RuntimeError, match="32"):
            model(torch.zeros(1, 1, 48, 64))


def test_grey_wrapper_rejects_colour_input():
    model = build_model("xception")
    with pytest.raises(ValueError, match=r"grey batch \(B, 1, H, W\)"):
        model(torch.zeros(1, 3, 32, 32))


def test_residual_variant_is_leaky_relu_before_batchnorm():
    net = build_model("unet_efficientnet_b4", decoder_block="residual").net
    units = [m for m in net.decoder.modules() if isinstance(m, ConvUnit)]
    assert len(units) == 10
    for unit in units:
        assert [type(m) for m in unit] == [nn.Conv2d, nn.LeakyReLU, nn.BatchNorm2d]
    assert all(block.shortcut is not None and block.gate is None for block in net.decoder.blocks)


# ---------------------------------------------------------------- attention gates


def test_attention_gate_depends_on_gating_signal():
    torch.manual_seed(0)
    gate = AttentionGate(skip_channels=8, gate_channels=16).eval()
    skip = torch.randn(2, 8, 16, 16)
    g1, g2 = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        out1, out2 = gate(skip, g1), gate(skip, g2)
        alpha = gate.coefficients(skip, g1)
    assert out1.shape == skip.shape and alpha.shape == (2, 1, 16, 16)
    assert not torch.allclose(out1, out2)
    assert torch.allclose(out1, skip * alpha)
    with torch.no_grad():
        gate.psi[0].weight.zero_()
        for mode in (gate.eval, gate.train):
            mode()
            assert torch.allclose(gate.coefficients(skip, g1), torch.full_like(alpha, 0.5))
            assert torch.allclose(gate(skip, g2), skip * 0.5)


def test_attention_unet_output_depends_on_its_gates():
    torch.manual_seed(0)
    model = build_model("attention_unet").eval()
    blocks = model.net.decoder.blocks
    assert [isinstance(b.gate, AttentionGate) for b in blocks] == [True] * 4 + [False]
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        gated = model(x)
        for block in blocks[:4]:
            block.gate = IdentityGate()
        ungated = model(x)
    assert not torch.allclose(gated, ungated)


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "model-key"])
@pytest.mark.parametrize("name", ["densenet169", "attention_unet"])
def test_checkpoint_round_trip(tmp_path, name, wrapped):
    torch.manual_seed(1)
    source = build_model(name, num_classes=2)
    state = source.state_dict()
    path = tmp_path / "fold0.pt"
    torch.save({"model": state, "epoch": 3} if wrapped else state, path)
    torch.manual_seed(2)
    loaded = build_model(name, num_classes=2, weights=str(path))
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_checkpoint_of_compiled_model_loads(tmp_path):
    source = build_model("xception")
    path = tmp_path / "compiled.pt"
    torch.save({f"_orig_mod.{k}": v for k, v in source.state_dict().items()}, path)
    loaded = build_model("xception", weights=path)
    assert torch.equal(loaded.net.head.weight, source.net.head.weight)


def test_nih_checkpoint_seeds_single_logit_classifier(tmp_path, caplog):
    torch.manual_seed(1)
    nih = build_model("densenet169", num_classes=14)
    path = tmp_path / "nih.pth"
    torch.save({"model": nih.state_dict()}, path)
    torch.manual_seed(2)
    fresh_head = build_model("densenet169", num_classes=1).net.head.weight.detach().clone()
    torch.manual_seed(2)
    with caplog.at_level(logging.WARNING, logger="ptxseg.models.weights"):
        model = build_model("densenet169", num_classes=1, weights=path)
    source = nih.net.backbone.state_dict()
    for key, value in model.net.backbone.state_dict().items():
        assert torch.equal(value, source[key]), key
    assert model.net.head.weight.shape == (1, 1664)
    assert torch.equal(model.net.head.weight, fresh_head)
    assert "net.head.weight (14, 1664) -> (1, 1664)" in caplog.text
    assert "net.head.bias" in caplog.text


def test_checkpoint_with_missing_or_foreign_keys_is_an_error(tmp_path):
    state = build_model("xception").state_dict()
    del state["net.backbone.bn1.weight"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"missing keys net\.backbone\.bn1\.weight"):
        build_model("xception", weights=path)
    foreign = tmp_path / "foreign.pt"
    torch.save(build_model("densenet169").state_dict(), foreign)
    with pytest.raises(CheckpointError, match=r"unexpected keys net\.backbone\.features\.conv0"):
        build_model("xception", weights=foreign)


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to load") as info:
        build_model("xception", weights=str(path))
    assert str(path) in str(info.value) and "weights_only" in str(info.value)
    from ptxseg.runtime import checkpoint

    with pytest.raises(CheckpointError, match="evil.pt: cannot be loaded safely"):
        checkpoint.load(path)  # the training state's loader raises the one class too


def test_missing_checkpoint_fails_fast(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"nope\.pt.*'none', 'imagenet'"):
        build_model("xception", weights=tmp_path / "nope.pt")


# ---------------------------------------------------------------- ImageNet files


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """torch's hub cache pointed at an empty folder, so a real cache cannot interfere."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.mark.parametrize(
    ("name", "options"),
    [pytest.param(name, {}, id=name) for name in sorted(REFERENCES)]
    + [pytest.param("unet_efficientnet_b4", {"decoder_block": "residual"}, id="residual-b4")],
)
def test_imagenet_file_loads_into_backbone(tmp_path, empty_hub, name, options):
    spec = get_spec(name)
    file_state, expected = REFERENCES[name]()
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save(
        file_state,
        weights_dir / spec.imagenet.file_name,
        _use_new_zipfile_serialization=name not in LEGACY,
    )
    model = build_model(name, weights="imagenet", weights_dir=weights_dir, **options)
    target = model.net.get_submodule(spec.imagenet.submodule).state_dict()
    head = spec.imagenet.head
    assert set(target) == {k for k in expected if not k.startswith(head)}
    for key, value in target.items():
        assert torch.equal(value, expected[key]), key


def test_imagenet_file_found_in_hub_cache(empty_hub):
    spec = get_spec("unet_resnet34")
    (empty_hub / "checkpoints").mkdir()
    state, _ = REFERENCES["unet_resnet34"]()
    torch.save(state, empty_hub / "checkpoints" / spec.imagenet.file_name)
    assert (
        imagenet_weight_file("unet_resnet34") == empty_hub / "checkpoints" / "resnet34-b627a593.pth"
    )
    model = build_model("unet_resnet34", weights="imagenet")
    assert torch.equal(model.net.encoder.conv1.weight, state["conv1.weight"])


def test_imagenet_file_of_wrong_architecture_is_an_error(tmp_path, empty_hub):
    spec = get_spec("unet_resnet34")
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), tmp_path / spec.imagenet.file_name)
    with pytest.raises(CheckpointError, match=r"missing keys encoder|layer1\.2|shapes differ"):
        build_model("unet_resnet34", weights="imagenet", weights_dir=tmp_path)


@pytest.mark.parametrize("name", sorted(n for n in MODELS if MODELS[n].imagenet is not None))
def test_missing_imagenet_file_fails_at_once(tmp_path, empty_hub, name):
    weights = get_spec(name).imagenet
    start = time.perf_counter()
    with pytest.raises(WeightsNotFoundError) as info:
        build_model(name, weights="imagenet", weights_dir=tmp_path)
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert weights.file_name in message and weights.url in message
    assert str(tmp_path) in message and str(empty_hub / "checkpoints") in message
    assert "models.weights_dir" in message
    assert isinstance(info.value, FileNotFoundError)


def test_attention_unet_imagenet_file_follows_encoder(tmp_path, empty_hub):
    with pytest.raises(WeightsNotFoundError, match=r"efficientnet-b4-6ed6700e\.pth"):
        build_model(
            "attention_unet", weights="imagenet", weights_dir=tmp_path, encoder="efficientnet-b4"
        )
    with pytest.raises(ValueError, match="no ImageNet weight file is known"):
        build_model("attention_unet", weights="imagenet", encoder="mobilenet_v2")


def test_catalog_matches_the_registry():
    """The torch-free table the Snakefile validates configs with must agree with the registry."""
    from ptxseg.models.catalog import CATALOG

    assert set(CATALOG) == set(MODELS)
    for name, (kind, min_size, multiple) in CATALOG.items():
        spec = MODELS[name]
        assert (spec.kind, spec.min_size, spec.size_multiple) == (kind, min_size, multiple), name
