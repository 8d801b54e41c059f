"""device: auto on a several-GPU server: each pipeline process claims a GPU no other holds.

No GPU is needed: the device count is faked, and the claims are real lock files taken by
real concurrent processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pipeline.runtime import device as device_module

REPO = Path(__file__).resolve().parents[1]

# A process that claims one of COUNT GPUs, prints what it got, and holds the claim until
# its stdin closes.
HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pipeline.runtime.device import claim_gpu
    names = [f"gpu{i}" for i in range(int(sys.argv[1]))]
    index, free = claim_gpu(names, Path(sys.argv[2]))
    print(index, free, flush=True)
    sys.stdin.read()
""")


def _start_holder(count: int, lock_dir: Path) -> tuple[subprocess.Popen, int, bool]:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(count), str(lock_dir)],
                               cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    index, free = process.stdout.readline().split()
    return process, int(index), free == "True"


def _stop(process: subprocess.Popen) -> None:
    process.stdin.close()
    process.wait(timeout=30)


def test_concurrent_processes_get_different_gpus_and_a_lock_dies_with_its_process(tmp_path):
    first, first_index, first_free = _start_holder(2, tmp_path)
    second, second_index, second_free = _start_holder(2, tmp_path)
    try:
        assert first_free and second_free
        assert {first_index, second_index} == {0, 1}
        third, third_index, third_free = _start_holder(2, tmp_path)  # both GPUs held
        _stop(third)
        assert not third_free and third_index in (0, 1)
        _stop(first)  # its lock goes with it, even without an unlock
        fourth, fourth_index, fourth_free = _start_holder(2, tmp_path)
        _stop(fourth)
        assert fourth_free and fourth_index == first_index
    finally:
        for process in (first, second):
            if process.poll() is None:
                _stop(process)


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """A CPU machine that says it has GPUs; this process's claims start empty and are
    released at the end."""
    monkeypatch.setenv(device_module.GPU_LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(device_module, "_claimed", {})
    held = {}
    monkeypatch.setattr(device_module, "_held_locks", held)
    yield chosen
    for descriptor in held.values():
        os.close(descriptor)


def test_auto_picks_a_free_gpu_with_a_faked_device_count(tmp_path, monkeypatch, fake_gpus):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    holder, held_index, _ = _start_holder(3, tmp_path)  # another pipeline process holds cuda:0
    try:
        assert held_index == 0
        picked = device_module.resolve_device("auto")
        assert picked == torch.device("cuda:1") and fake_gpus == [1]
        # claimed once per process: a second stage-level call keeps the same GPU
        assert device_module.resolve_device("auto") == torch.device("cuda:1")
        assert sorted(device_module._held_locks) == ["gpu1"]
    finally:
        _stop(holder)


def test_one_gpu_needs_no_claim_and_torchrun_marks_its_rank(tmp_path, monkeypatch, fake_gpus):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_module.resolve_device("auto") == torch.device("cuda")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "2")  # torchrun: the rank's GPU is given
    assert device_module.resolve_device("auto") == torch.device("cuda:2")
    assert sorted(device_module._held_locks) == ["gpu2"]  # so a queued job avoids it
    assert (tmp_path / "gpu2.lock").exists()


def test_a_lock_file_of_another_user_can_still_be_locked(tmp_path):
    """Lock files are opened read-only (flock needs no write) and made group/world
    readable, so a folder several users share works."""
    (tmp_path / "gpu0.lock").touch(mode=0o444)
    assert device_module.try_lock(tmp_path, "gpu0")
    os.close(device_module._held_locks.pop("gpu0"))


def test_a_shared_lock_folder_is_made_writable_for_every_user(tmp_path, monkeypatch):
    shared = tmp_path / "shared-locks"
    monkeypatch.setenv(device_module.GPU_LOCK_DIR_ENV, str(shared))
    monkeypatch.setattr(device_module, "_held_locks", {})
    assert device_module.try_lock(shared, "gpu0")
    assert shared.stat().st_mode & 0o7777 == 0o1777  # like /tmp: anyone adds, none deletes
    os.close(device_module._held_locks.pop("gpu0"))


def test_a_lock_that_cannot_be_made_or_taken_counts_as_held(tmp_path, monkeypatch, capsys):
    """Another user's folder without write access for us, or a file system without flock:
    that GPU is skipped with a warning, not a crash, and no descriptor is left open."""
    monkeypatch.setattr(device_module, "_held_locks", {})
    real_open = os.open

    def refuse_gpu0(path, *args):
        if str(path).endswith("gpu0.lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args)

    monkeypatch.setattr(device_module.os, "open", refuse_gpu0)
    assert device_module.claim_gpu(["gpu0", "gpu1"], tmp_path) == (1, True)
    assert "cannot use the GPU lock" in capsys.readouterr().err
    os.close(device_module._held_locks.pop("gpu1"))
    monkeypatch.setattr(device_module.os, "open", real_open)

    def no_flock(descriptor, operation):
        raise OSError(37, "No locks available")  # ENOLCK

    monkeypatch.setattr(device_module.fcntl, "flock", no_flock)
    open_before = len(os.listdir("/proc/self/fd"))
    assert not device_module.try_lock(tmp_path, "gpu2")
    assert len(os.listdir("/proc/self/fd")) == open_before
    assert "cannot lock" in capsys.readouterr().err
