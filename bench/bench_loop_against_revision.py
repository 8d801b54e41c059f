"""The classifier's training loop now against the loop at an earlier commit, in one process,
alternated round by round, each round against the bare loop timed at its start and end.

Why one process and rounds: on a shared machine the same code's images/s moves by 20% from
one run to the next (on 2026-12-06 here, six runs of bench_training_loop.py's unchanged bare
loop spanned 23.6-32.4 img/s), more than the change to be judged; two bench runs in two
processes compare two moments of the machine. Here every round times the bare loop, the loop
at `--revision` and the loop now (its sets of uint16 rows in memory, from disk, and made and
augmented per batch), in an order that turns each round, then the bare loop again. Each
ratio divides by the mean of the round's two bare timings; the paired column divides now by
then within each round. A round count that is a multiple of the four loops puts each of them
in each place equally often.

The revision's pipeline/, bench/ and params.yaml are exported (git archive) to a temporary
folder, its package renamed `pipeline_at_<revision>` so that both load side by side, and its
loop is run by that commit's own bench_training_loop.in_pipeline (backbone, device, precision,
size, batch, steps), as its bench ran it. Both use models/ of this checkout: the script stops
if models/ differs between the revision and the checkout.

    python bench/bench_loop_against_revision.py [--revision 0323bde] [--rounds 8]
        [--backbone mobilenet_v3_large] [--size 128] [--batch 16] [--steps 12]
        [--device auto] [--precision auto]

0323bde is the last commit before issue 30 (streaming uint16 rows, online augmentation).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from bench_classifier_throughput import images_per_second
from bench_training_loop import SOURCES, in_pipeline
from rich.console import Console
from rich.table import Table

from pipeline.cli import first_line
from pipeline.runtime.device import effective_precision, resolve_device

REPO = Path(__file__).resolve().parents[1]
IMPORT_OF_PIPELINE = re.compile(r"^(\s*)(from|import) pipeline\b", re.MULTILINE)


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=False)


def export_revision(revision: str, into: Path) -> tuple[str, ModuleType]:
    """The revision's pipeline/ as package pipeline_at_<sha>, and its bench_training_loop
    module importing it; returns (short sha, that module)."""
    found = git("rev-parse", "--short", f"{revision}^{{commit}}")
    if found.returncode:
        sys.exit(f"{revision}: not a commit of {REPO}")
    short = found.stdout.decode().strip()
    if git("diff", "--quiet", short, "--", "models").returncode:
        sys.exit(f"models/ differs between {short} and this checkout: both loops would build "
                 "this checkout's models, so the comparison would not be of the revision")
    archive = git("archive", "--format=tar", short, "pipeline", "bench", "params.yaml")
    if archive.returncode:
        sys.exit(archive.stderr.decode())
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    package = f"pipeline_at_{short}"
    (into / "pipeline").rename(into / package)
    for source in [*(into / package).rglob("*.py"), *(into / "bench").glob("*.py")]:
        source.write_text(IMPORT_OF_PIPELINE.sub(rf"\1\2 {package}", source.read_text()))
    sys.path.insert(0, str(into))
    # Its bench reads params.yaml from its parent folder: the revision's, exported beside it.
    spec = importlib.util.spec_from_file_location(f"bench_training_loop_at_{short}",
                                                  into / "bench" / "bench_training_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # An import the rename missed would time this checkout's loop under the revision's name.
    if module.train_classifier.__module__ != f"{package}.classify.training":
        sys.exit(f"{short}'s bench imports train_classifier from "
                 f"{module.train_classifier.__module__}, not from its own exported package")
    return short, module


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--revision", default="0323bde")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--backbone", default="mobilenet_v3_large")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="batches per epoch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    device = resolve_device(args.device)
    precision = effective_precision(args.precision, device)
    shape = (args.size, args.batch, args.steps)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        short, old_bench = export_revision(args.revision, Path(tmp))
        loops: dict[str, Callable[[], dict]] = {
            short: lambda: old_bench.in_pipeline(args.backbone, device, precision, *shape)}
        for source in SOURCES:
            loops[source] = (lambda s=source: in_pipeline(args.backbone, device, precision,
                                                          *shape, s))
        names = list(loops)
        if args.rounds % len(names):
            console.print(f"[yellow]{args.rounds} rounds over {len(names)} loops: some loops "
                          "run first or last more often than others[/]")
        ratios: dict[str, list[float]] = {name: [] for name in names}
        paired: dict[str, list[float]] = {source: [] for source in SOURCES}
        bare_timings: list[float] = []

        def bare() -> float:
            return images_per_second(args.backbone, device, precision, True, args.steps,
                                     args.batch, args.size)

        for round_number in range(args.rounds):
            turn = round_number % len(names)
            order = names[turn:] + names[:turn]
            before = bare()
            speed = {name: loops[name]()["train_images_per_s"] for name in order}
            after = bare()
            bare_timings += [before, after]
            baseline = (before + after) / 2
            for name in names:
                ratios[name].append(speed[name] / baseline)
            for source in SOURCES:
                paired[source].append(speed[source] / speed[short])
            console.print(f"round {round_number + 1}/{args.rounds}: bare {before:.1f} / "
                          f"{after:.1f} img/s; " + ", ".join(
                              f"{name} {speed[name]:.1f} ({speed[name] / baseline:.2f}x)"
                              for name in order))

    table = Table(title=f"{args.backbone} training img/s / bare loop on {device}, {args.size} "
                        f"px, batch {args.batch}, {precision}: median (range) of "
                        f"{args.rounds} rounds")
    for column in ("loop", "ratio to the bare loop", f"img/s now / img/s at {short}"):
        table.add_column(column)
    table.add_row(f"at {short}", spread(ratios[short]), "1")
    labels = {"memory": "now, rows in memory", "disk": "now, rows from disk",
              "online": "now, made + augmented"}
    for source in SOURCES:
        table.add_row(labels[source], spread(ratios[source]), spread(paired[source]))
    console.print(table)
    console.print(f"bare loop {spread(bare_timings)} img/s over the run")
    console.print(f"ratio: the loop now / the loop at {short}, paired by round, median: "
                  + ", ".join(f"{labels[source]} {statistics.median(paired[source]):.2f}x"
                              for source in SOURCES))


if __name__ == "__main__":
    main()
