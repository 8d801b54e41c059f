"""Helpers shared by every stage: atomic writes, device, seeds, versions, clean errors."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Logs captured by DVC or CI are not terminals: give tables room instead of 80 columns.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class PipelineError(RuntimeError):
    """An expected failure (bad input, bad params) reported as one line, no traceback."""


# ---------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto `path` only if the block succeeds.

    A stage killed mid-write leaves at most a `.tmp-*` file, never a truncated output
    that DVC would hash and cache as if it were complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    os.close(fd)
    # mkstemp makes 0600 files; outputs on a shared server should honour the umask instead.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.is_dir() and not tmp_path.is_symlink():
            shutil.rmtree(tmp_path)
        elif tmp_path.exists():
            tmp_path.unlink()


def prepare_checkpoint_dir(folder: str | Path) -> None:
    """Create a persistent checkpoint folder (a DVC out) with a note in it, so that it is
    never empty: DVC warns about an empty output folder on every run."""
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


def remove_stale_temporaries(folder: str | Path) -> None:
    """Delete `.tmp-*` files a killed process left behind (its rename never happened)."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(".tmp-*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=_json_default)
    write_text_atomic(path, text + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def save_array_atomic(path: str | Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    write_bytes_atomic(path, buffer.getvalue())


def load_array(path: str | Path) -> np.ndarray:
    # Never unpickle: these files come from our own stages, but a data folder is untrusted.
    return np.load(path, allow_pickle=False)


def save_torch_atomic(path: str | Path, obj: dict) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def write_csv_atomic(path: str | Path, frame) -> None:
    write_text_atomic(path, frame.to_csv(index=False))


# Columns that name crops, samples and classes are text whatever they look like: read with
# pandas' defaults, a sample folder "NA_crops_r" became NaN (its crops silently left out
# of every split) and samples "12.1" and "12.10" both the number 12.1 (two patients
# merged into one).
NAME_COLUMNS = ("crop_id", "group", "sample", "class_name", "path")


def read_crop_table(path, **read_csv_options):
    """A CSV of crops (manifest, split, folds, predictions) as written by the stages."""
    import pandas as pd

    return pd.read_csv(path, dtype=dict.fromkeys(NAME_COLUMNS, str), keep_default_na=False,
                       na_values=[""], **read_csv_options)


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
                            f"{str(exc).splitlines()[0][:200]}; delete it to start over") from None
    saved = state.get("config", {}) if isinstance(state, dict) else {}
    if not isinstance(saved, dict) or saved != config:
        saved = saved if isinstance(saved, dict) else {}
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        raise PipelineError(f"{path}: checkpoint was written with other params (differs in: "
                            f"{', '.join(changed) or 'format'}); refusing to reuse it. Delete it "
                            "to start this run from scratch")
    return state


def check_raw_dir(raw_dir: Path) -> None:
    """Fail with a message that says why a raw folder is not there, DVC queue case included.

    check_params calls this before DVC looks at ingest's deps (DVC's own error for a
    missing dep, `No such file or directory: .../.dvc/tmp/exps/...`, says nothing of why).
    """
    raw_dir = Path(raw_dir)
    if raw_dir.is_dir():
        return
    hint = ""
    if not raw_dir.is_absolute() and ".dvc/tmp/exps" in Path.cwd().as_posix():
        hint = (" - this run is in a DVC temporary copy (.dvc/tmp/exps/...), where a relative "
                "path outside the repository no longer resolves: give data.raw_dir as an "
                "absolute path, or `dvc add` the data inside the repository")
    elif not raw_dir.is_absolute() and str(raw_dir).startswith(".."):
        hint = (" - relative paths outside the repository break under `dvc exp run --queue`; "
                "prefer an absolute path")
    raise PipelineError(f"data.raw_dir: folder not found: {raw_dir}{hint}")


# ---------------------------------------------------------------- run context
def bytes_under(path: str | Path) -> int:
    """Bytes of the files under `path` (or of `path` itself): a stage's `bytes_written`."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_environment(metrics_path: str | Path, device=None) -> None:
    """Write the environment record to `environment.json` beside a stage's metrics file.

    Kept out of the metrics themselves so that `dvc metrics diff` between two machines
    shows figures, not platform strings; dvc.yaml declares the file as a plain output.
    """
    write_json_atomic(Path(metrics_path).with_name("environment.json"),
                      environment_record(device))


def environment_record(device=None) -> dict:
    """Versions and device a stage ran with, stored beside its metrics."""
    import importlib.metadata as md

    record = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("torch", "torchvision", "basicsr", "kornia", "scikit-learn", "numpy", "dvc"):
        try:
            record[package] = md.version(package)
        except md.PackageNotFoundError:
            record[package] = None
    if device is not None:
        record["device"] = str(device)
        import torch

        if getattr(device, "type", "") == "cuda":
            record["device_name"] = torch.cuda.get_device_name(device)
        else:
            record["device_name"] = platform.processor() or platform.machine()
            record["cpu_threads"] = torch.get_num_threads()
    return record


class _LoggingProgress(Progress):
    """Rich progress bar; where output is no terminal (DVC logs, CI), a plain line every 10%."""

    def _log(self, task_id) -> None:
        if self.console.is_terminal:
            return
        task = self._tasks[task_id]
        if not task.total:
            return
        decile = int(10 * task.completed / task.total)
        if decile > task.fields.get("logged_decile", 0) or task.completed >= task.total:
            if task.fields.get("logged_decile") == 10:
                return
            task.fields["logged_decile"] = decile
            elapsed = task.elapsed or 0.0
            self.console.print(f"{task.description}: {task.completed:g}/{task.total:g} "
                               f"({elapsed:.0f} s) {task.fields.get('status', '')}",
                               highlight=False)

    def update(self, task_id, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)


def progress() -> Progress:
    return _LoggingProgress(TextColumn("[bold]{task.description}"), BarColumn(),
                            MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


def stage_main(func: Callable[[], Any]) -> Callable[[], None]:
    """Wrap a stage's main(): expected errors become one red line and exit code 1."""

    @functools.wraps(func)
    def wrapper() -> None:
        from pipeline.config import ParamsError

        start = time.perf_counter()
        try:
            func()
        except (PipelineError, ParamsError) as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            sys.exit(130)
        spec = func.__globals__.get("__spec__")
        stage = spec.name if spec is not None else func.__module__
        console.print(f"[dim]{stage} finished in {time.perf_counter() - start:.1f} s[/]")

    return wrapper
