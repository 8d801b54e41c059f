"""Run `dvc repro` (or any dvc command) and print how long each stage took and its share.

Stage times come from the moments DVC announces each stage in its own output, so
cached stages show as skipped and nothing is estimated. On a terminal, DVC and its stages
write to a terminal of their own (a pseudo-terminal whose output is copied to this one), so
their progress bars and ETAs stay live; elsewhere (a log, CI) their output is piped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rich.table import Table

from pipeline.cli import console, first_line

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
# Colours and cursor moves of a terminal's output, taken out before a line is matched.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def write_timeline(path: Path, timings: list[tuple[str, float]], wall_starts: list[float]
                   ) -> None:
    rows = ["stage,start,end"] + [f"{stage},{begun:.3f},{begun + seconds:.3f}"
                                  for (stage, seconds), begun in zip(timings, wall_starts)]
    path.write_text("\n".join(rows) + "\n")


def _terminate(signum, frame):
    raise KeyboardInterrupt  # unwinds through run_and_time's finally


def _piped(command: list[str], env: dict) -> tuple[subprocess.Popen, Iterator[str]]:
    """`command` with its output through a pipe, and its lines as they come (each copied to
    stdout first)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1, env=env)

    def lines() -> Iterator[str]:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            yield line

    return process, lines()


def _on_a_terminal(command: list[str], env: dict) -> tuple[subprocess.Popen, Iterator[str]]:
    """`command` writing to a pseudo-terminal: it (and every stage DVC runs) sees a terminal
    and draws live progress bars, whose bytes are copied to stdout as they come. The lines
    come back without colours or the bars' redraws, for STAGE_LINE."""
    import fcntl
    import pty
    import termios

    main_fd, child_fd = pty.openpty()
    with contextlib.suppress(OSError):  # the bars' width is this terminal's
        fcntl.ioctl(child_fd, termios.TIOCSWINSZ,
                    fcntl.ioctl(sys.stdout.fileno(), termios.TIOCGWINSZ, b"\0" * 8))
    process = subprocess.Popen(command, stdout=child_fd, stderr=child_fd, env=env)
    os.close(child_fd)  # the child holds it: reading ends when it (and its stages) close it

    def lines() -> Iterator[str]:
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(main_fd, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                pending += chunk
                *complete, pending = pending.split(b"\n")
                pending = pending[-4096:]  # a bar redrawn for hours never ends its line
                for raw in complete:
                    text = ANSI_ESCAPE.sub("", raw.decode(errors="replace")).rstrip("\r")
                    yield text.rsplit("\r", 1)[-1]
        finally:
            os.close(main_fd)

    return process, lines()


def run_and_time(command: list[str], timeline: Path | None = None,
                 terminal: bool | None = None) -> tuple[int, list[tuple[str, float]], float]:
    """Run `command` with its output shown; return (exit code, [(stage, seconds)], total
    seconds).

    With `terminal` (default: whether stdout is one) the command writes to a
    pseudo-terminal (_on_a_terminal), so DVC's stages draw live bars with an ETA; without,
    its output is piped and the stages print a line every 10%.

    `timeline` gets one CSV row per stage with its wall-clock start and end (Unix
    seconds), for matching against a GPU utilisation log (bench/gpu_profile.sh). It is
    rewritten at every stage change and on SIGTERM or Ctrl-C (which also stop dvc), so a
    run cut short by `timeout` still leaves the stages it got through."""
    started = time.perf_counter()
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if terminal is None:
        terminal = sys.stdout.isatty() and os.name == "posix"
    process, lines = (_on_a_terminal if terminal else _piped)(command, env)
    timings: list[tuple[str, float]] = []
    wall_starts: list[float] = []
    current, current_start = None, started
    signal.signal(signal.SIGTERM, _terminate)
    code = 130
    try:
        for line in lines:
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
        lines.close()  # the pseudo-terminal's end, on Ctrl-C too
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
