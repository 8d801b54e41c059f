"""Pipeline overhead: a no-op `dvc repro` and `dvc status` on an up-to-date project.

Run inside a project whose pipeline has been reproduced (the demo after `dvc repro`).
Baseline in the same process: starting the Python interpreter with `import dvc`.

    python bench/bench_dvc_overhead.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from pipeline.cli import first_line


def seconds(cmd: list[str], repeats: int) -> float:
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=env)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dvc = str(Path(sys.executable).with_name("dvc"))
    baseline = seconds([sys.executable, "-c", "import dvc.repo"], args.repeats)
    status = seconds([dvc, "status"], args.repeats)
    repro = seconds([dvc, "repro"], args.repeats)
    print(f"{'python -c import dvc.repo':28s} {baseline:6.2f} s (baseline)")
    print(f"{'dvc status':28s} {status:6.2f} s")
    print(f"{'dvc repro (nothing to do)':28s} {repro:6.2f} s")
    print(f"ratios: status/baseline {status / baseline:.1f}x, repro/baseline "
          f"{repro / baseline:.1f}x")


if __name__ == "__main__":
    main()
