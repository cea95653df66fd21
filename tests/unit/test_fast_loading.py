"""Fold models loaded for prediction without a random initialisation: the checkpoint read once
(memory-mapped), the model built on the meta device and given its tensors; bit for bit the model
that building, initialising and loading gives. And `Resident`: models kept within a budget."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptxseg.deploy.resident import Resident
from ptxseg.infer.test_set import load_member
from ptxseg.models import CheckpointError, build_model
from ptxseg.runtime import checkpoint
from ptxseg.runtime.predict import mark_trained

CPU = torch.device("cpu")
INIT_FUNCTIONS = [
    name
    for name in dir(nn.init)
    if name.endswith("_") and not name.startswith("_") and callable(getattr(nn.init, name))
]


def old_load(path) -> nn.Module:
    """How prediction loaded a model before: the file read for its meta, the model built with a
    random initialisation, the file read again and its weights copied in."""
    meta = checkpoint.load(path)["meta"]
    model = build_model(meta["arch"], 1, weights=str(path), **meta.get("options", {}))
    return mark_trained(model, meta)


@pytest.fixture
def inits(monkeypatch):
    """The device of every tensor an nn.init function initialises (timm, smp and torch's layers
    all initialise through them)."""
    seen: list[str] = []
    for name in INIT_FUNCTIONS:
        real = getattr(nn.init, name)

        def recording(tensor, *args, _real=real, **kwargs):
            seen.append(tensor.device.type)
            return _real(tensor, *args, **kwargs)

        monkeypatch.setattr(nn.init, name, recording)
    return seen


def saved(tmp_path, arch: str, options: dict, channels_last: bool = False):
    torch.manual_seed(0)
    model = build_model(arch, 1, **options).eval()
    with torch.no_grad():  # BatchNorm statistics other than 0 and 1, as a trained model's
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    if channels_last:  # a model trained channels-last saves its convolutions so
        model = model.to(memory_format=torch.channels_last)
    path = tmp_path / f"{arch}.pt"
    checkpoint.export_model(path, model, {"arch": arch, "options": options, "size": 64})
    return path


@pytest.mark.parametrize(
    ("arch", "options", "side", "channels_last"),
    [
        ("xception", {}, 64, False),
        ("unet_resnet34", {"classification_head": True}, 64, False),
        ("unet_resnet34", {}, 64, True),
    ],
)
def test_a_member_loads_bit_identical_without_random_initialisation(
    tmp_path, inits, arch, options, side, channels_last
):
    path = saved(tmp_path, arch, options, channels_last)
    inits.clear()
    before = old_load(path).eval()
    assert "cpu" in inits  # the old path initialised real tensors (the check can fail)
    inits.clear()
    model = load_member(path, CPU).eval()
    assert inits and set(inits) == {"meta"}  # every initialisation ran on no memory
    x = torch.randn(2, 1, side, side, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = before(x), model(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = got if isinstance(got, tuple) else (got,)
    assert len(expected) == len(got)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)
    assert model.trained_scales == before.trained_scales
    assert not any(t.is_meta for t in model.state_dict().values())


def test_a_checkpoint_that_does_not_fit_names_the_keys(tmp_path):
    path = saved(tmp_path, "unet_resnet34", {})
    payload = checkpoint.load(path)
    payload["meta"]["options"] = {"classification_head": True}  # keys the file lacks
    checkpoint.save(path, payload)
    with pytest.raises(CheckpointError, match=rf"{path} does not fit the model: missing keys"):
        load_member(path, CPU)


def test_resident_keeps_the_first_models_that_fit_and_reloads_the_others():
    sizes = {"a": 4, "b": 3, "c": 2, "d": 1}
    loaded = []
    resident = Resident(sizes, lambda key: loaded.append(key) or key.upper(), budget=6)
    for _ in range(3):  # prediction asks for them in the same order every round
        assert [resident[k] for k in sizes] == ["A", "B", "C", "D"]
    assert list(resident.kept) == ["a", "c"] and resident.kept_bytes == 6  # b did not fit
    assert loaded == ["a", "b", "c", "d", "b", "d", "b", "d"]
    assert resident.loads == len(loaded) and len(resident) == 4 and list(resident) == list(sizes)
    everything = Resident(sizes, str.upper, budget=None)
    assert [everything[k] for k in list(sizes) * 2] == ["A", "B", "C", "D"] * 2
    assert everything.loads == 4
    with pytest.raises(KeyError):
        everything["e"]
