"""The machine and packages a stage ran with, recorded in files no stage depends on.

A stage writes this record to its own `reports/environment/<stage>.json`, never into an
output another stage reads: a platform string there would change that output's hash from
one machine to the next and send everything downstream of it back to work, so a second
machine could not reuse the first one's results.
"""

from __future__ import annotations

import importlib.metadata as md
import platform
from pathlib import Path

RECORDED_PACKAGES = ("torch", "torchvision", "basicsr", "kornia", "scikit-learn", "numpy", "dvc")


def package_versions(packages=RECORDED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None where it is not installed)."""
    versions = {}
    for package in packages:
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return versions


def environment_record(device=None) -> dict:
    """Python, platform, package versions and, for a torch stage, the device it ran on."""
    record = {"python": platform.python_version(), "platform": platform.platform(),
              **package_versions()}
    if device is not None:
        import torch

        record["device"] = str(device)
        if getattr(device, "type", "") == "cuda":
            record["device_name"] = torch.cuda.get_device_name(device)
        else:
            record["device_name"] = platform.processor() or platform.machine()
            record["cpu_threads"] = torch.get_num_threads()
            record["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return record


def write_environment(path: str | Path | None, device=None) -> None:
    """Write environment_record to `path` (a stage's --environment file; None: nowhere)."""
    from pipeline.io import write_json_atomic

    if path is not None:
        write_json_atomic(path, environment_record(device))
