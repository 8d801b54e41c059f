"""PSNR / SSIM of SR and bicubic against HR, and the LR | bicubic | SR | HR picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.basicsr_compat import calculate_psnr_pt, calculate_ssim_pt
from pipeline.data.tensors import bicubic_upscale
from pipeline.io import atomic_path
from pipeline.runtime.device import autocast_for
from pipeline.sr.inference import generator_from_state


def psnr_per_image(pred: torch.Tensor, target: torch.Tensor, crop_border: int) -> torch.Tensor:
    """PSNR in dB per image of (N,1,H,W) tensors in [0, 1], as the SR literature reports it:
    `crop_border` (= the scale) pixels cut off each edge, basicsr's own implementation."""
    return calculate_psnr_pt(pred, target, crop_border=crop_border)


def ssim_per_image(pred: torch.Tensor, target: torch.Tensor, crop_border: int) -> torch.Tensor:
    """SSIM per image: 11x11 Gaussian window (sigma 1.5) over valid positions only (no zero
    padding), on the 0-255 scale, border cropped: basicsr's port of Wang et al.'s MATLAB code."""
    return calculate_ssim_pt(pred, target, crop_border=crop_border)


@torch.no_grad()
def evaluate_sr(model, val_lr: np.ndarray, val_hr: np.ndarray, scale: int,
                device: torch.device, batch: int, precision: str = "fp32") -> dict[str, float]:
    """Mean PSNR/SSIM of model(LR) and of bicubic(LR) against HR, same crops, same range.

    Scores stay on the device until the end: one transfer, not one per batch and metric.
    """
    was_training = model.training
    model.eval()
    # Per-image scores written into one tensor per metric, not a list of each batch's:
    # those small tensors stayed alive among the batches' freed activations and the heap
    # grew with the number of pairs (train_sr's peak, 1.0 GB at 4k demo crops, was 1.5 GB
    # at 16k). Same values, same means.
    scores: dict[str, torch.Tensor] = {}
    for start in range(0, len(val_lr), batch):
        lr = torch.from_numpy(val_lr[start:start + batch]).to(device)
        hr = torch.from_numpy(val_hr[start:start + batch]).to(device)
        with autocast_for(device, precision):
            sr = model(lr)
        sr = sr.float().clamp(0, 1)
        bicubic = bicubic_upscale(lr, scale)
        for name, image in (("", sr), ("_bicubic", bicubic)):
            for metric, per_image in (("psnr", psnr_per_image), ("ssim", ssim_per_image)):
                values = per_image(image, hr, scale)
                if metric + name not in scores:
                    scores[metric + name] = values.new_empty(len(val_lr))
                scores[metric + name][start:start + len(values)] = values
    model.train(was_training)
    order = ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic")
    means = torch.stack([scores[k].mean() for k in order]).cpu().tolist()
    return {k: round(float(v), 4) for k, v in zip(order, means, strict=True)}


@torch.no_grad()
def save_sr_samples(state: dict, config: dict, pairs: dict[str, np.ndarray], path: Path,
                    count: int = 4) -> None:
    """Rows of LR (nearest-upscaled) | bicubic | SR | HR for the first validation crops, the
    PSNR against HR of bicubic and SR on them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    model = generator_from_state(state, config)
    lr = torch.from_numpy(pairs["val_lr"][:count])
    hr = torch.from_numpy(pairs["val_hr"][:count])
    scale = config["scale"]
    columns = {"LR": F.interpolate(lr, scale_factor=scale, mode="nearest"),
               "bicubic": bicubic_upscale(lr, scale), "SR": model(lr).clamp(0, 1),
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
                p = psnr_per_image(images[row:row + 1], hr[row:row + 1], scale).item()
                # under the image (it covers none of it), large and boxed to be read at a glance
                ax.set_xlabel(f"{p:.1f} dB\nPSNR against HR", fontsize=10, color="black",
                              bbox={"boxstyle": "round,pad=0.3", "facecolor": "#eef",
                                    "edgecolor": "#99a"})
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
