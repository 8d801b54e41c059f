"""LR/HR pairs for the SR model: HR patches from train (and val) crops, LR by downsampling.

Only training-split crops feed SR training and only validation crops its validation:
no test crop is ever seen by the SR model, so SR cannot leak test content.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.common import (
    PipelineError,
    console,
    environment_record,
    load_array,
    save_array_atomic,
    stage_main,
    write_json_atomic,
)
from pipeline.config import SRParams, load_params
from pipeline.images import from_uint16


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return images
    radius = max(1, int(round(3 * sigma)))
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-coords**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))


def degrade(hr: torch.Tensor, scale: int, blur_sigma: float, noise_std: float,
            generator: torch.Generator) -> torch.Tensor:
    """HR (N,1,H,W) in [0,1] -> LR: optional blur, antialiased bicubic downsampling, noise."""
    lr = gaussian_blur(hr, blur_sigma)
    lr = F.interpolate(lr, scale_factor=1 / scale, mode="bicubic", antialias=True,
                       align_corners=False)
    if noise_std > 0:
        lr = lr + noise_std * torch.randn(lr.shape, generator=generator)
    return lr.clamp(0, 1)


def extract_patches(crops: np.ndarray, patch: int, per_crop: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Random patch x patch windows, `per_crop` from each (N,1,H,W) crop."""
    _, _, height, width = crops.shape
    if height < patch or width < patch:
        raise PipelineError(f"crops are {height}x{width}, smaller than sr.hr_patch={patch}; "
                            "use larger crops (data.crop_size) or sr.hr_patch: 128")
    out = np.empty((len(crops) * per_crop, 1, patch, patch), crops.dtype)
    for index in range(len(out)):
        y = rng.integers(0, height - patch + 1)
        x = rng.integers(0, width - patch + 1)
        out[index] = crops[index // per_crop, :, y:y + patch, x:x + patch]
    return out


def make_lr_hr_pairs(crops_dir: Path, split_frame: pd.DataFrame, params: SRParams,
                     seed: int) -> dict[str, np.ndarray]:
    """Return {train_hr, train_lr, val_hr, val_lr} as float32 arrays (N,1,H,W) in [0,1]."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    pairs = {}
    for split in ("train", "val"):
        ids = split_frame.loc[split_frame["split"] == split, "crop_id"].tolist()
        if not ids:
            raise PipelineError(f"no {split} crops in the split; cannot make SR pairs")
        crops = np.stack([from_uint16(load_array(crops_dir / f"{i}.npy")) for i in ids])
        hr = extract_patches(crops, params.hr_patch, params.patches_per_crop, rng)
        lr = degrade(torch.from_numpy(hr), params.scale, params.blur_sigma, params.noise_std,
                     generator)
        pairs[f"{split}_hr"], pairs[f"{split}_lr"] = hr, lr.numpy()
    return pairs


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=Path, required=True, help="ingested crop cache folder")
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    pairs = make_lr_hr_pairs(args.crops, pd.read_csv(args.split), params.sr, params.seed)
    for name, array in pairs.items():
        save_array_atomic(args.out / f"{name}.npy", array.astype(np.float32))
    summary = {name: list(array.shape) for name, array in pairs.items()}
    write_json_atomic(args.out / "shapes.json", summary | {"environment": environment_record()})
    console.print(f"pairs: {summary}")


if __name__ == "__main__":
    main()
