"""What every command-line entry point shares: the console, progress bars, one-line errors."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an error message, cut to `limit` characters: enough to name the
    problem in a one-line error without a library's multi-line explanation."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else ""


def warn(message: str) -> None:
    """A warning a reader must not miss, in the console's yellow."""
    console.print(f"[bold yellow]warning:[/] {message}", highlight=False)


# What the path arguments the stages share hold (dvc.yaml passes them; paths live there).
PATH_HELP = {
    "split": "the split stage's split.csv: crop_id, group, label, split",
    "crops": "ingest's crop cache folder (uint16 .npy per crop)",
    "sr": "sr_infer's output folder",
    "manifest": "ingest's manifest.csv",
    "metrics": "the metrics JSON this stage writes",
    "model": "a trained model file",
    "checkpoints": "persistent folder for resume state (not a DVC output)",
    "curves": "per-epoch or per-validation curves (CSV)",
}


def stage_parser(doc: str | None, *paths: str | tuple[str, str],
                 environment: bool = False) -> argparse.ArgumentParser:
    """An argument parser described by the first line of a module's docstring, with the
    `--params` option every stage takes, a required path option per name in `paths`
    (`"split"` or `("out", "what it holds")`), and with `environment` the optional
    `--environment` file for environment.write_environment."""
    parser = argparse.ArgumentParser(description=first_line(doc or ""))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the params file to read (default: params.yaml)")
    for path in paths:
        name, help_text = path if isinstance(path, tuple) else (path, PATH_HELP.get(path))
        parser.add_argument(f"--{name}", type=Path, required=True, help=help_text)
    if environment:
        parser.add_argument("--environment", type=Path,
                            help="where to record the machine and packages (no stage reads it)")
    return parser


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
                            MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                            transient=False)


def print_frame(title: str, frame) -> None:
    """A table of text cells (a pandas DataFrame) on the console; nothing when it is empty."""
    from rich.markup import escape
    from rich.table import Table

    if frame.empty:
        return
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        # escaped: rich reads "[not estimable]" as markup and would drop it
        table.add_row(*(escape(str(value)) for value in row))
    console.print(table)


def stage_main(func: Callable[[], Any]) -> Callable[[], None]:
    """Wrap an entry point's main(): expected errors become one red line and exit code 1."""

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
