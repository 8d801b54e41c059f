"""LR/HR pairs for the SR model: HR patches from train (and val) crops, LR by downsampling.

Only training-split crops feed SR training and only validation crops its validation:
no image of a test group is ever seen by the SR model, so SR cannot leak test content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

from pipeline.cli import PipelineError
from pipeline.config import SRParams
from pipeline.data.images import acquire_low_resolution, from_uint16
from pipeline.io import load_array


def degrade(hr: torch.Tensor, scale: int, blur_sigma: float, noise_std: float,
            generator: torch.Generator) -> torch.Tensor:
    """HR (N,1,H,W) in [0,1] -> LR: optional blur, antialiased bicubic downsampling, noise."""
    lr = hr
    if blur_sigma > 0:
        radius = max(1, int(round(3 * blur_sigma)))
        lr = gaussian_blur2d(lr, (2 * radius + 1,) * 2, (blur_sigma, blur_sigma),
                             border_type="reflect")
    lr = F.interpolate(lr, scale_factor=1 / scale, mode="bicubic", antialias=True,
                       align_corners=False)
    if noise_std > 0:
        lr = lr + noise_std * torch.randn(lr.shape, generator=generator)
    return lr.clamp(0, 1)


def extract_patches(crops: np.ndarray, patch: int, per_crop: int,
                    rng: np.random.Generator, grid: int = 1) -> np.ndarray:
    """Random patch x patch windows, `per_crop` from each (N,1,H,W) crop, with origins on
    multiples of `grid` (the acquisition's pixel grid, so LR blocks match acquired pixels)."""
    _, _, height, width = crops.shape
    if height < patch or width < patch:
        raise PipelineError(f"crops are {height}x{width}, smaller than sr.hr_patch={patch}; "
                            "use larger crops (data.crop_size) or a smaller sr.hr_patch "
                            "(sr.discriminator: unet below 128 px)")
    out = np.empty((len(crops) * per_crop, 1, patch, patch), crops.dtype)
    for index in range(len(out)):
        y = grid * rng.integers(0, (height - patch) // grid + 1)
        x = grid * rng.integers(0, (width - patch) // grid + 1)
        out[index] = crops[index // per_crop, :, y:y + patch, x:x + patch]
    return out


def acquire_patches(hr: np.ndarray, factor: int, levels: list[int | None]) -> np.ndarray:
    """LR patches made exactly as ingest made the acquired crops (area mean, same bit depth)."""
    return np.stack([acquire_low_resolution(patch[0], factor, level)[None]
                     for patch, level in zip(hr, levels)])


def make_lr_hr_pairs(crops_dir: Path, split_frame: pd.DataFrame, params: SRParams,
                     seed: int, acquire_downsample: int = 0) -> dict[str, np.ndarray]:
    """Return {train,val,test}_{hr,lr} as float32 arrays (N,1,H,W) in [0,1].

    Without acquisition (0) the crops are the HR side and LR is made by bicubic
    downsampling (optionally blurred and noisy). With acquire_downsample k the HR side is
    ingest's `hr` originals and LR is the same area acquisition ingest applied, so the
    generator learns exactly the mapping it will be asked to invert. Either way only the
    training groups feed training and the validation groups choose the checkpoint; the test
    groups' pairs only score the chosen generator against bicubic (none when the split has
    no test crops).
    """
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    source_dir = crops_dir.with_name("hr") if acquire_downsample else crops_dir
    pairs = {}
    for split in ("train", "val", "test"):  # test last: train and val draws stay as they were
        rows = split_frame.loc[split_frame["split"] == split]
        if rows.empty and split == "test":
            continue
        if rows.empty:
            raise PipelineError(f"no {split} crops in the split; cannot make SR pairs")
        crops = np.stack([from_uint16(load_array(source_dir / f"{i}.npy"))
                          for i in rows["crop_id"]])
        grid = max(acquire_downsample, 1)
        hr = extract_patches(crops, params.hr_patch, params.patches_per_crop, rng, grid)
        if acquire_downsample:
            # each patch rounded to its source crop's own grey levels (None: float data)
            levels = [None if pd.isna(v) else int(v) for v in rows["levels"]
                      for _ in range(params.patches_per_crop)]
            lr = acquire_patches(hr, acquire_downsample, levels)
        else:
            lr = degrade(torch.from_numpy(hr), params.scale, params.blur_sigma, params.noise_std,
                         generator).numpy()
        pairs[f"{split}_hr"], pairs[f"{split}_lr"] = hr, lr
    return pairs
