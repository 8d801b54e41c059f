"""Classifier training throughput at 224 px (ImageNet's usual size), batch 16, per backbone.

Baseline in the same process: fp32, contiguous memory. Variants: channels_last, and
channels_last + bf16 autocast (or fp16/bf16 on CUDA). Also compared with the study's own
logs: ResNet50 24 steps x 16 images in ~308 s per epoch (1.25 img/s); VGG16 2 steps x
256 images in ~300 s (1.71 img/s).

    python bench/bench_classifier_throughput.py [--steps 3] [--device auto] [--size 224]
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from models.classifier import build_classifier
from pipeline.cli import first_line
from pipeline.runtime.device import autocast_for, resolve_device

STUDY_IMAGES_PER_S = {"resnet50": 24 * 16 / 308, "vgg16": 2 * 256 / 300}


def images_per_second(name: str, device: torch.device, precision: str, channels_last: bool,
                      steps: int, batch: int = 16, size: int = 224) -> float:
    torch.manual_seed(0)
    model, _ = build_classifier(name, "none")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    # As train_classifier runs on CUDA: fused Adam, cuDNN autotuning.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda" or None)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    images = torch.rand(batch, 1, size, size, device=device).contiguous(
        memory_format=memory_format)
    labels = torch.randint(0, 2, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        with autocast_for(device, precision):
            loss = loss_fn(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # warm-up: allocator, kernel selection, autotuning
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=224, help="image side in px")
    parser.add_argument("--backbones", nargs="+", default=["vgg16", "resnet50",
                                                           "mobilenet_v3_large"])
    args = parser.parse_args()
    device = resolve_device(args.device)
    fast = "bf16"
    variants = [("fp32", False), ("fp32", True), (fast, True)]
    table = Table(title=f"Training throughput, {args.size} px, batch 16, {device} (images/s)")
    for column in ("backbone", "fp32", "channels_last", f"channels_last+{fast}",
                   "speed-up", "vs study"):
        table.add_column(column, justify="right")
    ratios = []
    for name in args.backbones:
        speeds = [images_per_second(name, device, p, cl, args.steps, size=args.size)
                  for p, cl in variants]
        speedup = speeds[-1] / speeds[0]
        study = STUDY_IMAGES_PER_S.get(name)
        vs_study = f"{max(speeds) / study:.1f}x" if study else "n/a"
        ratios.append(f"{name} {speedup:.2f}x")
        table.add_row(name, *(f"{s:.2f}" for s in speeds), f"{speedup:.2f}x", vs_study)
    console = Console()
    console.print(table)
    print("ratios (channels_last+bf16 vs fp32 baseline): " + ", ".join(ratios))


if __name__ == "__main__":
    main()
