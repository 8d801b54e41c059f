"""Decoding crop files as labs store them, with nothing a file holds dropped unsaid.

TIFF (plain, OME-TIFF, ImageJ hyperstacks; every codec imagecodecs has: LZW, zstd, JPEG
2000, ...) is read by tifffile, the reader scikit-image, napari and the OME tools use; PNG
and other formats by Pillow. A file with more than one channel, z-plane or time point is
refused with one line naming its axes, sizes and channel names, until data.channel and
data.z_project say which plane to use. The file's own pixel size (OME PhysicalSizeX,
ImageJ or TIFF resolution) is read, never guessed.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.data.images import BadImageError

__all__ = ["AboveBitDepthError", "BadImageError", "PlaneChoice", "PlaneChoiceError",
           "decode_plane", "raw_peak", "read_crop", "read_header", "resolve_bit_depth",
           "stored_size"]

RGB_CHANNELS = ("gray", "r", "g", "b", "max")
PROJECTIONS = ("none", "max", "mean")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
# A crop is a few hundred pixels a side; a file that decodes to more is not a crop, and a
# crafted one could exhaust memory (Pillow's decompression-bomb guard, for TIFF too).
MAX_PIXELS = 2 ** 28
# Resolutions that image editors write by default (dots per inch of a screen or printer):
# they say nothing of the microscope, so they give no pixel size.
DISPLAY_DPI = {72.0, 96.0, 150.0, 300.0, 600.0}
# Micro is written as the micro sign, the Greek mu, or (ImageJ) an escaped micro sign.
MICRONS_PER = {"um": 1.0, "\u00b5m": 1.0, "\u03bcm": 1.0, "\\u00B5m": 1.0, "micron": 1.0,
               "microns": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}
# Axes a crop file may carry beside Y and X (tifffile's codes), and what one step is.
AXIS_NAMES = {"C": "channel", "Z": "z-plane", "T": "time point", "I": "page", "Q": "page",
              "S": "sample"}
# Bits of the integer type each Pillow mode stores a grey value in.
_PILLOW_CONTAINER_BITS = {"1": 1, "L": 8, "P": 8, "RGB": 8, "I;16": 16, "I;16B": 16,
                          "I;16L": 16, "I;16N": 16, "I": 32}


class PlaneChoiceError(BadImageError):
    """A readable file whose planes need data.channel / data.z_project to choose one: a
    question for the params, not a broken file, so ingest stops whatever data.on_bad_file."""


class AboveBitDepthError(BadImageError):
    """An integer crop brighter than the full scale of the bit depth it is read at; the
    caller says what sets that depth (data.bit_depth, or the bundle's training data)."""


BIT_DEPTHS = (8, 10, 12, 14, 16)


@dataclass(frozen=True)
class PlaneChoice:
    """Which plane of a file is the crop: data.channel and data.z_project."""
    channel: str | int = "gray"  # gray | r | g | b | max | a channel name | a 0-based index
    z_project: str | int = "none"  # none | max | mean | a 0-based plane index


@dataclass
class DecodedPlane:
    """The chosen plane of one file, and what the file was."""
    pixels: np.ndarray  # 2-D; the stored dtype, float64 after a mean projection
    container_bits: int | None  # bits of the stored integer type; None for float data
    bits_per_sample: int | None  # the TIFF BitsPerSample tag, where the file has one
    description: dict = field(default_factory=dict)  # FileHeader.describe() + the choice


@dataclass
class FileHeader:
    """What a file says about itself before any pixel is decoded."""
    format: str  # tiff | ome-tiff | imagej-tiff | png | another Pillow format, lower case
    axes: str  # tifffile's axis codes in storage order, e.g. YX, CYX, ZCYX, YXS
    shape: tuple[int, ...]
    dtype: str
    compression: str  # none | lzw | zstd | jpeg2000 | adobe_deflate | ...
    bits_per_sample: int | None
    channel_names: list[str]  # empty where the file names none
    pixel_size_um: float | None
    container_bits: int | None  # bits of the stored integer type; None for float data

    @property
    def height(self) -> int:
        return self.shape[self.axes.index("Y")]

    @property
    def width(self) -> int:
        return self.shape[self.axes.index("X")]

    def describe(self) -> dict:
        """The manifest's view of the file (strings and numbers only)."""
        return {"format": self.format, "axes": self.axes,
                "shape": "x".join(str(n) for n in self.shape), "dtype": self.dtype,
                "compression": self.compression, "bits_per_sample": self.bits_per_sample,
                "channel_names": ", ".join(self.channel_names),
                "pixel_size_um": self.pixel_size_um}


def is_tiff(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(4) in TIFF_MAGIC


def read_header(path: Path) -> FileHeader:
    """The file's header (axes, sizes, codec, channel names, pixel size); BadImageError
    when it cannot be parsed."""
    if path.stat().st_size == 0:
        raise BadImageError("empty file (0 bytes)")
    if is_tiff(path):
        header, _ = _read_tiff(path, with_pixels=False)
    else:
        header, _ = _read_pillow(path, with_pixels=False)
    return header


def decode_plane(path: Path, choice: PlaneChoice | None = None) -> DecodedPlane:
    """The one plane of `path` that `choice` names, as stored (no scaling).

    Raises PlaneChoiceError when the file holds several channels, planes or time points
    and `choice` does not say which, BadImageError when it cannot be decoded.
    """
    if path.stat().st_size == 0:
        raise BadImageError("empty file (0 bytes)")
    choice = choice or PlaneChoice()
    reader = _read_tiff if is_tiff(path) else _read_pillow
    header, pixels = reader(path, with_pixels=True)
    plane, chosen = choose_plane(pixels, header, choice)
    if plane.dtype == bool:
        plane = plane.astype(np.uint8)
    return DecodedPlane(plane, header.container_bits, header.bits_per_sample,
                        header.describe() | {"channel": chosen,
                                             "z_project": str(choice.z_project)})


def stored_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the file's header without decoding its pixels; None when the
    file cannot be opened (ingest's main pass then names the problem)."""
    try:
        header = read_header(path)
    except BadImageError:
        return None
    return header.height, header.width


def raw_peak(path: Path, choice: PlaneChoice | None = None
             ) -> tuple[int | None, float, int | None]:
    """(container bits, the largest stored value, BitsPerSample from the TIFF tags) of the
    chosen plane of one crop, for resolving data.bit_depth: auto over a whole data set."""
    decoded = decode_plane(path, choice)
    if decoded.container_bits is None:  # float data takes data.float_range, not a bit depth
        return None, 0, None
    # .item(): an int for integer files, so messages say 4095, not 4095.0
    return decoded.container_bits, np.max(decoded.pixels).item(), decoded.bits_per_sample


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
              channel: str | int = "gray", z_project: str | int = "none"
              ) -> tuple[np.ndarray, dict]:
    """Decode one crop's chosen plane to float32 HxW in [0, 1] plus a description of what
    was on disk (FileHeader.describe, the channel taken, the grey levels).

    Integer data is divided by the full scale of its bit depth: 8-bit files by 255, wider
    files by 2**bit_depth - 1 (data.bit_depth; 65535 when not given), so intensities stay
    comparable across crops (per-image rescaling would erase real brightness differences).
    Float data is mapped from the declared data.float_range, never per image. Files with
    several channels or planes give the one data.channel / data.z_project name.
    """
    decoded = decode_plane(path, PlaneChoice(channel, z_project))
    info = dict(decoded.description)
    info["height"], info["width"] = decoded.pixels.shape
    container = decoded.container_bits
    array = decoded.pixels.astype(np.float64)
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
            raise AboveBitDepthError(f"has values up to {array.max():g}, above the {bits}-bit "
                                     f"full scale {full_scale:g} (data.bit_depth: {bit_depth})")
        info["levels"] = int(full_scale)
    if float(array.max()) == float(array.min()):
        raise BadImageError(f"is constant (every pixel = {array.max():g}); no signal to learn")
    return (array / full_scale).astype(np.float32), info


# --- choosing the plane ----------------------------------------------------------------


def _shape_text(header: FileHeader) -> str:
    return f"axes {header.axes}, {'x'.join(str(n) for n in header.shape)}"


def choose_plane(pixels: np.ndarray, header: FileHeader, choice: PlaneChoice
                 ) -> tuple[np.ndarray, str]:
    """(the 2-D plane `choice` names, a label of the channel taken). Every axis of more
    than one step must be resolved by `choice` or the file is refused by name."""
    axes = header.axes
    for axis, size in zip(axes, pixels.shape):
        if axis not in "YX" and axis not in AXIS_NAMES and size > 1:
            raise PlaneChoiceError(f"has {size} steps along axis {axis} ({_shape_text(header)})"
                                   ", which a crop cannot have; export one 2-D image per crop")
    # Drop axes of one step: a one-channel OME file is CYX 1xHxW.
    keep = [i for i, (axis, size) in enumerate(zip(axes, pixels.shape))
            if size > 1 or axis in "YX"]
    pixels = pixels.reshape([pixels.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    if "T" in axes:
        raise PlaneChoiceError(f"has {pixels.shape[axes.index('T')]} time points "
                               f"({_shape_text(header)}): export one time point per crop")
    pixels, axes, chosen = _take_channel(pixels, axes, header, choice.channel)
    pixels, axes = _project_planes(pixels, axes, header, choice.z_project)
    if "S" in axes:  # samples per pixel: RGB(A) exports
        pixels = np.moveaxis(pixels, axes.index("S"), -1)
        plane, chosen = _rgb_channel(pixels, choice.channel)
        return plane, chosen
    if axes != "YX":  # YX in another order (rare): bring it to rows x columns
        pixels = np.transpose(pixels, [axes.index("Y"), axes.index("X")])
    return pixels, chosen


def _take_channel(pixels: np.ndarray, axes: str, header: FileHeader, channel: str | int
                  ) -> tuple[np.ndarray, str, str]:
    names = header.channel_names
    if "C" not in axes:
        # One channel: a name must be that channel's, an index must be 0.
        if isinstance(channel, int) and channel != 0:
            raise PlaneChoiceError(f"has one channel; data.channel index {channel} is out of "
                                   "range (0-based)")
        if isinstance(channel, str) and channel not in RGB_CHANNELS:
            if channel not in names:
                what = f"its one channel is named {names[0]!r}" if names else \
                    "it has one unnamed channel"
                raise PlaneChoiceError(f"has no channel named {channel!r} ({what})")
        label = names[0] if len(names) == 1 else (str(channel) if channel not in
                                                  ("gray", 0) else "gray")
        return pixels, axes, label
    count = pixels.shape[axes.index("C")]
    listed = ", ".join(names) if names else "unnamed"
    if isinstance(channel, str) and channel in RGB_CHANNELS:
        example = names[-1] if names else str(count - 1)
        raise PlaneChoiceError(f"has {count} channels ({listed}; {_shape_text(header)}): "
                               f"choose one with -S data.channel={example} (or an index, "
                               "0-based)")
    if isinstance(channel, int):
        if not 0 <= channel < count:
            raise PlaneChoiceError(f"has {count} channels ({listed}): data.channel index "
                                   f"{channel} is out of range (0-based)")
        index = channel
    else:
        if channel not in names:
            raise PlaneChoiceError(f"has no channel named {channel!r} (it has {count}: "
                                   f"{listed})")
        if names.count(channel) > 1:
            raise PlaneChoiceError(f"names {names.count(channel)} channels {channel!r}; "
                                   "choose by index (0-based)")
        index = names.index(channel)
    label = names[index] if names else f"index {index}"
    return np.take(pixels, index, axis=axes.index("C")), axes.replace("C", ""), label


def _project_planes(pixels: np.ndarray, axes: str, header: FileHeader, z_project: str | int
                    ) -> tuple[np.ndarray, str]:
    stacked = [axis for axis in axes if axis in "ZIQ"]
    if not stacked:
        if isinstance(z_project, int) and z_project != 0:
            raise PlaneChoiceError(f"has one plane; data.z_project index {z_project} is out "
                                   "of range (0-based)")
        return pixels, axes
    if len(stacked) > 1:
        raise PlaneChoiceError(f"has planes along {len(stacked)} axes ({_shape_text(header)})"
                               "; export a single z-stack per crop")
    axis = stacked[0]
    position, count = axes.index(axis), pixels.shape[axes.index(axis)]
    kind = "z-planes" if axis == "Z" else "pages of unnamed kind"
    if z_project == "none":
        raise PlaneChoiceError(f"has {count} {kind} ({_shape_text(header)}): choose "
                               "-S data.z_project=max (or mean, or a plane index, 0-based)")
    if isinstance(z_project, int):
        if not 0 <= z_project < count:
            raise PlaneChoiceError(f"has {count} {kind}: data.z_project index {z_project} is "
                                   "out of range (0-based)")
        plane = np.take(pixels, z_project, axis=position)
    elif z_project == "max":
        plane = pixels.max(axis=position)
    else:  # mean, in float64 so no integer overflow or rounding before normalisation
        plane = pixels.mean(axis=position, dtype=np.float64)
    return plane, axes.replace(axis, "")


def _rgb_channel(array: np.ndarray, channel: str | int) -> tuple[np.ndarray, str]:
    """One channel of an H x W x samples array (RGB exports), at the file's own bit depth."""
    samples = array.shape[2]
    if samples in (2, 4):
        raise BadImageError(f"has an alpha channel ({samples} samples per pixel); export the "
                            "crop as grey without alpha")
    if samples != 3:
        raise BadImageError(f"has {samples} samples per pixel (expected one grey channel or "
                            "RGB)")
    if isinstance(channel, int):
        if not 0 <= channel < 3:
            raise PlaneChoiceError(f"is RGB; data.channel index {channel} is out of range "
                                   "(0-2)")
        return array[..., channel], "rgb"[channel]
    if channel == "max":
        return array.max(axis=2), "max"
    if channel in ("r", "g", "b"):
        return array[..., "rgb".index(channel)], channel
    if channel != "gray":
        raise PlaneChoiceError(f"is RGB without channel names; data.channel {channel!r} "
                               "names none: use r | g | b | max or an index")
    if not (np.array_equal(array[..., 0], array[..., 1])
            and np.array_equal(array[..., 0], array[..., 2])):
        peaks = ", ".join(f"{c} max {array[..., i].max():g}" for i, c in enumerate("RGB"))
        # A stray colour export among grey crops: a bad file (data.on_bad_file may skip it)
        raise BadImageError(f"is an RGB crop whose channels differ ({peaks}); pick the "
                               "fluorescence channel with data.channel: r | g | b | max (a "
                               "Fiji export with a green LUT: g)")
    return array[..., 0], "gray"  # RGB-encoded grey: all three channels hold the same values


# --- TIFF by tifffile --------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # tifffile starts its messages with the file's repr: the caller names the file
        self.messages.append(re.sub(r"^<[^>]*>\s*", "", record.getMessage()))


@contextlib.contextmanager
def _tifffile_problems_as_errors():
    """tifffile logs what it repairs or leaves out of a damaged file (a broken page chain, a
    series it cannot assemble) and reads on; a crop it had to repair is refused instead."""
    logger = logging.getLogger("tifffile")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _read_tiff(path: Path, with_pixels: bool) -> tuple[FileHeader, np.ndarray | None]:
    import tifffile

    try:
        with _tifffile_problems_as_errors() as problems, tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise BadImageError("cannot decode image (a TIFF header and no image: "
                                    "truncated or damaged)")
            if len(tif.series) != 1:
                raise BadImageError(f"holds {len(tif.series)} images (TIFF series); export one "
                                    "crop per file")
            series = tif.series[0]
            page = series.keyframe
            header = FileHeader(
                format="ome-tiff" if tif.is_ome else "imagej-tiff" if tif.is_imagej else "tiff",
                axes=series.axes, shape=tuple(int(n) for n in series.shape),
                dtype=str(series.dtype), compression=page.compression.name.lower(),
                bits_per_sample=int(page.bitspersample),
                channel_names=_tiff_channel_names(tif, series),
                pixel_size_um=_tiff_pixel_size_um(tif, page),
                container_bits=_container_bits(series.dtype))
            if "Y" not in header.axes or "X" not in header.axes:
                raise BadImageError(f"has no image plane (axes {header.axes})")
            if int(np.prod(header.shape)) > MAX_PIXELS:
                raise BadImageError(f"decodes to {np.prod(header.shape):,} values, more than a "
                                    f"crop holds (limit {MAX_PIXELS:,})")
            pixels = series.asarray() if with_pixels else None
            if problems.messages:
                raise BadImageError(f"cannot decode image (a damaged TIFF; tifffile: "
                                    f"{problems.messages[0]})")
    except BadImageError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad file, named
        raise BadImageError(f"cannot decode image (TIFF, {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    return header, pixels


def _container_bits(dtype) -> int | None:
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return None
    return 1 if dtype.kind == "b" else 8 * dtype.itemsize


def _as_list(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _tiff_channel_names(tif, series) -> list[str]:
    """Channel names from OME (Channel Name) or ImageJ (slice Labels of the first z/t)."""
    import tifffile

    count = series.shape[series.axes.index("C")] if "C" in series.axes else 1
    names: list[str] = []
    if tif.is_ome and tif.ome_metadata:
        images = _as_list(tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image"))
        if images:
            channels = _as_list(images[0].get("Pixels", {}).get("Channel"))
            names = [str(c.get("Name", "")) for c in channels if isinstance(c, dict)]
    elif tif.is_imagej and tif.imagej_metadata:
        labels = tif.imagej_metadata.get("Labels") or []
        names = [str(label) for label in labels[:count]]  # ImageJ stacks are C-fastest
    names = [name.strip() for name in names]
    return names if len(names) == count and all(names) else []


def _tiff_pixel_size_um(tif, page) -> float | None:
    """µm per pixel along x: OME PhysicalSizeX, else ImageJ's unit or the TIFF resolution
    in centimetres or inches (an editor's default dpi says nothing and gives None)."""
    import tifffile

    if tif.is_ome and tif.ome_metadata:
        images = _as_list(tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image"))
        pixels = images[0].get("Pixels", {}) if images else {}
        size = pixels.get("PhysicalSizeX")
        unit = str(pixels.get("PhysicalSizeXUnit", "µm"))
        if size and unit in MICRONS_PER:
            return _rounded(float(size) * MICRONS_PER[unit])
        return None
    tag = page.tags.get("XResolution")
    if tag is None:
        return None
    numerator, denominator = tag.value
    per_unit = numerator / denominator if denominator else 0.0
    if per_unit <= 0:
        return None
    if tif.is_imagej:
        unit = str((tif.imagej_metadata or {}).get("unit", "")).strip()
        return _rounded(MICRONS_PER[unit] / per_unit) if unit in MICRONS_PER else None
    unit_tag = page.tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF's default: inch
    if unit == 3:
        return _rounded(1e4 / per_unit)
    if unit == 2 and per_unit not in DISPLAY_DPI:
        return _rounded(25400.0 / per_unit)
    return None


def _rounded(value: float) -> float:
    """Six significant digits: 1 / (1 / 0.1) is 0.1, not 0.09999999999999999."""
    return float(f"{value:.6g}")


# --- PNG and the rest by Pillow ----------------------------------------------------------


def _png_is_16_bit_colour(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(26)
    return (head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16 and head[25] in (2, 6))


def _read_pillow(path: Path, with_pixels: bool) -> tuple[FileHeader, np.ndarray | None]:
    if _png_is_16_bit_colour(path):
        raise BadImageError("is a 48-bit colour PNG, which Pillow reads at 8 bits per channel; "
                            "export it as a 16-bit TIFF (RGB or one grey channel)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                mode, (width, height) = image.mode, image.size
                dpi = image.info.get("dpi")
                fmt = (image.format or "image").lower()
                array = None
                if with_pixels:
                    image.load()
                    if mode == "P":
                        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                    array = np.array(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImageError(f"cannot decode image ({type(exc).__name__}: {exc})") from None
    samples = {"RGB": 3, "P": 3, "RGBA": 4, "LA": 2, "PA": 4}.get(mode, 1)
    if mode == "P" and array is not None:
        samples = array.shape[2]
    axes, shape = ("YXS", (height, width, samples)) if samples > 1 else ("YX", (height, width))
    pixel_size = None
    if dpi and float(dpi[0]) > 0 and round(float(dpi[0])) not in DISPLAY_DPI:
        pixel_size = _rounded(25400.0 / float(dpi[0]))
    container = None if mode == "F" else _PILLOW_CONTAINER_BITS.get(mode, 8)
    if mode == "I" and fmt == "png":  # Pillow widens 16-bit grey PNGs to 32-bit ints
        container = 16
    dtype = str(array.dtype) if array is not None else {
        None: "float32", 1: "bool", 16: "uint16", 32: "int32"}.get(container, "uint8")
    header = FileHeader(format=fmt, axes=axes, shape=shape, dtype=dtype,
                        compression="deflate" if fmt == "png" else "unknown",
                        bits_per_sample=None, channel_names=[], pixel_size_um=pixel_size,
                        container_bits=container)
    return header, array
