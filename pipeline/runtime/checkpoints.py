"""Resume state of the training stages: one plain-dict file per run, keyed by its config.

Checkpoint folders are passed to the training stages but are not DVC outs: they are
resume state, not results (DVC deletes declared outs before a stage runs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.cli import PipelineError, first_line


def checkpoint_path(folder: Path, prefix: str, config: dict) -> Path:
    """`folder/<prefix>-<hash of config>.pt`: a run with other params gets another file."""
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return Path(folder) / f"{prefix}-{key}.pt"


def load_checkpoint(path: Path, config: dict) -> dict | None:
    """The training checkpoint at `path` if it was written for exactly `config`.

    Loaded with weights_only=True (no arbitrary unpickling); one written with other params
    is refused with the differing keys named, never silently reused.
    """
    import torch

    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PipelineError(f"{path}: cannot be loaded safely (weights_only=True): "
                            f"{first_line(exc)}; delete it to start over") from None
    saved = state.get("config", {}) if isinstance(state, dict) else {}
    if not isinstance(saved, dict) or saved != config:
        saved = saved if isinstance(saved, dict) else {}
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise PipelineError(f"{path}: checkpoint was written with other params (differs in: "
                            f"{', '.join(changed) or 'format'}); refusing to reuse it. Delete it "
                            "to start this run from scratch")
    return state


def prepare_checkpoint_dir(folder: str | Path) -> None:
    """Create a persistent checkpoint folder with a note in it, so that it is never empty."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Exclusive create, not a temp-and-rename: under torchrun every rank gets here, and one
    # rank's stale-temporary sweep must not delete another's half-made note.
    try:
        with open(folder / "README.txt", "x") as note:
            note.write("Resume state of interrupted training runs, keyed by a hash of the "
                       "training params and data.\nSafe to delete: a run then starts from "
                       "scratch.\n")
    except FileExistsError:
        pass
