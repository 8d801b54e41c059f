"""Image tensors as the stages pass them on: (N, 1, H, W) float32 in [0, 1].

The one place that resizes, upscales and rounds images to the uint16 cache grid, so that a
stage that makes an image at load time (bicubic) and one that reads it back from disk
(SR) see the same values, and predict repeats exactly what the training stages did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.images import UINT16_SCALE
from pipeline.io import NpyRows, byte_view

# Rows per read when a whole stored set is hashed or copied to a device: a few MB at a time.
CHUNK_ROWS = 256


def from_cache(stack: np.ndarray) -> torch.Tensor:
    """A uint16 stack from the crop cache as float32 in [0, 1]."""
    return torch.from_numpy(stack.astype(np.float32)) / UINT16_SCALE


def cache_rows(stack: np.ndarray) -> torch.Tensor:
    """A uint16 stack as a tensor that shares its memory, in int16 (the same bits): torch's
    uint16 has few kernels, int16 every indexing and copy kernel on every device."""
    return torch.from_numpy(np.ascontiguousarray(stack, dtype=np.uint16)).view(torch.int16)


class CacheRowSource:
    """Cache rows (cache_rows: uint16 values in int16) that a stage gathers a training batch
    from without holding the set: len, shape, nbytes, device (the CPU), rows[indices], its
    rows chunk by chunk, and .to(a GPU) for a set cached on the device. A subclass gives
    `shape`, `__getitem__` and `chunks`."""

    device = torch.device("cpu")
    is_cuda = False
    dtype = torch.int16

    shape: tuple[int, ...]

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 2

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def chunks(self) -> Iterator[np.ndarray]:
        """The rows in order as uint16 arrays, CHUNK_ROWS at a time."""
        raise NotImplementedError

    def add_to_digest(self, digest) -> None:
        """The rows' bytes fed to a hashlib digest chunk by chunk: the digest of the array
        in memory, without holding it."""
        for chunk in self.chunks():
            digest.update(byte_view(chunk))

    def to(self, device: torch.device) -> torch.Tensor:
        """The whole set as one cache_rows tensor on `device`, made chunk by chunk."""
        out = torch.empty(self.shape, dtype=torch.int16, device=device)
        first = 0
        for chunk in self.chunks():
            out[first:first + len(chunk)] = cache_rows(chunk).to(device)
            first += len(chunk)
        return out


class CacheRowsOnDisk(CacheRowSource):
    """A uint16 (N, 1, S, S) .npy file as cache rows that stay on disk: indexing with a
    tensor of positions reads those rows (NpyRows), so a stage holds a batch, not the set."""

    def __init__(self, path: str | Path):
        self.rows = NpyRows(path)
        if self.rows.dtype != np.uint16 or len(self.rows.shape) != 4:
            raise ValueError(f"{path}: expected (N, 1, S, S) uint16 cache rows, found "
                             f"{self.rows.dtype} {self.rows.shape}")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.rows.shape

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return cache_rows(self.rows.read(torch.as_tensor(indices).cpu().numpy()))

    def chunks(self) -> Iterator[np.ndarray]:
        return self.rows.chunks(CHUNK_ROWS)


def rows_as_float(rows: torch.Tensor) -> torch.Tensor:
    """cache_rows (int16 bits of uint16 values) as float32 in [0, 1], on their device: the
    same values from_cache gives."""
    return (rows.to(torch.int32) & 0xFFFF).to(torch.float32) / UINT16_SCALE


def on_cache_grid(image: torch.Tensor) -> torch.Tensor:
    """`image` rounded to the uint16 cache's grid (images.quantise, in torch): what storing
    it at 16 bits and reading it back gives."""
    return torch.round(image.clamp(0, 1) * UINT16_SCALE) / UINT16_SCALE


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline SR is compared with (and the classifier's `bicubic` input)."""
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


def to_classifier_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 1, size, size) in [0, 1], bilinear with antialiasing when it
    shrinks; unchanged where it already has the size."""
    if image.shape[-1] != size or image.shape[-2] != size:
        image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
    return image.clamp(0, 1)


def sr_as_stored(sr_images: torch.Tensor, size: int) -> torch.Tensor:
    """SR output as sr_infer stores it and the classifier stages read it back: resized to
    `size` when smaller, on the uint16 cache grid."""
    return on_cache_grid(to_classifier_size(sr_images.clamp(0, 1), size))
