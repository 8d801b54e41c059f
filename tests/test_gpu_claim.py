"""device: auto on a several-GPU server: each pipeline process claims a GPU no other holds.

No GPU is needed: the device count is faked, and the claims are real lock files taken by
real concurrent processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from pipeline import device as device_module

REPO = Path(__file__).resolve().parents[1]

# A process that claims one of COUNT GPUs, prints what it got, and holds the claim until
# its stdin closes.
HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from pipeline.device import claim_gpu
    index, free = claim_gpu(int(sys.argv[1]), Path(sys.argv[2]))
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


def test_auto_picks_a_free_gpu_with_a_faked_device_count(tmp_path, monkeypatch):
    monkeypatch.setenv(device_module.GPU_LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    holder, held_index, _ = _start_holder(3, tmp_path)  # another pipeline process holds cuda:0
    try:
        assert held_index == 0
        picked = device_module.resolve_device("auto")
        assert picked == torch.device("cuda:1") and chosen == [1]
        assert (tmp_path / "gpu1.lock").read_text().strip() != ""  # the holder's pid
    finally:
        _stop(holder)
        for handle in device_module._held_locks:
            handle.close()
        device_module._held_locks.clear()


def test_one_gpu_or_torchrun_needs_no_claim(tmp_path, monkeypatch):
    monkeypatch.setenv(device_module.GPU_LOCK_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_module.resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "2")  # torchrun: distributed.init_distributed picks
    assert device_module.resolve_device("auto") == torch.device("cuda")
    assert list(tmp_path.iterdir()) == []
