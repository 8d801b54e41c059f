"""Training batches gathered from one array, without a DataLoader.

The training set is already one array (the augment stage's output: uint16 cache rows read
from disk a batch at a time, or made from the split's images for online augmentation, by a
data.tensors.CacheRowSource, or a tensor in memory; made float32 a batch at a time), so a
DataLoader only adds per-image indexing, collation and a host round trip per batch. Here
the whole set sits on the GPU when it fits; otherwise each batch is gathered on the host,
copied into pinned memory and sent without blocking. A batch is one indexed gather (one
read of its rows from disk, or one making of them). The order is DataLoader's own, draw
for draw, so single-process runs before and after this module train on the same batches
(tests/test_batches.py checks it against DataLoader).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch.utils.data import DistributedSampler

from pipeline.data.tensors import CacheRowSource, rows_as_float
from pipeline.runtime.placement import gather_rows, place


def dataloader_order(generator: torch.Generator, size: int) -> torch.Tensor:
    """The indices `DataLoader(shuffle=True, generator=generator)` visits in one epoch.

    Per epoch DataLoader draws one int64 from the generator (its workers' base seed), then
    RandomSampler draws a permutation, and once the batches run out the exhausted sampler
    draws a second, empty-sliced permutation. Drawing the same three keeps the generator,
    and so every later epoch and a checkpoint's resume, in step with DataLoader.
    """
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = torch.randperm(size, generator=generator)
    torch.randperm(size, generator=generator)
    return order


@dataclasses.dataclass
class TrainingBatches:
    """The training images and labels, where they live, and how an epoch is cut."""

    images: torch.Tensor | CacheRowSource
    labels: torch.Tensor
    batch_size: int  # per process: batch_size / world_size under torchrun
    drop_last: bool
    shuffle: torch.Generator  # single process: the order's generator, checkpointed
    shard_sampler: DistributedSampler | None
    placement: str  # "device", "host, batches pinned" (CUDA) or "host" (CPU)

    def __len__(self) -> int:
        count = self.epoch_size() / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def epoch_size(self) -> int:
        return len(self.shard_sampler) if self.shard_sampler is not None else len(self.images)

    def epoch_indices(self, epoch: int) -> list[torch.Tensor]:
        """This epoch's batches as index tensors on the images' device."""
        if self.shard_sampler is not None:
            # DataLoader without a generator drew its workers' base seed from the global RNG
            # each epoch; drawing it too keeps later random numbers (dropout) as they were.
            torch.empty((), dtype=torch.int64).random_()
            self.shard_sampler.set_epoch(epoch)  # a different, reproducible shuffle per epoch
            order = torch.tensor(list(self.shard_sampler), dtype=torch.int64)
        else:
            order = dataloader_order(self.shuffle, len(self.images))
        order = order.to(self.images.device)
        return [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(len(self))]

    def gather(self, indices: torch.Tensor,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch on `device` (a gather on the device, or a non-blocking pinned copy),
        images as float32; uint16 cache rows are converted there, after the copy, so a
        batch crosses to the GPU at half the bytes and the set stays uint16 in memory."""
        images = gather_rows(self.images, indices, self.placement, device)
        if images.dtype == torch.int16:  # data.tensors.cache_rows
            images = rows_as_float(images)
        return images, gather_rows(self.labels, indices, self.placement, device)


def training_batches(images: torch.Tensor | CacheRowSource, labels: torch.Tensor,
                     batch_size: int,
                     seed: int, device: torch.device, world_size: int = 1,
                     rank: int = 0, cache: bool | str = "auto") -> TrainingBatches:
    """Shuffled batches of `batch_size`; under torchrun each rank gets its shard and
    batch_size / world_size images per step. A set no larger than one batch is one batch."""
    (placed, labels), placement = place([images, labels], device, cache)
    if world_size == 1:
        return TrainingBatches(placed, labels, batch_size, len(images) > batch_size,
                               torch.Generator().manual_seed(seed), None, placement)
    sampler = DistributedSampler(range(len(images)), world_size, rank, shuffle=True,
                                 seed=seed, drop_last=True)
    return TrainingBatches(placed, labels, batch_size // world_size, True,
                           torch.Generator().manual_seed(seed), sampler, placement)
