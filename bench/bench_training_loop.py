"""In-pipeline classifier training against a bare training loop, same model, size, batch
and precision, in one process.

The bare loop (baseline) repeats one pre-made batch already on the device: forward,
backward, Adam step, nothing else. The pipeline's `train_classifier` trains on a shuffled
set of random images for two epochs and reports its own `train_images_per_s` (the
warm-up epoch left out) and the share of time spent gathering batches
(`data_fraction`). Issue targets: ratio >= 0.8 on a GPU; data_fraction < 0.10.

    python bench/bench_training_loop.py [--device auto] [--size 128] [--batch 16]
        [--steps 12] [--precision auto] [--backbones resnet50 mobilenet_v3_large]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_classifier_throughput import images_per_second
from rich.console import Console
from rich.table import Table

from pipeline.classify.training import train_classifier
from pipeline.cli import first_line
from pipeline.config import load_params
from pipeline.runtime.device import effective_precision, resolve_device

REPO = Path(__file__).resolve().parents[1]


def in_pipeline(backbone: str, device: torch.device, precision: str, size: int, batch: int,
                steps: int) -> dict:
    """train_classifier's own metrics for two epochs of `steps` batches of random images."""
    params = load_params(REPO / "params.yaml")
    params = dataclasses.replace(
        params, epochs=2, batch_size=batch, lr=1e-4,
        classifier=dataclasses.replace(params.classifier, precision=precision,
                                       channels_last=True, pretrained="none", compile=False),
        augment=dataclasses.replace(params.augment, online=False))
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(steps * batch, 1, size, size, generator=generator)
    val_images = torch.rand(batch, 1, size, size, generator=generator)
    labels, val_labels = np.arange(len(images)) % 2, np.arange(batch) % 2
    with tempfile.TemporaryDirectory() as checkpoints:
        result = train_classifier(backbone, images, labels, val_images, val_labels, params,
                                  device, Path(checkpoints))
    return result["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="batches per epoch")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--backbones", nargs="+", default=["resnet50", "mobilenet_v3_large"])
    args = parser.parse_args()
    device = resolve_device(args.device)
    precision = effective_precision(args.precision, device)
    table = Table(title=f"training img/s on {device}, {args.size} px, batch {args.batch}, "
                        f"{precision}, channels_last")
    for column in ("backbone", "bare loop", "train_classifier", "ratio", "data_fraction"):
        table.add_column(column)
    ratios = []
    for backbone in args.backbones:
        bare = images_per_second(backbone, device, precision, True, args.steps, args.batch,
                                 args.size)
        metrics = in_pipeline(backbone, device, precision, args.size, args.batch, args.steps)
        ratio = metrics["train_images_per_s"] / bare
        ratios.append(ratio)
        data_fraction = metrics.get("data_fraction")  # absent before the loop's rewrite
        table.add_row(backbone, f"{bare:.1f}", f"{metrics['train_images_per_s']:.1f}",
                      f"{ratio:.2f}", "-" if data_fraction is None else f"{data_fraction:.3f}")
    console = Console()
    console.print(table)
    console.print("ratios (train_classifier / bare loop): "
                  + ", ".join(f"{b} {r:.2f}x" for b, r in zip(args.backbones, ratios)))


if __name__ == "__main__":
    main()
