"""Reading raw microscopy crops safely into single-channel float arrays in [0, 1]."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class BadImageError(ValueError):
    """A crop that cannot be used; the message says why, the caller adds the path."""


# Pillow modes that are one grey channel, and the value that maps to 1.0.
_GREY_MODES = {"1": 1.0, "L": 255.0, "P": None, "I;16": 65535.0, "I;16B": 65535.0,
               "I;16L": 65535.0, "I;16N": 65535.0, "I": None, "F": None}


def read_crop(path: Path) -> tuple[np.ndarray, dict]:
    """Decode one crop to float32 HxW in [0, 1] plus a description of what was on disk.

    8-bit data is divided by 255 and 16-bit by 65535, so intensities stay comparable
    across crops (per-image rescaling would erase real brightness differences).
    """
    if path.stat().st_size == 0:
        raise BadImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                mode = image.mode
                if mode == "P":
                    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                    mode = image.mode
                array = np.array(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from None

    info = {"mode": mode, "dtype": str(array.dtype), "height": array.shape[0],
            "width": array.shape[1] if array.ndim > 1 else 1,
            "channels": 1 if array.ndim == 2 else array.shape[2]}
    if mode in ("RGBA", "LA", "PA"):
        raise BadImageError(f"has an alpha channel (mode {mode}); export the crop as grey "
                            "without alpha")
    if array.ndim == 3:
        if array.shape[2] != 3:
            raise BadImageError(f"unexpected channel count {array.shape[2]} (expected 1, or 3 "
                                "identical grey channels)")
        if not (np.array_equal(array[..., 0], array[..., 1])
                and np.array_equal(array[..., 0], array[..., 2])):
            raise BadImageError("is a 3-channel colour crop (R, G, B differ); the pipeline "
                                "expects one fluorescence channel per crop")
        array = array[..., 0]  # RGB-encoded grey: all three channels hold the same values
    elif array.ndim != 2:
        raise BadImageError(f"unexpected array shape {array.shape}")

    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise BadImageError("contains NaN or infinite pixels")
    full_scale = _GREY_MODES.get(mode) or (255.0 if mode == "RGB" else None)
    if full_scale is None:  # 32-bit int or float images: no fixed range on disk
        peak = float(array.max())
        full_scale = 1.0 if array.min() >= 0 and peak <= 1.0 else max(peak, 1.0)
        if array.min() < 0:
            raise BadImageError(f"has negative pixel values (min {array.min():g})")
    if float(array.max()) == float(array.min()):
        raise BadImageError(f"is constant (every pixel = {array.max():g}); no signal to learn")
    return (array / full_scale).astype(np.float32), info


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


def to_uint16(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 65535.0).astype(np.uint16)


def from_uint16(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 65535.0


# Full-scale value of each on-disk integer type: what one grey level is worth after ingest.
LEVELS = {"uint8": 255, "uint16": 65535, "int32": None, "float32": None}


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
