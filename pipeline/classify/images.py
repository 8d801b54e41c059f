"""Loading the classifier's images (raw, bicubic, SR or HR) for a split, at the model's size.

A split's images are read into one array and converted, upscaled and resized in batches
(on the GPU when the stage has one), not one crop at a time. `bicubic` is computed here
from the acquired crops rather than read back from disk: at x4 it would be 16 times the
crops' bytes, and it is cheaper to recompute than to store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.classify.preprocess import preprocess_images
from pipeline.cli import PipelineError
from pipeline.config import Params, classifier_image_size
from pipeline.data.images import read_stack
from pipeline.data.tensors import bicubic_upscale, on_cache_grid, to_classifier_size

# Crops converted and resized per batch: bounded working memory at any split size.
LOAD_BATCH = 256


def image_folder(input_kind: str, crops_dir: Path, sr_dir: Path | None) -> Path:
    """Where the images of `classifier.input` are read from (ingest keeps `hr` beside
    `crops`; `bicubic` is made at load time from the acquired crops). A stage that reads
    no SR images passes sr_dir None."""
    if input_kind == "sr" and sr_dir is None:
        raise PipelineError("this stage reads no SR images (classifier.input sr)")
    if input_kind == "sr":
        return sr_dir / "sr"
    return {"raw": crops_dir, "hr": crops_dir.with_name("hr"), "bicubic": crops_dir}[input_kind]


def load_images(folder: Path, crop_ids: list[str], size: int, upscale: int = 1,
                device: torch.device | None = None) -> torch.Tensor:
    """(N, 1, size, size) float32 in [0, 1] on the CPU: optionally bicubic x`upscale` (on
    the cache grid), then resized to `size` with antialiasing where it differs."""
    if not crop_ids:
        return torch.zeros(0, 1, size, size)
    device = device or torch.device("cpu")
    out = torch.empty(len(crop_ids), 1, size, size)
    for first in range(0, len(crop_ids), LOAD_BATCH):
        stack = read_stack(folder, crop_ids[first:first + LOAD_BATCH])
        batch = torch.from_numpy(stack.astype(np.float32)).to(device) / 65535.0
        if upscale > 1:
            batch = on_cache_grid(bicubic_upscale(batch, upscale))
        out[first:first + len(batch)] = to_classifier_size(batch, size).cpu()
    return out


def load_classifier_images(params: Params, input_kind: str, crops_dir: Path, sr_dir: Path | None,
                           crop_ids: list[str], device: torch.device | None = None
                           ) -> torch.Tensor:
    """The images the classifier sees for `input_kind`: at classifier_image_size, then
    params.preprocess."""

    upscale = params.sr.scale if input_kind == "bicubic" else 1
    images = load_images(image_folder(input_kind, crops_dir, sr_dir), crop_ids,
                         classifier_image_size(params), upscale, device)
    return preprocess_images(images, params.preprocess)


def balanced_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices plus minority-class indices drawn with replacement up to the majority count."""
    counts = np.bincount(labels, minlength=2)
    minority = int(np.argmin(counts))
    extra = rng.choice(np.flatnonzero(labels == minority), counts.max() - counts.min(),
                       replace=True)
    return np.concatenate([np.arange(len(labels)), np.sort(extra)])
