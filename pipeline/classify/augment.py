"""Augment the training split with Kornia (on the GPU when there is one), class-balanced.

The study balanced classes by oversampling the minority class with augmented copies;
here that is done on the training split only. Validation and test crops are never
augmented. With augment.online the stage writes the balanced, un-augmented set and
the training loop augments every batch on the device instead.
"""

from __future__ import annotations

import kornia.augmentation as K
import numpy as np
import torch

from pipeline.classify.images import balanced_indices
from pipeline.config import AugmentParams


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
