"""Loading the classifier's images (raw, bicubic or SR) for a split, at the model's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.common import PipelineError, load_array
from pipeline.config import Params
from pipeline.images import from_uint16


def image_folder(input_kind: str, crops_dir: Path, sr_dir: Path) -> Path:
    """Where the images of `classifier.input` live (ingest keeps `hr` beside `crops`)."""
    return {"raw": crops_dir, "hr": crops_dir.with_name("hr"), "sr": sr_dir / "sr",
            "bicubic": sr_dir / "bicubic"}[input_kind]


def acquired_size(params: Params) -> int:
    """Edge of the crops as acquired: data.crop_size, or 1/k of it with acquire_downsample k."""
    return params.data.crop_size // max(params.data.acquire_downsample, 1)


def arrival_size(params: Params, input_kind: str | None = None) -> int:
    """Edge of the images of `input_kind` as the stage that makes them writes them."""
    kind = input_kind or params.classifier.input
    if kind == "raw":
        return acquired_size(params)
    if kind == "hr":
        return params.data.crop_size
    return acquired_size(params) * params.sr.scale


def classifier_image_size(params: Params) -> int:
    """classifier.image_size, with auto meaning the size the input arrives at."""
    size = params.classifier.image_size
    return arrival_size(params) if size == "auto" else int(size)


def to_classifier_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 1, size, size) in [0, 1], bilinear with antialiasing when it
    shrinks; unchanged where it already has the size. evaluate and predict share it."""
    if image.shape[-1] != size or image.shape[-2] != size:
        image = F.interpolate(image, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
    return image.clamp(0, 1)


def load_images(folder: Path, crop_ids: list[str], size: int) -> torch.Tensor:
    """(N, 1, size, size) float32 in [0, 1]; SR images are downsized with antialiasing."""
    if not crop_ids:
        return torch.zeros(0, 1, size, size)
    out = torch.empty(len(crop_ids), 1, size, size)
    for index, crop_id in enumerate(crop_ids):
        path = folder / f"{crop_id}.npy"
        if not path.is_file():
            raise PipelineError(f"{path}: missing image for crop {crop_id}; rerun the stage "
                                "that writes it")
        out[index] = to_classifier_size(torch.from_numpy(from_uint16(load_array(path)))[None],
                                        size)[0]
    return out


def load_classifier_images(params: Params, folder: Path, crop_ids: list[str]) -> torch.Tensor:
    """The images the classifier sees: at classifier_image_size, then params.preprocess."""
    from pipeline.preprocess import preprocess_images

    return preprocess_images(load_images(folder, crop_ids, classifier_image_size(params)),
                             params.preprocess)


def split_subset(split_frame: pd.DataFrame, split: str, hint: str = "") -> pd.DataFrame:
    subset = split_frame[split_frame["split"] == split].reset_index(drop=True)
    hint = f" ({hint})" if hint else ""
    if subset.empty:
        raise PipelineError(f"the {split} split is empty{hint}")
    if subset["label"].nunique() < 2:
        raise PipelineError(f"the {split} split holds one class only; AUC is undefined{hint}")
    return subset


def balanced_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices plus minority-class indices drawn with replacement up to the majority count."""
    counts = np.bincount(labels, minlength=2)
    minority = int(np.argmin(counts))
    extra = rng.choice(np.flatnonzero(labels == minority), counts.max() - counts.min(),
                       replace=True)
    return np.concatenate([np.arange(len(labels)), np.sort(extra)])
