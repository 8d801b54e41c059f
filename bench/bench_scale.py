"""Scale: ingest and split on 1k, 10k and 50k synthetic crops; time and peak memory.

Each size runs in a fresh subprocess so peak RSS is its own. Crops are small (32 px) so
that writing 50k files stays inside the time budget; memory must not grow with the
number of crops beyond the manifest.

    python bench/bench_scale.py [--sizes 1000 10000 50000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.cli import first_line


def probe(count: int) -> None:
    from pipeline.config import load_params
    from pipeline.data.ingest import ingest_crops
    from pipeline.data.split import split_groups

    params = load_params()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        per_group = 25
        for index in range(count):
            group = index // per_group
            class_name = ("ALS", "Control")[group % 2]
            folder = raw / class_name / f"S{group:05d}_crops_r"
            if index % per_group == 0:
                folder.mkdir(parents=True)
            pixels = rng.integers(1, 255, (32, 32), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{index:06d}.png")
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        data = dataclasses.replace(params.data, positive="ALS", crop_size=32)
        start = time.perf_counter()
        result = ingest_crops(raw, Path(tmp) / "cache", data)
        ingest_seconds = time.perf_counter() - start
        start = time.perf_counter()
        split_groups(result.manifest, params.split, 0)
        split_seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"crops": count, "ingest_s": ingest_seconds, "split_s": split_seconds,
                      "peak_growth_mb": (peak - base_rss) / 1024,
                      "manifest_mb": result.manifest.memory_usage(deep=True).sum() / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe)
        return
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--probe", str(size)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'crops':>8} {'ingest s':>9} {'crops/s':>9} {'split s':>8} {'peak growth MB':>15} "
          f"{'manifest MB':>12}")
    for r in rows:
        print(f"{r['crops']:8d} {r['ingest_s']:9.1f} {r['crops'] / r['ingest_s']:9.0f} "
              f"{r['split_s']:8.2f} {r['peak_growth_mb']:15.1f} {r['manifest_mb']:12.1f}")
    first, last = rows[0], rows[-1]
    print(f"ratios: {last['crops'] // first['crops']}x crops -> ingest time "
          f"{last['ingest_s'] / first['ingest_s']:.1f}x, peak memory growth "
          f"{max(last['peak_growth_mb'], 0.1) / max(first['peak_growth_mb'], 0.1):.1f}x")


if __name__ == "__main__":
    main()
