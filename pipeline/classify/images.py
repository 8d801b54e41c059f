"""Loading the classifier's images (raw, bicubic, SR or HR) for a split, at the model's size.

A split's images are read as the uint16 cache holds them and converted, upscaled, resized
and preprocessed batch by batch (on the GPU when the stage has one), never all at once.
`bicubic` is computed here from the acquired crops rather than read back from disk: at x4
it would be 16 times the crops' bytes, and it is cheaper to recompute than to store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pipeline.classify.preprocess import preprocess_images
from pipeline.cli import PipelineError
from pipeline.config import Params, PreprocessParams, classifier_image_size
from pipeline.data.images import read_stack, to_uint16
from pipeline.data.tensors import (
    CHUNK_ROWS,
    CacheRowSource,
    bicubic_upscale,
    cache_rows,
    on_cache_grid,
    rows_as_float,
    to_classifier_size,
)
from pipeline.io import byte_view

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
    """(N, 1, size, size) float32 in [0, 1] on the CPU, all at once: optionally bicubic
    x`upscale` (on the cache grid), then resized to `size` with antialiasing where it
    differs. The stages stream through ClassifierImages instead; this is its reference."""
    return ClassifierImages(read_stack(folder, crop_ids) if crop_ids else
                            np.zeros((0, 1, size, size), np.uint16), size, upscale, None,
                            device)[:]


class ClassifierImages:
    """A split's images as the classifier sees them, held as the uint16 cache holds them
    and made into float32 batch by batch: converted, bicubic-upscaled, resized and
    preprocessed per batch, so no stage holds a float32 copy of a whole split.

    Indexing works as on the (N, 1, size, size) float32 tensor it stands for (an int, a
    slice, a list or tensor of positions, a tuple), and each image comes out the same
    whatever batch it is made in: every step works image by image.
    """

    def __init__(self, stored: np.ndarray, size: int, upscale: int = 1,
                 preprocess: PreprocessParams | None = None,
                 device: torch.device | None = None):
        self.stored = cache_rows(stored)  # (N, 1, h, w) at the size it was stored
        self.size, self.upscale, self.preprocess = size, upscale, preprocess
        self.device = device or torch.device("cpu")

    def __len__(self) -> int:
        return len(self.stored)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.stored), 1, self.size, self.size)

    def made(self, rows: torch.Tensor) -> torch.Tensor:
        """cache rows -> the classifier's float32 images, on the CPU."""
        out = torch.empty(len(rows), 1, self.size, self.size)
        for first in range(0, len(rows), LOAD_BATCH):
            batch = rows_as_float(rows[first:first + LOAD_BATCH].to(self.device))
            if self.upscale > 1:
                batch = on_cache_grid(bicubic_upscale(batch, self.upscale))
            out[first:first + len(batch)] = to_classifier_size(batch, self.size).cpu()
        return out if self.preprocess is None else preprocess_images(out, self.preprocess)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, tuple):  # images[i, 0]: the image's rows first, then the rest
            return self[key[0]][key[1:]]
        if isinstance(key, int):
            return self.made(self.stored[key:key + 1 or None])[0]
        if isinstance(key, list | np.ndarray):
            key = torch.as_tensor(np.asarray(key), dtype=torch.int64)
        return self.made(self.stored[key])

    def add_to_digest(self, digest) -> None:
        """What the images are made from and how (a training checkpoint's config), fed to a
        hashlib digest in place: a bytes copy of the stored rows would double them."""
        digest.update(byte_view(self.stored.numpy()))
        digest.update(f"{self.size}|{self.upscale}|{self.preprocess}".encode())


class TrainingRowsFromSplit(CacheRowSource):
    """The training set as images[source] (a split's images, the rows balancing repeats
    drawn again), made as cache rows when a batch asks for them: what augment stored before
    online augmentation, value for value, with no copy of it on disk or in memory. The loop
    augments each batch (augment.online)."""

    def __init__(self, images: ClassifierImages, source: np.ndarray):
        self.images, self.source = images, np.asarray(source, dtype=np.int64)
        self.shape = (len(self.source), *images.shape[1:])

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        positions = self.source[torch.as_tensor(indices).cpu().numpy()]
        return cache_rows(to_uint16(self.images[positions].numpy()))

    def chunks(self) -> Iterator[np.ndarray]:
        for first in range(0, len(self.source), CHUNK_ROWS):
            yield to_uint16(self.images[self.source[first:first + CHUNK_ROWS]].numpy())


def training_rows_from_index(params: Params, crops_dir: Path, sr_dir: Path | None,
                             crop_ids: list[str], device: torch.device | None = None
                             ) -> TrainingRowsFromSplit:
    """The training set augment's index (train_index.csv's crop_id column, a crop once per
    row it makes) names, read from the split's images once per crop."""
    unique = list(dict.fromkeys(crop_ids))
    position = {crop_id: i for i, crop_id in enumerate(unique)}
    images = load_classifier_images(params, params.classifier.input, crops_dir, sr_dir, unique,
                                    device)
    return TrainingRowsFromSplit(images, np.array([position[c] for c in crop_ids], np.int64))


def load_classifier_images(params: Params, input_kind: str, crops_dir: Path, sr_dir: Path | None,
                           crop_ids: list[str], device: torch.device | None = None
                           ) -> ClassifierImages:
    """The images the classifier sees for `input_kind`: at classifier_image_size, then
    params.preprocess, made batch by batch from the uint16 cache (ClassifierImages)."""
    size = classifier_image_size(params)
    stored = (read_stack(image_folder(input_kind, crops_dir, sr_dir), crop_ids) if crop_ids
              else np.zeros((0, 1, size, size), np.uint16))
    upscale = params.sr.scale if input_kind == "bicubic" else 1
    return ClassifierImages(stored, size, upscale, params.preprocess, device)


def balanced_indices(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices plus minority-class indices drawn with replacement up to the majority count."""
    counts = np.bincount(labels, minlength=2)
    minority = int(np.argmin(counts))
    extra = rng.choice(np.flatnonzero(labels == minority), counts.max() - counts.min(),
                       replace=True)
    return np.concatenate([np.arange(len(labels)), np.sort(extra)])
