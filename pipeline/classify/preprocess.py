"""The study's optional preprocessing before classification (its section 2.2.1), by Kornia.

Gaussian, median or mean filtering and histogram equalisation, applied to every image the
classifier sees (training, validation, test, new samples) so the three never differ. Off
by default: the filters remove exactly the fine detail SR is meant to restore.
"""

from __future__ import annotations

import kornia
import torch

from pipeline.config import PreprocessParams


def describe(params: PreprocessParams) -> str:
    """A short record for the metrics, e.g. 'gaussian(k=3, sigma=1.0)+equalize' or 'none'."""
    parts = []
    if params.filter != "none":
        detail = f"k={params.kernel}" + (f", sigma={params.sigma}"
                                         if params.filter == "gaussian" else "")
        parts.append(f"{params.filter}({detail})")
    if params.equalize:
        parts.append("equalize")
    return "+".join(parts) or "none"


@torch.no_grad()
def preprocess_images(images: torch.Tensor, params: PreprocessParams) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1] -> the same shape, filtered and/or equalised, in [0, 1]."""
    if params.filter == "none" and not params.equalize:
        return images
    kernel = (params.kernel, params.kernel)
    if params.filter == "gaussian":
        images = kornia.filters.gaussian_blur2d(images, kernel, (params.sigma, params.sigma),
                                                border_type="reflect")
    elif params.filter == "median":
        images = kornia.filters.median_blur(images, kernel)
    elif params.filter == "mean":
        images = kornia.filters.box_blur(images, kernel, border_type="reflect")
    if params.equalize:
        images = kornia.enhance.equalize(images.clamp(0, 1))
    return images.clamp(0, 1)
