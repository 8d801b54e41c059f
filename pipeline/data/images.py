"""Reading raw microscopy crops safely into single-channel float arrays in [0, 1], and the
uint16 cache they are stored in."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class BadImageError(ValueError):
    """A crop that cannot be used; the message says why, the caller adds the path."""


class AboveBitDepthError(BadImageError):
    """An integer crop brighter than the full scale of the bit depth it is read at; the
    caller says what sets that depth (data.bit_depth, or the bundle's training data)."""


# Bits of the integer type each Pillow mode stores a grey value in.
_CONTAINER_BITS = {"1": 1, "L": 8, "P": 8, "RGB": 8, "I;16": 16, "I;16B": 16, "I;16L": 16,
                   "I;16N": 16, "I": 32}
BIT_DEPTHS = (8, 10, 12, 14, 16)
CHANNELS = ("gray", "r", "g", "b", "max")


def _decode(path: Path) -> tuple[np.ndarray, str, dict]:
    """Pixels as stored, the Pillow mode, and the TIFF tags that describe them."""
    if path.stat().st_size == 0:
        raise BadImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                mode = image.mode
                tags = {}
                if hasattr(image, "tag_v2"):
                    tags = {"bits_per_sample": image.tag_v2.get(258)}
                if mode == "P":
                    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                    mode = image.mode
                array = np.array(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from None
    return array, mode, tags


def _one_channel(array: np.ndarray, mode: str, channel: str) -> np.ndarray:
    if mode in ("RGBA", "LA", "PA"):
        raise BadImageError(f"has an alpha channel (mode {mode}); export the crop as grey "
                            "without alpha")
    if array.ndim == 2:
        return array
    if array.ndim != 3 or array.shape[2] != 3:
        raise BadImageError(f"unexpected array shape {array.shape} (expected one grey channel "
                            "or RGB)")
    if channel == "max":
        return array.max(axis=2)
    if channel in ("r", "g", "b"):
        return array[..., "rgb".index(channel)]
    if not (np.array_equal(array[..., 0], array[..., 1])
            and np.array_equal(array[..., 0], array[..., 2])):
        peaks = ", ".join(f"{c} max {int(array[..., i].max())}" for i, c in enumerate("RGB"))
        raise BadImageError(f"is an RGB crop whose channels differ ({peaks}); pick the "
                            "fluorescence channel with data.channel: r | g | b | max (a Fiji "
                            "export with a green LUT: g)")
    return array[..., 0]  # RGB-encoded grey: all three channels hold the same values


def stored_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file's header without decoding its pixels; None when the
    file cannot be opened (ingest's main pass then names the problem)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    return height, width


def container_bits(mode: str, dtype: str) -> int | None:
    """Bits of the integer type the file stores grey values in; None for float data."""
    if dtype.startswith("float"):
        return None
    return _CONTAINER_BITS.get(mode, 8 * np.dtype(dtype).itemsize)


def raw_peak(path: Path, channel: str = "gray") -> tuple[int | None, int, int | None]:
    """(container bits, the largest stored value, BitsPerSample from the TIFF tags) of one
    crop, for resolving data.bit_depth: auto over a whole data set."""
    array, mode, tags = _decode(path)
    array = _one_channel(array, mode, channel)
    container = container_bits(mode, str(array.dtype))
    if container is None:  # float data takes data.float_range, not a bit depth
        return None, 0, None
    bits = tags.get("bits_per_sample")
    bits = bits[0] if isinstance(bits, tuple) and bits else bits
    bits = int(bits) if isinstance(bits, int) else None
    if mode == "I" and bits:  # Pillow widens signed 16-bit files to 32: the file says 16
        container = bits
    return container, int(np.max(array)), bits


def resolve_bit_depth(peaks: list[tuple[int | None, int, int | None]]) -> tuple[int, str]:
    """data.bit_depth: auto for crops stored in more than 8 bits: (bits, where from).

    A TIFF whose BitsPerSample says fewer bits than its container (12 in a 16-bit file)
    gives that; a camera's 12-bit data usually sits in 16-bit files tagged 16, so the
    fallback is the fewest of 10 / 12 / 14 / 16 bits that holds the largest value of the
    whole data set (one factor for every crop: brightness differences between crops stay).
    """
    wide = [(c, peak, tag) for c, peak, tag in peaks if c and c > 8]
    if not wide:
        return 8, "8-bit files"
    tagged = {tag for c, _, tag in wide if tag and 8 < tag < c}
    if len(tagged) == 1:
        return tagged.pop(), "TIFF BitsPerSample tag"
    peak = max(p for _, p, _ in wide)
    for bits in BIT_DEPTHS[1:]:
        if peak <= 2 ** bits - 1:
            return bits, f"largest value in the data ({peak})"
    raise BadImageError(f"values up to {peak} do not fit 16 bits, the widest depth "
                        "data.bit_depth takes; export the crops as 16-bit (or float) files")


def read_crop(path: Path, bit_depth: int | None = None,
              float_range: tuple[float, float] | list[float] = (0.0, 1.0),
              channel: str = "gray") -> tuple[np.ndarray, dict]:
    """Decode one crop to float32 HxW in [0, 1] plus a description of what was on disk.

    Integer data is divided by the full scale of its bit depth: 8-bit files by 255, wider
    files by 2**bit_depth - 1 (data.bit_depth; 65535 when not given), so intensities stay
    comparable across crops (per-image rescaling would erase real brightness differences).
    Float data is mapped from the declared data.float_range, never per image. RGB exports
    give one channel by data.channel.
    """
    array, mode, _ = _decode(path)
    info = {"mode": mode, "dtype": str(array.dtype), "height": array.shape[0],
            "width": array.shape[1] if array.ndim > 1 else 1,
            "channels": 1 if array.ndim == 2 else array.shape[2]}
    array = _one_channel(array, mode, channel)
    container = container_bits(mode, str(array.dtype))
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise BadImageError("contains NaN or infinite pixels")
    if container is None:  # float data: the range it was saved in is declared, not guessed
        low, high = float(float_range[0]), float(float_range[1])
        span = high - low
        if array.min() < low - 1e-6 * span or array.max() > high + 1e-6 * span:
            raise BadImageError(f"float crop with values in [{array.min():g}, {array.max():g}]"
                                f", outside data.float_range [{low:g}, {high:g}]; set "
                                "data.float_range to the range the data was saved in")
        full_scale, array = 1.0, np.clip((array - low) / span, 0.0, 1.0)
        info["levels"] = None
    else:
        if array.min() < 0:
            raise BadImageError(f"has negative pixel values (min {array.min():g})")
        bits = container if container <= 8 or bit_depth is None else bit_depth
        if container > 16 and bit_depth is None:
            raise BadImageError(f"is {container}-bit integer data; set data.bit_depth (or "
                                "auto) to the bits the camera recorded")
        full_scale = float(2 ** bits - 1)
        if array.max() > full_scale:
            raise AboveBitDepthError(f"has values up to {array.max():g}, above the {bits}-bit full "
                                f"scale {full_scale:g} (data.bit_depth: {bit_depth})")
        info["levels"] = int(full_scale)
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
    """The crops' uint16 cache files as one (N, 1, h, w) array."""
    from pipeline.cli import PipelineError
    from pipeline.io import load_array

    arrays = []
    for crop_id in crop_ids:
        path = folder / f"{crop_id}.npy"
        if not path.is_file():
            raise PipelineError(f"{path}: missing image for crop {crop_id}; rerun the stage "
                                "that writes it")
        arrays.append(load_array(path))
    return np.stack(arrays)


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
