"""SR inference: batched tiled inference vs a one-tile-at-a-time loop, and memory vs size.

The baseline is the loop common ESRGAN inference scripts use: one tile per forward pass,
same generator, same tiles. Peak memory is measured in a fresh subprocess per image size
(peak RSS minus the input and output buffers), so it shows the model's working memory,
which must stay flat once images are larger than the tile.

    python bench/bench_sr_inference.py [--size 512] [--tile 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from models.sr import build_generator
from pipeline.cli import first_line
from pipeline.sr.inference import tile_starts, upscale_tiled


def one_tile_at_a_time(model, image, scale, tile, overlap):
    """Reference loop: each padded tile alone, core pasted into the output (no batching)."""
    _, _, height, width = image.shape
    out = torch.zeros(1, 1, height * scale, width * scale)
    core = tile - 2 * overlap
    with torch.no_grad():
        for y in range(0, height, core):
            for x in range(0, width, core):
                y0, x0 = max(y - overlap, 0), max(x - overlap, 0)
                y1, x1 = min(y + core + overlap, height), min(x + core + overlap, width)
                pred = model(image[..., y0:y1, x0:x1])
                cy, cx = (y - y0) * scale, (x - x0) * scale
                h, w = min(core, height - y) * scale, min(core, width - x) * scale
                out[..., y * scale:y * scale + h, x * scale:x * scale + w] = \
                    pred[..., cy:cy + h, cx:cx + w]
    return out


def memory_probe(size: int, tile: int) -> None:
    """Child process: run one image, print peak RSS beyond the input/output buffers."""
    torch.manual_seed(0)
    model = build_generator(4, 16, 2, 16, True).eval()
    image = torch.rand(1, 1, size, size)
    # Raise the peak once by the output and blend-weight buffers (inevitable, image-sized),
    # free them, then measure what tiled inference needs beyond that peak.
    buffers = [torch.ones(1, 1, size * 4, size * 4) for _ in range(2)]
    del buffers
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    upscale_tiled(model, image, 4, tile, 8, batch=4)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"size": size, "peak_extra_mb": (peak - before) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        memory_probe(args.probe, args.tile)
        return
    torch.manual_seed(0)
    model = build_generator(4, 16, 2, 16, True).eval()
    image = torch.rand(1, 1, args.size, args.size)
    n_tiles = len(tile_starts(args.size, args.tile, 8)) ** 2
    megapixels = args.size**2 * 16 / 1e6
    results = {}
    for name, run in (("one tile at a time", lambda: one_tile_at_a_time(model, image, 4,
                                                                          args.tile, 8)),
                      ("batched tiles (8)", lambda: upscale_tiled(model, image, 4, args.tile,
                                                                   8, batch=8))):
        run()  # warm-up
        start = time.perf_counter()
        out = run()
        results[name] = megapixels / (time.perf_counter() - start)
    bicubic_gap = (out - F.interpolate(image, scale_factor=4, mode="bicubic")).abs().mean()
    console = Console()
    table = Table(title=f"SR x4 inference, {args.size}^2 LR, tile {args.tile} "
                        f"({n_tiles} tiles), output megapixels per second")
    table.add_column("method")
    table.add_column("MP/s", justify="right")
    for name, speed in results.items():
        table.add_row(name, f"{speed:.3f}")
    console.print(table)
    memory = Table(title="Model working memory vs image size (tile fixed)")
    memory.add_column("LR size")
    memory.add_column("peak beyond in/out buffers (MB)", justify="right")
    for size in (128, 256, 512, 1024):
        child = subprocess.run([sys.executable, __file__, "--probe", str(size), "--tile",
                                str(args.tile)], capture_output=True, text=True, check=True)
        probe = json.loads(child.stdout.strip().splitlines()[-1])
        memory.add_row(str(size), f"{probe['peak_extra_mb']:.0f}")
    console.print(memory)
    baseline = results["one tile at a time"]
    print(f"ratios: batched/one-at-a-time {results['batched tiles (8)'] / baseline:.2f}x "
          f"(mean |SR - bicubic| {bicubic_gap:.4f})")


if __name__ == "__main__":
    main()
