"""Super-resolving images with a trained generator: tiled (bounded model memory for any image
size), batched, and the generator files train_sr writes."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.sr import build_generator
from pipeline.cli import PipelineError, first_line, progress
from pipeline.data.images import read_stack, to_uint16
from pipeline.data.tensors import sr_as_stored
from pipeline.io import save_array_atomic
from pipeline.runtime.device import autocast_for


def generator_from_state(state: dict, config: dict) -> torch.nn.Module:
    model = build_generator(config["scale"], config["num_feat"], config["num_block"],
                            config["num_grow_ch"], config["residual"])
    model.load_state_dict(state)
    return model.eval()


def load_generator(path: Path, expected_scale: int) -> tuple[torch.nn.Module, str]:
    """The generator in `path` and its name (psnr | gan), refusing a scale mismatch."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = generator_from_state(saved["model"], saved["config"])
    except Exception as exc:
        raise PipelineError(f"{path}: not a generator file from train_sr "
                            f"({type(exc).__name__}: {first_line(exc, 160)})") from None
    if saved["config"]["scale"] != expected_scale:
        raise PipelineError(f"{path}: generator is x{saved['config']['scale']} but sr.scale is "
                            f"{expected_scale}; rerun train_sr")
    return model, str(saved.get("name", "unknown"))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: stride tile - 2*overlap, last tile flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - 2 * overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _ramp_window(size: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """Blend weights along one tile axis.

    On an interior side the outer half of the overlap gets weight 0 (those predictions
    saw too little context) and the inner half ramps linearly up to the core's 1.
    """
    window = torch.ones(size)
    half = overlap // 2
    if half > 0:
        ramp = torch.cat([torch.zeros(overlap - half),
                          (torch.arange(half, dtype=torch.float32) + 1) / (half + 1)])
        if ramp_start:
            window[:overlap] = ramp
        if ramp_end:
            window[size - overlap:] = ramp.flip(0)
    return window


@torch.no_grad()
def upscale_tiled(model: nn.Module, image: torch.Tensor, scale: int, tile: int, overlap: int,
                  batch: int = 8, precision: str = "fp32") -> torch.Tensor:
    """Super-resolve (N, C, H, W) in overlapping tiles, blended, with bounded model memory.

    Each tile carries `overlap` LR pixels of context on interior sides; predictions are
    weighted by a window that is 1 over the tile's core and ramps down over the context,
    so seams fade and the result equals the untiled one wherever the network's reach is
    shorter than the overlap. The output is assembled on the input's device.
    """
    device = next(model.parameters()).device
    n, channels, height, width = image.shape
    # RRDBNet folds x2 input with pixel_unshuffle(2): pad odd sizes, crop afterwards.
    multiple = 2 if scale == 2 else 1
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
    padded_h, padded_w = image.shape[-2:]
    tile_h, tile_w = min(tile, padded_h), min(tile, padded_w)
    tile_h -= tile_h % multiple
    tile_w -= tile_w % multiple
    ys, xs = tile_starts(padded_h, tile_h, overlap), tile_starts(padded_w, tile_w, overlap)
    ys = [y - y % multiple for y in ys]
    xs = [x - x % multiple for x in xs]

    out = torch.zeros(n, channels, padded_h * scale, padded_w * scale, device=image.device)
    weight = torch.zeros(1, 1, padded_h * scale, padded_w * scale, device=image.device)
    windows = {}  # one blend window per tile position, shared by every image
    for y in ys:
        for x in xs:
            wy = _ramp_window(tile_h * scale, overlap * scale, y > 0, y + tile_h < padded_h)
            wx = _ramp_window(tile_w * scale, overlap * scale, x > 0, x + tile_w < padded_w)
            windows[y, x] = (wy[:, None] * wx[None, :]).to(image.device)
            weight[0, 0, y * scale:(y + tile_h) * scale, x * scale:(x + tile_w) * scale] += \
                windows[y, x]
    # Follow the model's memory format (channels_last models want NHWC inputs).
    channels_last = next(model.parameters()).is_contiguous(memory_format=torch.channels_last) \
        and tile_w > 1
    jobs = [(i, y, x) for i in range(n) for y in ys for x in xs]
    for first in range(0, len(jobs), batch):
        chunk = jobs[first:first + batch]
        tiles = torch.stack([image[i, :, y:y + tile_h, x:x + tile_w] for i, y, x in chunk])
        with autocast_for(device, precision):
            tiles = tiles.to(device, non_blocking=True)
            pred = model(tiles.contiguous(memory_format=torch.channels_last)
                         if channels_last else tiles)
        pred = pred.float().to(image.device)
        for (i, y, x), tile_pred in zip(chunk, pred):
            out[i, :, y * scale:(y + tile_h) * scale, x * scale:(x + tile_w) * scale] += \
                tile_pred * windows[y, x]
    out /= weight
    return out[..., :height * scale, :width * scale]


def super_resolve_crops(model: torch.nn.Module, crop_ids: list[str], crops_dir: Path,
                        out_dir: Path, scale: int, tile: int, overlap: int, batch: int,
                        device: torch.device, precision: str, channels_last: bool = False,
                        store_size: int | None = None) -> dict:
    """Write out_dir/sr/<id>.npy (uint16, `store_size` px or crop x scale); return
    throughput and the bytes written."""
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    pixels, written, started = 0, 0, time.perf_counter()
    with progress() as bar:
        task = bar.add_task("sr_infer", total=len(crop_ids), status="")
        for first in range(0, len(crop_ids), batch):
            ids = crop_ids[first:first + batch]
            images = torch.from_numpy(read_stack(crops_dir, ids).astype("float32") / 65535.0)
            sr = upscale_tiled(model, images, scale, tile, overlap, batch, precision)
            sr = sr_as_stored(sr, store_size or sr.shape[-1])
            for index, crop_id in enumerate(ids):
                path = out_dir / "sr" / f"{crop_id}.npy"
                save_array_atomic(path, to_uint16(sr[index].numpy()))
                written += path.stat().st_size
            pixels += images.shape[0] * images.shape[-1] * images.shape[-2]
            bar.update(task, advance=len(ids), status="")
    seconds = time.perf_counter() - started
    return {"crops": len(crop_ids), "seconds": round(seconds, 2),
            "lr_megapixels_per_s": round(pixels / 1e6 / max(seconds, 1e-9), 4),
            "stored_size": int(sr.shape[-1]) if crop_ids else store_size,
            "bytes_written": written}
