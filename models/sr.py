"""ESRGAN parts: RRDBNet generator, VGG-style discriminator, VGG19 perceptual loss, tiling."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.basicsr_compat import RRDBNet, VGGStyleDiscriminator
from models.classifier import WeightsError, load_state_dict_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG19_CONV5_4 = 34  # index of conv5_4 in torchvision's vgg19().features (ESRGAN: before ReLU)


class Generator(nn.Module):
    """basicsr's RRDBNet, optionally predicting the residual over bicubic upsampling.

    With `residual` the output is bicubic(x) + RRDBNet(x): the network starts from the
    bicubic baseline and only learns what it misses, which on smooth fluorescence crops
    matters because bicubic is already a strong predictor. residual=False is ESRGAN's
    plain RRDBNet.
    """

    def __init__(self, scale: int, num_feat: int, num_block: int, num_grow_ch: int,
                 residual: bool):
        super().__init__()
        self.scale, self.residual = scale, residual
        self.body = RRDBNet(num_in_ch=1, num_out_ch=1, scale=scale, num_feat=num_feat,
                            num_block=num_block, num_grow_ch=num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if self.residual:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic",
                                      align_corners=False)
        return out


def build_generator(scale: int, num_feat: int, num_block: int, num_grow_ch: int,
                    residual: bool = False) -> Generator:
    """RRDBNet for one grey channel (paper size: 64 / 23 / 32)."""
    return Generator(scale, num_feat, num_block, num_grow_ch, residual)


def build_discriminator(hr_patch: int, num_feat: int) -> nn.Module:
    if hr_patch not in (128, 256):
        raise ValueError("VGGStyleDiscriminator takes 128 or 256 px inputs only")
    return VGGStyleDiscriminator(num_in_ch=1, num_feat=num_feat, input_size=hr_patch)


class VGGPerceptualLoss(nn.Module):
    """L1 between VGG19 conv5_4 features (before ReLU), as in ESRGAN.

    The ImageNet weights come from a file named in params and are loaded with
    weights_only=True (basicsr's own extractor downloads or unpickles them).
    """

    def __init__(self, weights_path: Path):
        super().__init__()
        from torchvision.models import vgg19

        if not Path(weights_path).is_file():
            raise WeightsError(
                f"sr.weight_perceptual > 0 needs ImageNet VGG19 weights, but {weights_path} does "
                "not exist. Put torchvision's vgg19-dcbb9e9d.pth there (sr.vgg_weights), or set "
                "sr.weight_perceptual: 0 to train without the perceptual loss")
        vgg = vgg19(weights=None)
        try:
            vgg.load_state_dict(load_state_dict_file(Path(weights_path)))
        except RuntimeError as exc:
            raise WeightsError(f"{weights_path}: not torchvision VGG19 weights "
                               f"({str(exc).splitlines()[0][:160]})") from None
        self.features = vgg.features[:VGG19_CONV5_4 + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        def embed(x):
            return self.features((x.expand(-1, 3, -1, -1) - self.mean) / self.std)

        return F.l1_loss(embed(sr), embed(hr).detach())


def autocast_for(device: torch.device, precision: str):
    """Autocast context for `precision` on `device`; fp32 means no autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype is torch.float16 and device.type != "cuda":
        raise ValueError("fp16 autocast is for CUDA; use bf16 or fp32 on CPU")
    return torch.autocast(device_type=device.type, dtype=dtype)


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
