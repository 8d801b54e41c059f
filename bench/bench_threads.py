"""Two runs on one machine: train_sr alone, then two side by side, with runtime.threads auto
(each stage takes the usable CPUs over the stages running) and fixed at every usable CPU
(torch's own default, what each run took before). Real stage processes on the demo's pairs.

    python bench/bench_threads.py [--iters 400]

Ends with the ratio lines: side by side over alone, for auto and for the old default.
Run it on a quiet machine: anything else busy on the cores is in every figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def stage(module: str, *args, params: Path) -> subprocess.Popen:
    # The console goes to a file: a pipe left unread while waiting on another run fills up
    # and stalls the run writing to it.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen([sys.executable, "-m", f"pipeline.stages.{module}",
                                *map(str, args), "--params", str(params)], cwd=REPO,
                               stdout=log, stderr=log, text=True,
                               env=os.environ | {"PYTHONPATH": str(REPO)})
    process.log = log  # type: ignore[attr-defined]
    return process


def finished(process: subprocess.Popen) -> None:
    process.wait()
    if process.returncode:
        process.log.seek(0)
        raise SystemExit(f"stage failed:\n{process.log.read()[-2000:]}")


def write_params(root: Path, iters: int, threads: int | str) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["sr"] |= {"iters_psnr": iters, "iters_gan": 0, "val_every": iters,
                  "checkpoint_every": iters, "generator": "psnr"}
    raw["runtime"] = {"threads": threads}
    raw["device"] = "cpu"
    path = root / f"params-{threads}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def prepare(root: Path, params: Path) -> Path:
    """The demo's raw crops through make_pairs: what train_sr reads."""
    for args in (("make_demo", "--out", root / "raw", "--metrics", root / "demo.json"),
                 ("ingest", "--raw-dir", root / "raw", "--out", root / "ingested", "--metrics",
                  root / "ingest.json", "--report", root / "bad.csv"),
                 ("split", "--manifest", root / "ingested" / "manifest.csv", "--out",
                  root / "split.csv", "--folds", root / "folds.csv", "--metrics",
                  root / "split.json"),
                 ("make_pairs", "--crops", root / "ingested" / "crops", "--split",
                  root / "split.csv", "--manifest", root / "ingested" / "manifest.csv",
                  "--out", root / "pairs")):
        finished(stage(*args, params=params))
    return root / "pairs"


def train_sr(root: Path, pairs: Path, params: Path, name: str) -> subprocess.Popen:
    out = root / name
    return stage("train_sr", "--pairs", pairs, "--model-dir", out / "model", "--checkpoints",
                 out / "checkpoints", "--metrics", out / "metrics.json", "--curves",
                 out / "curves.csv", "--samples", out / "samples.png", params=params)


def timed(root: Path, pairs: Path, params: Path, runs: int, tag: str) -> float:
    """Wall seconds for `runs` train_sr processes started together."""
    start = time.perf_counter()
    processes = [train_sr(root, pairs, params, f"{tag}-{index}") for index in range(runs)]
    for process in processes:
        finished(process)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=400, help="SR iterations per run")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        auto, fixed = write_params(root, args.iters, "auto"), write_params(root, args.iters, cpus)
        pairs = prepare(root, auto)
        timed(root, pairs, auto, 1, "warm")  # page cache, Python bytecode
        alone = timed(root, pairs, auto, 1, "alone")
        both_auto = timed(root, pairs, auto, 2, "auto")
        alone_fixed = timed(root, pairs, fixed, 1, "alone-fixed")
        both_fixed = timed(root, pairs, fixed, 2, "fixed")
    print(f"{cpus} usable CPUs, train_sr {args.iters} iterations per run")
    print("| threads | one run (s) | two side by side (s) | ratio |\n|---|---|---|---|")
    print(f"| auto | {alone:.1f} | {both_auto:.1f} | {both_auto / alone:.2f} |")
    print(f"| {cpus} each (torch's default) | {alone_fixed:.1f} | {both_fixed:.1f} | "
          f"{both_fixed / alone_fixed:.2f} |")
    print(f"ratio two side by side / one alone: auto {both_auto / alone:.2f}x, "
          f"{cpus} threads each {both_fixed / alone_fixed:.2f}x")


if __name__ == "__main__":
    main()
