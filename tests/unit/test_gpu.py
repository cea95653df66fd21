"""GPU placement by lock files (ptxseg.runtime.gpu), tested without GPUs: n_gpus stands in for the count."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import queue
import signal

import pytest

from ptxseg.runtime.gpu import claim_gpu, default_lock_dir

CTX = multiprocessing.get_context("fork")
WAIT = 30  # seconds: generous bound for anything that should happen at once


@pytest.fixture(autouse=True)
def no_preset_device(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def hold(name, n_gpus, lock_dir, report, release):
    """Child: claim a GPU, report (name, index, CUDA_VISIBLE_DEVICES), hold it until released."""
    with claim_gpu(n_gpus, lock_dir=lock_dir, poll_seconds=0.05) as index:
        report.put((name, index, os.environ.get("CUDA_VISIBLE_DEVICES")))
        release.wait(WAIT)


def start_holder(name, n_gpus, lock_dir, report):
    release = CTX.Event()
    process = CTX.Process(target=hold, args=(name, n_gpus, lock_dir, report, release))
    process.start()
    return process, release


def test_two_claims_at_once_get_different_gpus_and_a_third_waits(tmp_path):
    report = CTX.Queue()
    a, release_a = start_holder("a", 2, tmp_path, report)
    b, release_b = start_holder("b", 2, tmp_path, report)
    try:
        claims = {
            name: (index, env) for name, index, env in (report.get(timeout=WAIT) for _ in "ab")
        }
        assert {claims["a"][0], claims["b"][0]} == {0, 1}
        assert all(env == str(index) for index, env in claims.values())

        c, release_c = start_holder("c", 2, tmp_path, report)
        with pytest.raises(queue.Empty):  # both GPUs taken: c waits
            report.get(timeout=1.5)
        release_a.set()
        a.join(WAIT)
        name, index, env = report.get(timeout=WAIT)
        assert (name, index, env) == ("c", claims["a"][0], str(claims["a"][0]))
        release_b.set()
        release_c.set()
        for process in (b, c):
            process.join(WAIT)
            assert process.exitcode == 0
        assert a.exitcode == 0
    finally:
        for process in multiprocessing.active_children():
            process.kill()


def test_a_killed_holder_frees_its_gpu(tmp_path):
    report = CTX.Queue()
    holders = [start_holder(name, 2, tmp_path, report) for name in "ab"]
    try:
        held = {name: index for name, index, _ in (report.get(timeout=WAIT) for _ in "ab")}
        # SIGKILL: no clean-up code runs, the kernel drops the lock with the process.
        os.kill(holders[0][0].pid, signal.SIGKILL)
        holders[0][0].join(WAIT)
        with claim_gpu(2, lock_dir=tmp_path, poll_seconds=0.05, timeout=WAIT) as index:
            assert index == held["a"]
            assert os.environ["CUDA_VISIBLE_DEVICES"] == str(index)
    finally:
        # Only the survivor's event: setting the killed waiter's would block on its dead wait.
        holders[1][1].set()
        holders[1][0].join(WAIT)


def test_all_taken_times_out(tmp_path):
    held = [os.open(tmp_path / f"gpu{i}.lock", os.O_RDWR | os.O_CREAT) for i in range(2)]
    try:
        for fd in held:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process's claim would
        with (
            pytest.raises(TimeoutError, match="2 GPUs"),
            claim_gpu(2, lock_dir=tmp_path, poll_seconds=0.05, timeout=0.3),
        ):
            pass
    finally:
        for fd in held:
            os.close(fd)


def test_a_claim_inside_a_claim_changes_nothing(tmp_path):
    with claim_gpu(2, lock_dir=tmp_path) as outer:
        with claim_gpu(2, lock_dir=tmp_path) as inner:
            assert (outer, inner) == (0, None)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_the_claim_ends_with_the_block(tmp_path):
    with claim_gpu(3, lock_dir=tmp_path) as index:
        assert index == 0
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
        assert (tmp_path / "gpu0.lock").read_text().strip() == str(os.getpid())
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with claim_gpu(3, lock_dir=tmp_path, timeout=0) as again:
        assert again == 0


@pytest.mark.parametrize("preset", ["0", "2,3", ""])
def test_a_preset_device_list_is_left_alone(tmp_path, monkeypatch, preset):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", preset)  # what SLURM does for a --gpus job
    with claim_gpu(4, lock_dir=tmp_path / "locks") as index:
        assert index is None
        assert os.environ["CUDA_VISIBLE_DEVICES"] == preset
    assert os.environ["CUDA_VISIBLE_DEVICES"] == preset
    assert not (tmp_path / "locks").exists()


@pytest.mark.parametrize("n_gpus", [0, 1])
def test_nothing_to_choose_yields_none(tmp_path, n_gpus):
    with claim_gpu(n_gpus, lock_dir=tmp_path / "locks") as index:
        assert index is None
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert not (tmp_path / "locks").exists()


def test_the_lock_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PTXSEG_GPU_LOCKS", str(tmp_path))
    assert default_lock_dir() == tmp_path
    with claim_gpu(2) as index:
        assert index == 0
        assert (tmp_path / "gpu0.lock").exists()
    monkeypatch.delenv("PTXSEG_GPU_LOCKS")
    assert str(default_lock_dir()) == "/tmp/ptxseg-gpu-locks"


def test_the_count_comes_from_torch_by_default(tmp_path, monkeypatch):
    import ptxseg.runtime.gpu

    monkeypatch.setattr(ptxseg.runtime.gpu, "_visible_gpus", lambda: 2)
    with claim_gpu(lock_dir=tmp_path) as index:
        assert index == 0


def test_torch_counts_the_gpus_here(tmp_path):
    import torch

    expected = torch.cuda.device_count()
    with claim_gpu(lock_dir=tmp_path) as index:
        assert index == (0 if expected > 1 else None)


def test_hold_gpu_keeps_one_claim_for_the_process(tmp_path, monkeypatch):
    from ptxseg.runtime import gpu

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PTXSEG_GPU_LOCKS", str(tmp_path))
    monkeypatch.setattr(gpu, "_visible_gpus", lambda: 3)
    monkeypatch.setattr(gpu, "_holding", False)
    monkeypatch.setattr(gpu, "_held", __import__("contextlib").ExitStack())
    assert gpu.hold_gpu() == 0 and gpu.hold_gpu() == 0  # the second call keeps the first claim
    assert (tmp_path / "gpu0.lock").exists()
    gpu._held.close()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
