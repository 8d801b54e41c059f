"""PSNR / SSIM of SR and bicubic against HR, and the LR | bicubic | SR | HR picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kornia.metrics import ssim as kornia_ssim

from models.sr import build_generator
from pipeline.device import autocast_for


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for each image of (N,C,H,W) tensors in [0, 1]."""
    mse = ((pred - target) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10(1.0 / mse)


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return kornia_ssim(pred, target, window_size=11, max_val=1.0).flatten(1).mean(1)


def bicubic_upscale(lr: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)


@torch.no_grad()
def evaluate_sr(model, val_lr: np.ndarray, val_hr: np.ndarray, scale: int,
                device: torch.device, batch: int, precision: str = "fp32") -> dict[str, float]:
    """Mean PSNR/SSIM of model(LR) and of bicubic(LR) against HR, same crops, same range."""
    was_training = model.training
    model.eval()
    scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": [], "psnr_bicubic": [],
                                             "ssim_bicubic": []}
    for start in range(0, len(val_lr), batch):
        lr = torch.from_numpy(val_lr[start:start + batch]).to(device)
        hr = torch.from_numpy(val_hr[start:start + batch]).to(device)
        with autocast_for(device, precision):
            sr = model(lr)
        sr = sr.float().clamp(0, 1)
        bicubic = bicubic_upscale(lr, scale)
        scores["psnr"].append(psnr_per_image(sr, hr).cpu())
        scores["ssim"].append(ssim_per_image(sr, hr).cpu())
        scores["psnr_bicubic"].append(psnr_per_image(bicubic, hr).cpu())
        scores["ssim_bicubic"].append(ssim_per_image(bicubic, hr).cpu())
    model.train(was_training)
    return {k: round(float(torch.cat(v).mean()), 4) for k, v in scores.items()}


def generator_from_state(state: dict, config: dict) -> torch.nn.Module:
    model = build_generator(config["scale"], config["num_feat"], config["num_block"],
                            config["num_grow_ch"], config["residual"])
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def save_sr_samples(state: dict, config: dict, pairs: dict[str, np.ndarray], path: Path,
                    count: int = 4) -> None:
    """Rows of LR (nearest-upscaled) | bicubic | SR | HR for the first validation crops."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.common import atomic_path

    model = generator_from_state(state, config)
    lr = torch.from_numpy(pairs["val_lr"][:count])
    hr = torch.from_numpy(pairs["val_hr"][:count])
    scale = config["scale"]
    columns = {"LR": F.interpolate(lr, scale_factor=scale, mode="nearest"),
               "bicubic": bicubic_upscale(lr, scale), "SR (EMA)": model(lr).clamp(0, 1),
               "HR": hr}
    fig, axes = plt.subplots(len(lr), 4, figsize=(8, 2 * len(lr)), squeeze=False)
    for row in range(len(lr)):
        for col, (title, images) in enumerate(columns.items()):
            ax = axes[row][col]
            ax.imshow(images[row, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
            if title != "LR" and title != "HR":
                p = psnr_per_image(images[row:row + 1], hr[row:row + 1]).item()
                ax.set_xlabel(f"{p:.1f} dB", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
