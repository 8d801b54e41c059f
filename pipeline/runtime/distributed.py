"""Multi-process training under torchrun: process group, device per rank, rank-0-only writes.

A training stage with distributed.nproc > 1 replaces itself with `torchrun` running the same
module and arguments (dvc.yaml cannot branch on a param). A process started by torchrun
finds WORLD_SIZE/RANK/LOCAL_RANK in its environment; without them everything here is a
no-op and the stage runs as one process.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = DistContext()


def torchrun_command(nproc: int, module: str, module_args: list[str]) -> list[str]:
    """The command that runs `python -m module module_args` in `nproc` processes."""
    if nproc <= 1:
        return [sys.executable, "-m", module, *module_args]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    return [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", module, *module_args]


def run_under_torchrun(nproc: int, module: str) -> None:
    """With nproc > 1 in a process torchrun did not start, replace it with torchrun running
    `module` with this process's arguments; otherwise return and run here."""
    if nproc <= 1 or "WORLD_SIZE" in os.environ:
        return
    command = torchrun_command(nproc, module, sys.argv[1:])
    os.execv(command[0], command)


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join torchrun's process group if there is one; return the context and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(), device
    context = DistContext(int(os.environ["RANK"]), world_size,
                          int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return context, device


def wrap(model: nn.Module, context: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel when distributed, else the model itself."""
    if not context.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier(context: DistContext) -> None:
    if context.enabled:
        dist.barrier()


def weights_digest(model: nn.Module) -> str:
    """Hash of the trainable parameters (BatchNorm running statistics are per-rank buffers:
    DDP re-broadcasts them from rank 0 at each forward, so they are not compared)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def replica_digests(model: nn.Module, context: DistContext) -> list[str]:
    """Every rank's weights digest, gathered (equal digests = replicas in sync)."""
    mine = weights_digest(model)
    if not context.enabled:
        return [mine]
    gathered: list[str] = [""] * context.world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def _collective_device() -> torch.device:
    """Where a tensor for a collective must live: NCCL reduces CUDA tensors only (a CPU
    tensor fails with "No backend type associated with device type cpu"), gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_across_ranks(value: float, context: DistContext) -> float:
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def any_across_ranks(flags: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Element-wise OR of boolean flags over the ranks, on the flags' device."""
    if not context.enabled:
        return flags
    as_bytes = flags.to(device=_collective_device(), dtype=torch.uint8)
    dist.all_reduce(as_bytes, op=dist.ReduceOp.MAX)
    return as_bytes.to(flags.device).bool()


def shutdown(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
