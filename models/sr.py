"""ESRGAN parts: RRDBNet generator, discriminators, VGG19 perceptual loss."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.basicsr_compat import RRDBNet, UNetDiscriminatorSN, VGGStyleDiscriminator
from models.weights import WeightsError, load_state_dict_file
from pipeline.cli import first_line

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
        if residual:
            # Zero last layer: the untrained model *is* bicubic, so training starts at the
            # baseline and gradient steps can only move it where L1 says bicubic is wrong
            # (the ReZero / "zero-init the residual branch" idea of Goyal et al. 2017).
            nn.init.zeros_(self.body.conv_last.weight)
            nn.init.zeros_(self.body.conv_last.bias)

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


def build_discriminator(kind: str, hr_patch: int, num_feat: int) -> nn.Module:
    """ESRGAN's VGG-style discriminator (one score per image, 128 or 256 px only) or
    Real-ESRGAN's U-Net with spectral norm (one score per pixel, any multiple of 8)."""
    if kind == "unet":
        if hr_patch % 8:
            raise ValueError("UNetDiscriminatorSN needs a patch size divisible by 8")
        return UNetDiscriminatorSN(num_in_ch=1, num_feat=num_feat)
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
                               f"({first_line(exc, 160)})") from None
        self.features = vgg.features[:VGG19_CONV5_4 + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        def embed(x):
            return self.features((x.expand(-1, 3, -1, -1) - self.mean) / self.std)

        return F.l1_loss(embed(sr), embed(hr).detach())
