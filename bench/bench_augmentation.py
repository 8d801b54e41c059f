"""Augmentation: Kornia batched on the device vs torchvision v2 transforms per image.

Also: augmentation time as a fraction of one classifier training step at the same batch
(target: under 10%).

    python bench/bench_augmentation.py [--images 512] [--size 64] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table
from torchvision.transforms import v2

from models.classifier import build_classifier
from pipeline.classify.augment import augment_images, build_augmentation
from pipeline.cli import first_line
from pipeline.config import load_params
from pipeline.runtime.device import autocast_for, resolve_device


def torchvision_per_image(params) -> v2.Compose:
    """The same recipe with torchvision v2, applied one image at a time."""
    return v2.Compose([
        v2.RandomHorizontalFlip(params.hflip), v2.RandomVerticalFlip(params.vflip),
        v2.RandomApply([v2.RandomChoice([v2.RandomRotation((d, d)) for d in (90, 180, 270)])],
                       p=params.rot90),
        v2.RandomApply([v2.RandomAffine(params.rotation_degrees,
                                        (params.translate, params.translate),
                                        tuple(params.scale_range))], p=0.75),
        v2.RandomApply([v2.ColorJitter(params.brightness, params.contrast)], p=0.5),
        v2.RandomApply([v2.GaussianNoise(sigma=params.noise_std, clip=True)], p=0.5),
    ])


def timed(fn, repeats: int = 2) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    params = load_params().augment
    images = torch.rand(args.images, 1, args.size, args.size)
    kornia_aug = build_augmentation(params)
    tv_aug = torchvision_per_image(params)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_kornia():
        augment_images(images, kornia_aug, device, batch=256)
        sync()

    def run_torchvision():
        torch.stack([tv_aug(image) for image in images])

    kornia_rate = args.images / timed(run_kornia)
    tv_rate = args.images / timed(run_torchvision)

    model, _ = build_classifier("resnet50", "none")
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    batch = images[:args.batch].to(device)
    labels = torch.randint(0, 2, (args.batch,), device=device)
    precision = "bf16"

    def train_step():
        with autocast_for(device, precision):
            loss = torch.nn.functional.cross_entropy(
                model(batch.contiguous(memory_format=torch.channels_last)).float(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sync()

    def augment_batch():
        with torch.no_grad():
            kornia_aug.to(device)(batch)
        sync()

    step_seconds = timed(train_step)
    augment_seconds = timed(augment_batch, repeats=5)
    table = Table(title=f"Augmentation, {args.size} px, {args.images} images, {device}")
    table.add_column("method")
    table.add_column("images/s", justify="right")
    table.add_row("torchvision v2, per image (baseline)", f"{tv_rate:.0f}")
    table.add_row("Kornia, batched on device", f"{kornia_rate:.0f}")
    Console().print(table)
    share = augment_seconds / step_seconds
    print(f"online augmentation of a batch of {args.batch}: {1000 * augment_seconds:.1f} ms = "
          f"{100 * share:.1f}% of a ResNet50 training step ({1000 * step_seconds:.0f} ms, "
          f"bf16 + channels_last)")
    print(f"ratios: kornia/torchvision {kornia_rate / tv_rate:.2f}x; "
          f"augment/train-step {share:.3f}")


if __name__ == "__main__":
    main()
