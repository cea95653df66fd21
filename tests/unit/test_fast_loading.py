"""Fold models loaded for prediction without a random initialisation: the checkpoint read once
(memory-mapped), the model built on the meta device and given its tensors; bit for bit the model
that building, initialising and loading gives. And `Resident`: models kept within a budget."""

from __future__ import annotations

import threading
import time

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


def test_an_ensemble_builds_each_architecture_once_and_runs_each_member_as_its_own_model(
    tmp_path, monkeypatch
):
    """`ModelShells`: members of two architectures, alternating, give what each member loaded
    on its own gives, bit for bit; each architecture is built once; the architecture used before
    lets go of its member's tensors (meta again) when the other is in use."""
    from ptxseg.infer import test_set

    paths = []
    for k, (arch, options) in enumerate([("unet_resnet34", {}), ("xception", {})] * 2):
        folder = tmp_path / str(k)
        folder.mkdir()
        torch.manual_seed(k)  # each member its own weights
        paths.append((arch, saved(folder, arch, options, channels_last=k == 2)))
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = [load_member(path, CPU).eval()(x) for _, path in paths]
    builds = []
    real_build = test_set.build_shell

    def build(arch, *args, **kwargs):
        builds.append(arch)
        return real_build(arch, *args, **kwargs)

    monkeypatch.setattr(test_set, "build_shell", build)
    shells = test_set.ModelShells(CPU)
    members = [shells.read(path) for _, path in paths]  # all read before any is used, as kept
    for (_, path), member, want in zip(paths, members, expected, strict=True):
        model = shells.holding(member).eval()
        with torch.inference_mode():
            assert torch.equal(model(x), want), path
        assert model.trained_scales is not None
    assert builds == ["unet_resnet34", "xception"]
    resnet, _ = shells._shell("unet_resnet34", {})
    xception, _ = shells._shell("xception", {})
    assert all(t.is_meta for t in resnet.state_dict().values())  # xception was last in use
    assert not any(t.is_meta for t in xception.state_dict().values())


def test_resident_in_order_loads_the_next_on_another_thread_and_raises_at_its_turn():
    threads: dict[str, str] = {}

    def load(key: str) -> str:
        threads[key] = threading.current_thread().name
        if key == "c":
            raise OSError("c: damaged")
        time.sleep(0.05)
        return key.upper()

    resident = Resident({"a": 1, "b": 1, "c": 1, "d": 1}, load, budget=1)
    used = []
    with pytest.raises(OSError, match="c: damaged"):
        for value in resident.in_order(["a", "b", "c", "d"]):
            used.append(value)
            if value == "B":  # while b is used, c (damaged) loads: its error waits for its turn
                time.sleep(0.2)
                assert "c" in threads
    assert used == ["A", "B"]
    assert threads["a"].startswith("ptxseg-load") and threads["b"].startswith("ptxseg-load")
    assert list(resident.kept) == ["a"] and resident.loads == 2
    # Kept models are not loaded again; the others are, on the loading thread, in order.
    assert list(resident.in_order(["a", "b"])) == ["A", "B"] and resident.loads == 3


class _CountingLoad:
    """A slow ``load`` that records the most calls running at once."""

    def __init__(self, make) -> None:
        self.make, self.running, self.most, self.lock = make, 0, 0, threading.Lock()

    def __call__(self, key):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return self.make(key)


def test_resident_in_order_ahead_loads_that_many_at_once_in_order():
    load = _CountingLoad(str.upper)
    keys = list("abcdef")
    resident = Resident(dict.fromkeys(keys, 1), load, budget=2)
    used = []
    for value in resident.in_order(keys, ahead=2):
        used.append(value)
        time.sleep(0.12)  # while one is used, the next two load side by side
    assert used == [k.upper() for k in keys] and load.most == 2
    assert list(resident.kept) == ["a", "b"] and resident.loads == len(keys)
    # The kept ones are not loaded again; the others are, in order.
    assert list(resident.in_order(keys, ahead=3)) == used and resident.loads == 2 * len(keys) - 2


def test_the_onnx_backend_makes_its_sessions_two_at_a_time():
    """`OnnxBackend.outputs` reads ahead with `LOADERS` threads (sessions are made in native code,
    without the GIL)."""
    from types import SimpleNamespace

    import numpy as np

    from ptxseg.contracts.ensemble_spec import ModelKey
    from ptxseg.deploy import onnx_backend

    class Session:
        def get_outputs(self):
            return [SimpleNamespace(name=n) for n in ("probabilities", "pass_probabilities")]

        def run(self, _, feed):
            time.sleep(0.1)
            n = len(feed["images"])
            return [np.zeros(n, np.float32), np.zeros((n, 1, 1), np.float32)]

    load = _CountingLoad(lambda key: Session())
    keys = [ModelKey("classify", "a", fold, "best") for fold in range(5)]
    backend = onnx_backend.OnnxBackend(None, Resident(dict.fromkeys(keys, 1), load, budget=0))
    outputs = list(backend.outputs(keys, [np.zeros((1, 1, 8, 8), np.float32)]))
    assert len(outputs) == len(keys) and onnx_backend.LOADERS == 2 and load.most == 2


def test_memory_freed_models_held_goes_back_once_all_are_used(monkeypatch):
    from ptxseg.deploy import resident as module

    released, real = [], module.release_freed_memory
    monkeypatch.setattr(module, "release_freed_memory", lambda: released.append(True))
    models = Resident(dict.fromkeys("abc", 1), str.upper, budget=1)
    values = models.in_order("abc", ahead=2)
    assert next(values) == "A" and released == []  # not while models are in use
    assert list(values) == ["B", "C"] and released == [True]
    real()  # glibc's malloc_trim, or nothing elsewhere: no error either way
