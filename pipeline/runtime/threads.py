"""Threads that fit the machine: torch's intra-op threads from the CPUs this process may use,
shared among the pipeline stages running beside it.

torch starts one thread per core it sees, whoever else runs there. Two torch processes on 2
cores, each with 2 threads (a second `dvc exp run`, `dvc queue start -j 2`, a test suite
beside a run), spin in each other's way: train_sr ran at 1 iteration/s beside a second run
against 11 alone, with a quarter of the time in the kernel. `runtime.threads: auto` gives
each stage the CPUs of its affinity mask (os.sched_getaffinity: what taskset, cgroups or a
scheduler granted) divided by the pipeline stages running on the machine, counted again at
every checkpoint of a long loop so that a run started later is made room for. A number
fixes it. Thread counts change the order of float sums in some kernels, so two runs agree
bit for bit only at the same count: fix it (`runtime.threads: 2`) where that matters.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

# A stage process is `python -m pipeline.stages.<name>` (DVC's commands, torchrun's ranks).
STAGE_MARK = b"pipeline.stages."
# The setting of this process, for the loops that fit the threads again as they go.
_setting: dict[str, int | str] = {"threads": "auto"}


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def running_stages(proc: Path = Path("/proc")) -> int:
    """How many pipeline stage processes run on this machine, this one included (1 where
    /proc cannot be read)."""
    count = 0
    try:
        entries = list(proc.iterdir())
    except OSError:
        return 1
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if STAGE_MARK in command and b"\x00-m\x00" in b"\x00" + command:
            count += 1
    return max(count, 1)


def fitting_threads(setting: int | str, cpus: int | None = None,
                    stages: int | None = None) -> int:
    """runtime.threads: a number as it is, auto as usable CPUs over running stages."""
    if setting != "auto":
        return int(setting)
    cpus = usable_cpus() if cpus is None else cpus
    # A thread count the person set for OpenMP (OMP_NUM_THREADS) is a ceiling: auto shares
    # out the machine, it does not take more than it was given.
    ceiling = os.environ.get("OMP_NUM_THREADS", "")
    if ceiling.isdigit() and int(ceiling) > 0:
        cpus = min(cpus, int(ceiling))
    stages = running_stages() if stages is None else stages
    return max(1, cpus // max(stages, 1))


def fit_threads(setting: int | str | None = None) -> int:
    """Set torch's intra-op threads from `setting` (None: this process's last one, as a
    loop refits them); return the count."""
    if setting is not None:
        _setting["threads"] = setting
    count = fitting_threads(_setting["threads"])
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
