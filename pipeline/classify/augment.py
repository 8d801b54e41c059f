"""Augment the training split with Kornia (on the GPU when there is one), class-balanced.

The study balanced classes by oversampling the minority class with augmented copies;
here that is done on the training split only. Validation and test crops are never
augmented. With augment.online the stage writes the balanced, un-augmented set and
the training loop augments every batch on the device instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import kornia.augmentation as K
import numpy as np
import torch

from pipeline.classify.images import ClassifierImages, balanced_indices
from pipeline.config import AugmentParams
from pipeline.data.images import to_uint16

# Images augmented (and made from the cache) at a time: bounded memory at any set size.
AUGMENT_BATCH = 256


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
                   device: torch.device, batch: int = AUGMENT_BATCH) -> torch.Tensor:
    """Apply the augmentation in batches on `device`; result on the CPU, clamped to [0, 1]."""
    augmentation = augmentation.to(device)
    out = torch.empty_like(images)
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch].to(device, non_blocking=True)
        out[start:start + batch] = augmentation(chunk).clamp(0, 1).cpu()
    return out


def training_sources(labels: np.ndarray, params: AugmentParams, seed: int) -> np.ndarray:
    """Which source image each training image is made from: every image, the minority
    class drawn again up to the majority's count (augment.balance), `copies` times over
    (offline augmentation; online, the loop augments each epoch instead)."""
    rng = np.random.default_rng(seed)
    source = balanced_indices(labels, rng) if params.balance else np.arange(len(labels))
    return np.tile(source, params.copies) if not params.online else source


@torch.no_grad()
def training_set_chunks(images: ClassifierImages | torch.Tensor, source: np.ndarray,
                        params: AugmentParams, seed: int, device: torch.device
                        ) -> Iterator[np.ndarray]:
    """The training set (images[source], augmented unless augment.online) as uint16 cache
    rows, AUGMENT_BATCH at a time in order, so that a stage can write it to disk without
    holding it. Kornia draws from torch's global generator, seeded when the first chunk is
    asked for: the chunks are those of augmenting the whole set in AUGMENT_BATCH chunks."""
    augmentation = None
    if not params.online:
        torch.manual_seed(seed)
        augmentation = build_augmentation(params).to(device)
    for start in range(0, len(source), AUGMENT_BATCH):
        chunk = images[torch.from_numpy(source[start:start + AUGMENT_BATCH])]
        if augmentation is not None:
            chunk = augmentation(chunk.to(device, non_blocking=True)).clamp(0, 1).cpu()
        yield to_uint16(chunk.numpy())


def make_training_set(images: ClassifierImages | torch.Tensor, labels: np.ndarray,
                      params: AugmentParams, seed: int, device: torch.device
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced (optional), `copies`-fold augmented training set as uint16 cache rows in
    memory: (images (N, 1, S, S) uint16, labels, source). Cross-validation's folds use it;
    the augment stage writes training_set_chunks to disk instead."""
    source = training_sources(labels, params, seed)
    size = images.shape[-1]
    out = np.empty((len(source), 1, size, size), np.uint16)
    first = 0
    for chunk in training_set_chunks(images, source, params, seed, device):
        out[first:first + len(chunk)] = chunk
        first += len(chunk)
    return out, labels[source], source
