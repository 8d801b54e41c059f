"""The uint16 crop cache every stage reads and writes, fitting a crop to the project's
size, and acquisition at a coarser pixel. Reading the files themselves is
data/image_files.py's, which only ingest and predict import: a change to the reader
reruns the stages that read files, and nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


class BadImageError(ValueError):
    """A crop that cannot be used; the message says why, the caller adds the path."""


def fit_to_size(image: np.ndarray, size: int, how: str) -> tuple[np.ndarray, str]:
    """Bring a crop to size x size by resize, centre pad/crop, or refuse; return what was done."""
    height, width = image.shape
    if height == size and width == size:
        return image, "none"
    if how == "error":
        raise BadImageError(f"is {height}x{width}, expected {size}x{size} "
                            "(set data.on_size_mismatch: resize or pad to accept it)")
    if how == "resize":
        resized = Image.fromarray(image, mode="F").resize((size, size), Image.Resampling.BILINEAR)
        return np.clip(np.asarray(resized, dtype=np.float32), 0, 1), "resized"
    # pad: centre the crop on a zero background, centre-cropping any side that is too long
    out = np.zeros((size, size), np.float32)
    src_y, src_x = max(0, (height - size) // 2), max(0, (width - size) // 2)
    dst_y, dst_x = max(0, (size - height) // 2), max(0, (size - width) // 2)
    h, w = min(height, size), min(width, size)
    out[dst_y:dst_y + h, dst_x:dst_x + w] = image[src_y:src_y + h, src_x:src_x + w]
    return out, "padded"


# The crop cache stores [0, 1] images as uint16: 65535 steps, finer than any camera's.
UINT16_SCALE = 65535.0


def to_uint16(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * UINT16_SCALE).astype(np.uint16)


def from_uint16(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / UINT16_SCALE


def quantise(image: np.ndarray) -> np.ndarray:
    """`image` on the uint16 cache's grid, as a stage that writes it and a stage that reads it
    back would see it (predict applies this wherever the training stages store images)."""
    return from_uint16(to_uint16(image))


def read_stack(folder: Path, crop_ids: list[str]) -> np.ndarray:
    """The crops' uint16 cache files as one (N, 1, h, w) array, filled in place: one copy
    of the split in memory, never a list of arrays beside their stack."""
    from pipeline.cli import PipelineError
    from pipeline.io import load_array

    stack = None
    for index, crop_id in enumerate(crop_ids):
        path = folder / f"{crop_id}.npy"
        if not path.is_file():
            raise PipelineError(f"{path}: missing image for crop {crop_id}; rerun the stage "
                                "that writes it")
        array = load_array(path)
        if stack is None:
            stack = np.empty((len(crop_ids), *array.shape), array.dtype)
        stack[index] = array
    return stack if stack is not None else np.zeros((0, 1, 0, 0), np.uint16)


def acquire_low_resolution(image: np.ndarray, factor: int, levels: int | None) -> np.ndarray:
    """The crop as a camera with `factor`-times larger pixels would have recorded it.

    Each low-resolution pixel is the mean of a factor x factor block (area sampling, what
    binning or a coarser sensor does), rounded to the source's own grey levels so the
    acquired crop has the same bit depth as the original.
    """
    height, width = image.shape
    if height % factor or width % factor:
        raise ValueError(f"{height}x{width} does not divide by {factor}")
    blocks = image.reshape(height // factor, factor, width // factor, factor)
    low = blocks.mean(axis=(1, 3), dtype=np.float64)
    if levels:
        low = np.round(low * levels) / levels
    return low.astype(np.float32)
