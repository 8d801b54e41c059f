"""Device, precision and seeding helpers for the stages that run torch models."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import random
import resource
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.cli import PipelineError, console
from pipeline.runtime.threads import fit_threads

# Where the per-GPU lock files live: one folder per machine and user, shared by every
# pipeline process (a queued experiment runs in its own copy of the repository, so a
# folder inside the repository would not be seen by the others). PIPELINE_GPU_LOCKS
# moves it, for instance to a folder several users share.
GPU_LOCK_DIR_ENV = "PIPELINE_GPU_LOCKS"
_held_locks: dict[str, int] = {}  # lock name -> open descriptor: held until the process exits
_claimed: dict[str, int] = {}  # "auto" -> the index this process claimed (claimed once)


def gpu_lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"tdp43-pipeline-gpu-locks-{os.getuid()}"
    return Path(os.environ.get(GPU_LOCK_DIR_ENV, default))


def gpu_lock_names(count: int) -> list[str]:
    """One lock name per visible GPU: its UUID, so processes that see the GPUs through
    different CUDA_VISIBLE_DEVICES still agree on which physical GPU a lock is for."""
    names = []
    for index in range(count):
        try:
            names.append(f"gpu-{torch.cuda.get_device_properties(index).uuid}")
        except Exception:  # no UUID from this driver: fall back to the index
            names.append(f"gpu{index}")
    return names


def try_lock(lock_dir: Path, name: str) -> bool:
    """Take the exclusive flock on lock_dir/<name>.lock without waiting; True if taken.
    The kernel drops it when the process exits, even after a crash: never stale."""
    if name in _held_locks:
        return True
    path = lock_dir / f"{name}.lock"
    try:
        if not lock_dir.is_dir():
            lock_dir.mkdir(parents=True, exist_ok=True)
            if GPU_LOCK_DIR_ENV in os.environ:  # a folder for several users: like /tmp
                with contextlib.suppress(OSError):
                    os.chmod(lock_dir, 0o1777)
        descriptor = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # flock needs no write
    except OSError as error:  # a folder another user made without write access for us
        console.print(f"[bold yellow]warning:[/] cannot use the GPU lock {path} ({error}); "
                      f"that GPU counts as held. Set {GPU_LOCK_DIR_ENV} to a folder every "
                      "user can write (chmod 1777)", highlight=False)
        return False
    with contextlib.suppress(OSError):
        os.fchmod(descriptor, 0o666)  # a shared lock folder: other users reuse the file
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it
        os.close(descriptor)
        return False
    except OSError as error:  # no flock on this file system (some NFS mounts)
        os.close(descriptor)
        console.print(f"[bold yellow]warning:[/] cannot lock {path} ({error}); that GPU "
                      f"counts as held. Set {GPU_LOCK_DIR_ENV} to a local folder",
                      highlight=False)
        return False
    _held_locks[name] = descriptor
    return True


def claim_gpu(names: list[str], lock_dir: Path) -> tuple[int, bool]:
    """(index of the first GPU no other pipeline process holds, whether it was free). With
    every GPU held, the one to share is chosen by the pid, so a queue with more workers
    than GPUs still spreads over all of them."""
    for index, name in enumerate(names):
        if try_lock(lock_dir, name):
            return index, True
    return os.getpid() % len(names), False


def _claim_for_auto() -> int:
    count = torch.cuda.device_count()
    if "LOCAL_RANK" in os.environ:  # torchrun: this rank's GPU is fixed; mark it as used
        index = int(os.environ["LOCAL_RANK"])
        if not try_lock(gpu_lock_dir(), gpu_lock_names(count)[index]):
            console.print(f"[bold yellow]warning:[/] cuda:{index} is also used by another "
                          "pipeline process", highlight=False)
        return index
    index, free = claim_gpu(gpu_lock_names(count), gpu_lock_dir())
    if not free:
        console.print(f"[bold yellow]warning:[/] all {count} GPUs are held by other "
                      f"pipeline processes; sharing cuda:{index}", highlight=False)
    return index


def resolve_device(name: str, threads: int | str = "auto"):
    """Map params `device` (auto|cpu|cuda|cuda:N) to a torch.device, failing clearly, and fit
    torch's CPU threads to `threads` (runtime.threads, see runtime/threads.py).

    `auto` on a machine with several GPUs claims one that no other pipeline process holds
    (claim_gpu), once per process, so `dvc queue start -j N` on N GPUs runs one experiment
    per GPU. Under torchrun each rank marks its LOCAL_RANK's GPU as held."""
    fit_threads(threads)
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if torch.cuda.device_count() == 1:
            return torch.device("cuda")
        if "auto" not in _claimed:
            _claimed["auto"] = _claim_for_auto()
        index = _claimed["auto"]
        torch.cuda.set_device(index)
        return torch.device(f"cuda:{index}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PipelineError(f"params.yaml: device: {name!r} asked for but no CUDA device is "
                                "visible; use device: auto or cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise PipelineError(f"params.yaml: device: {name!r} but only "
                                f"{torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; on CPU ask for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random streams a resumed run continues: the CPU's and, on CUDA, the stage's
    GPU's (dropout and on-device augmentation draw there). Only that GPU's: reading every
    GPU's would start a CUDA context on GPUs that other processes have claimed."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, torch.Tensor] | torch.Tensor,
                      device: torch.device) -> None:
    """Undo rng_state. A bare tensor is a checkpoint written before the GPU's stream was
    saved: the CPU's is restored and the GPU's restarts from the seed, as it did then."""
    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: CUDA with bf16, or a CPU with
    AVX512-BF16 / AMX (oneDNN's own test). Elsewhere bf16 is emulated and slow."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.cache
def effective_precision(precision: str, device: torch.device) -> str:
    """`auto` becomes bf16 on a CUDA device that has it and fp32 everywhere else.

    Never bf16 on a CPU unless asked: a CPU with AVX512-BF16 would then compute other numbers
    than one without it, and the same `dvc repro` would give different figures depending on
    the machine, with nothing in `dvc params diff` to say why. An explicit bf16 on a CPU
    without native support is kept, with one warning: on an AVX2-only CPU a ResNet50 bf16
    training step measured 7x slower than fp32 (bench_classifier_throughput)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and native_bf16(device) else "fp32"
    if precision == "bf16" and not native_bf16(device):
        console.print(f"[bold yellow]warning:[/] bf16 on {device} is emulated here (no "
                      "AVX512-BF16/AMX): several times slower than fp32. Use precision: auto "
                      "or fp32", highlight=False)
    return precision


def autocast_for(device: torch.device, precision: str):
    """Autocast context for `precision` on `device`; fp32 means no autocast."""
    precision = effective_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype is torch.float16 and device.type != "cuda":
        raise ValueError("fp16 autocast is for CUDA; use bf16 or fp32 on CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
