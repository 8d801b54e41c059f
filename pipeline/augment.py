"""Augment the training split with Kornia (on the GPU when there is one), class-balanced.

The study balanced classes by oversampling the minority class with augmented copies;
here that is done on the training split only. Validation and test crops are never
augmented. With augment.online the stage writes the balanced, un-augmented set and
the training loop augments every batch on the device instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import pandas as pd
import torch

from pipeline.common import (
    bytes_under,
    console,
    read_crop_table,
    save_array_atomic,
    stage_main,
    write_csv_atomic,
    write_environment,
    write_json_atomic,
)
from pipeline.config import AugmentParams, load_params
from pipeline.datasets import balanced_indices, load_classifier_images, split_subset
from pipeline.device import resolve_device
from pipeline.images import to_uint16


def build_augmentation(params: AugmentParams) -> K.AugmentationSequential:
    """The study's geometric augmentations plus intensity jitter and noise, each a param."""
    steps = [K.RandomHorizontalFlip(p=params.hflip), K.RandomVerticalFlip(p=params.vflip),
             K.RandomRotation90(times=(1, 3), p=params.rot90)]
    if params.rotation_degrees > 0 or params.translate > 0 or params.scale_range != [1.0, 1.0]:
        steps.append(K.RandomAffine(degrees=params.rotation_degrees,
                                    translate=(params.translate, params.translate),
                                    scale=tuple(params.scale_range), padding_mode="reflection",
                                    p=0.75))
    if params.brightness > 0:
        steps.append(K.RandomBrightness((1 - params.brightness, 1 + params.brightness), p=0.5))
    if params.contrast > 0:
        steps.append(K.RandomContrast((1 - params.contrast, 1 + params.contrast), p=0.5))
    if params.noise_std > 0:
        steps.append(K.RandomGaussianNoise(std=params.noise_std, p=0.5))
    return K.AugmentationSequential(*steps)


@torch.no_grad()
def augment_images(images: torch.Tensor, augmentation: K.AugmentationSequential,
                   device: torch.device, batch: int = 256) -> torch.Tensor:
    """Apply the augmentation in batches on `device`; result on the CPU, clamped to [0, 1]."""
    augmentation = augmentation.to(device)
    out = torch.empty_like(images)
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch].to(device, non_blocking=True)
        out[start:start + batch] = augmentation(chunk).clamp(0, 1).cpu()
    return out


def make_training_set(images: torch.Tensor, labels: np.ndarray, params: AugmentParams,
                      seed: int, device: torch.device) -> tuple[torch.Tensor, np.ndarray,
                                                                 np.ndarray]:
    """Balanced (optional), `copies`-fold augmented training set: (images, labels, source)."""
    rng = np.random.default_rng(seed)
    source = balanced_indices(labels, rng) if params.balance else np.arange(len(labels))
    source = np.tile(source, params.copies) if not params.online else source
    base = images[torch.from_numpy(source)]
    if params.online:
        return base, labels[source], source
    torch.manual_seed(seed)  # Kornia draws from torch's global generator
    return augment_images(base, build_augmentation(params), device), labels[source], source


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--sr", type=Path, required=True, help="sr_infer output folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    device = resolve_device(params.device)
    train = split_subset(read_crop_table(args.split), "train")
    images = load_classifier_images(params, params.classifier.input, args.crops, args.sr,
                                    train["crop_id"].tolist(), device)
    labels = train["label"].to_numpy()
    augmented, out_labels, source = make_training_set(images, labels, params.augment,
                                                      params.seed, device)
    save_array_atomic(args.out / "train_images.npy", to_uint16(augmented.numpy()))
    write_csv_atomic(args.out / "train_index.csv", pd.DataFrame({
        "crop_id": train["crop_id"].to_numpy()[source], "group": train["group"].to_numpy()[source],
        "label": out_labels}))
    metrics = {"input": params.classifier.input, "source_crops": len(train),
               "training_images": len(augmented), "positives": int(out_labels.sum()),
               "negatives": int(len(out_labels) - out_labels.sum()),
               "online": params.augment.online, "bytes_written": bytes_under(args.out)}
    write_json_atomic(args.metrics, metrics)
    write_environment(args.metrics, device)
    console.print(f"augment: {len(train)} crops -> {len(augmented)} training images on {device}")


if __name__ == "__main__":
    main()
