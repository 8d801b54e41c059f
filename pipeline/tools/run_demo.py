"""Run `dvc repro` (or any dvc command) and print how long each stage took and its share.

Stage times come from the moments DVC announces each stage in its own output, so
cached stages show as skipped and nothing is estimated.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.table import Table

from pipeline.cli import console, first_line

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def write_timeline(path: Path, timings: list[tuple[str, float]], wall_starts: list[float]
                   ) -> None:
    rows = ["stage,start,end"] + [f"{stage},{begun:.3f},{begun + seconds:.3f}"
                                  for (stage, seconds), begun in zip(timings, wall_starts)]
    path.write_text("\n".join(rows) + "\n")


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds through run_and_time's finally


def run_and_time(command: list[str], timeline: Path | None = None
                 ) -> tuple[int, list[tuple[str, float]], float]:
    """Stream `command`'s output; return (exit code, [(stage, seconds)], total seconds).

    `timeline` gets one CSV row per stage with its wall-clock start and end (Unix
    seconds), for matching against a GPU utilisation log (bench/gpu_profile.sh). It is
    rewritten at every stage change and on SIGTERM or Ctrl-C (which also stop dvc), so a
    run cut short by `timeout` still leaves the stages it got through."""
    started = time.perf_counter()
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1, env=env)
    timings: list[tuple[str, float]] = []
    wall_starts: list[float] = []
    current, current_start = None, started
    signal.signal(signal.SIGTERM, _terminate)
    code = 130
    try:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            match = STAGE_LINE.match(line)
            if match:
                now = time.perf_counter()
                if current:
                    timings.append((current, now - current_start))
                    if timeline is not None:
                        write_timeline(timeline, timings, wall_starts)
                current, current_start = match.group(1), now
                wall_starts.append(time.time())
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
    finally:
        end = time.perf_counter()
        if current:
            timings.append((current, end - current_start))
        if timeline is not None:
            write_timeline(timeline, timings, wall_starts)
    return code, timings, end - started


def print_timings(timings: list[tuple[str, float]], total: float, code: int = 0) -> None:
    if code != 0 and not timings:
        console.print(f"[bold red]dvc failed (exit code {code}) before any stage ran[/]")
        return
    title = f"Stage times ({total:.0f} s in all)" + ("" if code == 0 else
                                                       f"; dvc failed (exit code {code})")
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    for stage, seconds in timings:
        table.add_row(stage, f"{seconds:.1f}", f"{100 * seconds / total:.1f}%")
    if not timings:
        table.add_row("(every stage was cached)", "", "")
    console.print(table)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """run_demo's own options first, then dvc's arguments as they are, options included
    (`exp run -S lr=0.0005`); a `--` between the two is accepted and dropped."""
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--timeline", type=Path, help="write each stage's start and end "
                        "(Unix seconds) to this CSV")
    parser.add_argument("dvc_args", nargs=argparse.REMAINDER,
                        help="arguments for dvc, after run_demo's own (default: repro)")
    args = parser.parse_args(argv)
    if args.dvc_args[:1] == ["--"]:
        args.dvc_args = args.dvc_args[1:]
    args.dvc_args = args.dvc_args or ["repro"]
    return args


def main() -> None:
    args = parse_arguments()
    if not (Path("dvc.yaml").is_file() and Path(".dvc").is_dir()):
        console.print(f"[bold red]error:[/] run this from the project's root folder (the one "
                      f"with dvc.yaml and .dvc/), not {Path.cwd()}", highlight=False)
        sys.exit(2)
    code, timings, total = run_and_time(["dvc", *args.dvc_args], args.timeline)
    print_timings(timings, total, code)
    sys.exit(code)


if __name__ == "__main__":
    main()
