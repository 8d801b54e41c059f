"""What ran, for the report's header: the profile and the params that depart from it, the
data and its manifest digest, the code (git commit, clean or not), the date, the machine
and the precision. A figure without these cannot be traced to the run that made it."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from pipeline.config import Params, composed_values, departures
from pipeline.io import read_json

# The paths a dirty tree's line names before it counts the rest.
SHOWN_CHANGES = 5


def _git(*args: str, cwd: Path) -> str | None:
    """git's stdout, or None where git is missing or this is no checkout."""
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


def code_state(root: Path = Path(".")) -> str:
    """'commit abc1234, clean', 'commit abc1234, dirty: 2 changed paths (a, b)', 'commit
    abc1234 (the experiment's base)' or 'not a git checkout'.

    Inside `dvc exp run` the checkout is the experiment's base commit with the experiment's
    params written over it, so it is named as such and not called dirty."""
    base = os.environ.get("DVC_EXP_BASELINE_REV")
    if base:
        name = os.environ.get("DVC_EXP_NAME")
        return (f"commit {base[:7]} (the base of experiment {name}: that commit with the "
                "params above)" if name else f"commit {base[:7]} (the experiment's base)")
    head = _git("rev-parse", "--short", "HEAD", cwd=root)
    if head is None:
        return "not a git checkout"
    status = _git("status", "--porcelain", cwd=root)
    if status is None:
        return f"commit {head.strip()}, state unknown (git status failed)"
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    if not changed:
        return f"commit {head.strip()}, clean"
    shown = ", ".join(changed[:SHOWN_CHANGES]) + (", ..." if len(changed) > SHOWN_CHANGES
                                                  else "")
    return f"commit {head.strip()}, dirty: {len(changed)} changed paths ({shown})"


def machine_text(environment: dict) -> str:
    """'cpu: x86_64, 2 threads, AVX2; Linux-...; torch 2.4' from an environment record."""
    if not environment:
        return "not recorded"
    device = environment.get("device", "no device recorded")
    if str(device).startswith("cuda"):
        where = f"{device}: {environment.get('device_name')}"
    else:
        where = (f"{device}: {environment.get('device_name')}, "
                 f"{environment.get('cpu_threads')} threads, {environment.get('cpu_capability')}")
    return f"{where}; {environment.get('platform')}; torch {environment.get('torch')}"


def by_backbone(values: dict[str, str]) -> str:
    """'fp32' when every backbone has the same value, else 'vgg16: bf16; resnet50,
    mobilenet_v3_large: fp32' (backbones with one value together)."""
    names: dict[str, list[str]] = {}
    for name, value in values.items():
        names.setdefault(value, []).append(name)
    if len(names) == 1:
        return next(iter(names))
    return "; ".join(f"{', '.join(group)}: {value}" for value, group in names.items())


def run_facts(reports: Path, params: Params, raw_params: dict,
              now: datetime | None = None, root: Path = Path(".")) -> list[tuple[str, str]]:
    """(what, fact) rows for the report's header; `raw_params` is params.yaml as read."""
    changed = departures(raw_params, composed_values(params.profile))
    overrides = ", ".join(f"{key}: {value!r} (profile: {wanted!r})"
                          for key, (value, wanted) in changed.items()) or "none"
    digest = read_json(reports / "ingest" / "metrics.json").get("manifest_sha256")
    backbones = params.classifier.backbones
    machines = {b: machine_text(read_json(reports / "environment" / f"train_classifier-{b}.json"))
                for b in backbones}
    precisions = {b: str(read_json(reports / "train" / b / "metrics.json").get(
        "precision", "not recorded")) for b in backbones}
    sr_precision = read_json(reports / "sr" / "metrics.json").get("precision")
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return [("Profile", f"{params.profile}; params that differ from it: {overrides}"),
            ("Data", f"{params.data.raw_dir} (manifest "
                     f"{digest[:12] if digest else 'digest not recorded'})"),
            ("Code", code_state(root)),
            ("Date", when.strftime("%Y-%m-%d %H:%M UTC")),
            ("Machine (classifier training)", by_backbone(machines)),
            ("Precision", f"classifier training {by_backbone(precisions)}"
                          + (f"; SR training {sr_precision}" if sr_precision else ""))]
