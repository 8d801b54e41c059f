"""Augment the training split with Kornia (on the GPU when there is one), class-balanced.

The study balanced classes by oversampling the minority class with augmented copies;
here that is done on the training split only. Validation and test crops are never
augmented. With augment.online nothing is stored: the augment stage writes which crop each
training image is made from, and the training loop makes those images from the split's own
and augments every batch on the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch

from pipeline.classify.images import (
    ClassifierImages,
    TrainingRowsFromSplit,
    balanced_indices,
    training_rows_from_index,
)
from pipeline.cli import PipelineError
from pipeline.config import AugmentParams, Params
from pipeline.data.images import to_uint16
from pipeline.data.tensors import CacheRowsOnDisk
from pipeline.io import read_crop_table

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
    memory: (images (N, 1, S, S) uint16, labels, source). Cross-validation's folds use it
    offline (online they make their rows per batch, crossval.fold_training_set); the augment
    stage writes training_set_chunks to disk instead."""
    source = training_sources(labels, params, seed)
    size = images.shape[-1]
    out = np.empty((len(source), 1, size, size), np.uint16)
    first = 0
    for chunk in training_set_chunks(images, source, params, seed, device):
        out[first:first + len(chunk)] = chunk
        first += len(chunk)
    return out, labels[source], source


def open_training_set(params: Params, augmented: Path, crops_dir: Path, sr_dir: Path | None,
                      device: torch.device | None = None
                      ) -> tuple[CacheRowsOnDisk | TrainingRowsFromSplit, np.ndarray]:
    """What the augment stage made, as the training loop reads it a batch at a time:
    (rows, labels). Offline, the stored set (train_images.npy); online, the images its
    index names, made from the split's own (augment stored none)."""
    index_file, stored = augmented / "train_index.csv", augmented / "train_images.npy"
    if not index_file.is_file():
        raise PipelineError(f"{index_file}: missing; rerun augment")
    index = read_crop_table(index_file)
    labels = index["label"].to_numpy(copy=True)  # a writable copy: it becomes a tensor
    if params.augment.online:
        if stored.exists():
            raise PipelineError(f"{stored}: augment ran with augment.online false, this run "
                                "augments online; rerun augment")
        # Made on the host, a batch ahead of the device: making them on a GPU would wait
        # for it twice per step (the rows back to the host, then into pinned memory).
        return training_rows_from_index(params, crops_dir, sr_dir, index["crop_id"].tolist(),
                                        torch.device("cpu")), labels
    try:
        rows = CacheRowsOnDisk(stored)
    except FileNotFoundError:
        raise PipelineError(f"{stored}: missing; rerun augment (with augment.online true "
                            "it stores none)") from None
    except ValueError as exc:  # it names the file and what is wrong with it
        raise PipelineError(str(exc)) from None
    if len(rows) != len(labels):
        raise PipelineError(f"{stored}: {len(rows)} images but {index_file} lists "
                            f"{len(labels)}; rerun augment")
    return rows, labels
