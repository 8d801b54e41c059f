"""Data loading: the ingested .npy cache vs decoding the raw TIFFs every epoch.

Writes N synthetic LZW TIFF crops to a temporary folder, ingests them, then times one
epoch's worth of reads both ways.

    python bench/bench_data_loading.py [--crops 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.cli import first_line
from pipeline.data.image_files import read_crop
from pipeline.data.images import from_uint16
from pipeline.io import load_array


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--crops", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        raw, cache = Path(tmp) / "raw", Path(tmp) / "cache"
        raw.mkdir()
        cache.mkdir()
        for index in range(args.crops):
            pixels = rng.integers(0, 255, (args.size, args.size), dtype=np.uint8)
            Image.fromarray(pixels).save(raw / f"{index:05d}.tif", compression="tiff_lzw")
            image, _ = read_crop(raw / f"{index:05d}.tif")
            np.save(cache / f"{index:05d}.npy", (image * 65535).astype(np.uint16)[None])
        raw_files, cache_files = sorted(raw.iterdir()), sorted(cache.iterdir())

        def decode_raw():
            return [read_crop(p)[0] for p in raw_files]

        def read_cache():
            return [from_uint16(load_array(p)) for p in cache_files]

        timings = {}
        for name, fn in (("decode raw TIFF (baseline)", decode_raw),
                         ("ingested cache", read_cache)):
            fn()  # warm the page cache so both read from memory
            start = time.perf_counter()
            fn()
            timings[name] = args.crops / (time.perf_counter() - start)
    for name, rate in timings.items():
        print(f"{name:32s} {rate:10.0f} crops/s")
    baseline = timings["decode raw TIFF (baseline)"]
    print(f"ratios: cache/raw {timings['ingested cache'] / baseline:.2f}x")


if __name__ == "__main__":
    main()
