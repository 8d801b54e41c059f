"""Start-up time of each stage's process (`python -m pipeline.stages.<stage> --help`), against a
bare `python -c pass` (baseline) and a bare `import torch`, best of several runs on a warm
file cache. Issue target: the torch-free stages in well under a second.

    python bench/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from pipeline.cli import first_line

REPO = Path(__file__).resolve().parents[1]
TORCH_FREE = ["stages.check_params", "stages.ingest", "stages.split", "stages.compare",
              "stages.report", "tools.grid", "tools.ablation"]
TORCH_STAGES = ["stages.train_classifier", "stages.evaluate"]


def best_seconds(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bare = best_seconds([sys.executable, "-c", "pass"], args.repeats)
    torch_import = best_seconds([sys.executable, "-c", "import torch"], args.repeats)
    print(f"{'python -c pass':<28} {bare:6.2f} s (baseline)")
    label = 'python -c "import torch"'
    print(f"{label:<28} {torch_import:6.2f} s ({torch_import / bare:.1f}x)")
    worst_free = 0.0
    for stage in TORCH_FREE + TORCH_STAGES:
        seconds = best_seconds([sys.executable, "-m", f"pipeline.{stage}", "--help"],
                               args.repeats)
        if stage in TORCH_FREE:
            worst_free = max(worst_free, seconds)
        print(f"{stage:<28} {seconds:6.2f} s ({seconds / bare:.1f}x)"
              + ("" if stage in TORCH_FREE else "  (imports torch)"))
    print(f"slowest torch-free stage: {worst_free:.2f} s = {worst_free / bare:.1f}x bare "
          f"python, {worst_free / torch_import:.2f}x an import of torch")


if __name__ == "__main__":
    main()
