"""Shared fixtures: the real params.yaml shrunk to test size, and raw-layout writers."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.config import load_params

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def tiny_overrides() -> dict:
    """The real config, shrunk: few samples, tiny networks, 1 epoch, CPU."""
    return {
        "device": "cpu", "epochs": 1, "batch_size": 8, "lr": 0.001,
        "demo": {"n_als_samples": 5, "n_control_samples": 4, "crops_per_sample": [2, 3],
                 "second_folder_fraction": 0.3, "crop_size": 32, "render_scale": 4},
        "sr": {"num_feat": 8, "num_block": 1, "num_grow_ch": 8, "disc_feat": 8,
               "batch_size": 2, "iters_psnr": 4, "iters_gan": 2, "val_every": 2,
               "checkpoint_every": 2, "infer_batch": 4},
        "augment": {"copies": 1},
        "classifier": {"backbones": ["mobilenet_v3_small"], "image_size": 32,
                       "eval_batch_size": 16, "bootstrap": 100, "permutations": 199,
                       "seeds": 1, "precision": "fp32"},
    }


def merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def write_params(path: Path, **section_overrides) -> Path:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = merge(merge(base, tiny_overrides()), section_overrides)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    return write_params(tmp_path / "params.yaml")


@pytest.fixture
def params(params_file: Path):
    return load_params(params_file)


def write_crop(path: Path, array: np.ndarray, fmt: str | None = None, **save_kwargs) -> Path:
    """Save an array as an image file (format from the suffix unless given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    buffer = io.BytesIO()
    fmt = fmt or {".tif": "TIFF", ".tiff": "TIFF", ".png": "PNG"}[path.suffix.lower()]
    image.save(buffer, format=fmt, **save_kwargs)
    path.write_bytes(buffer.getvalue())
    return path


def blob(size: int = 128, seed: int = 0, bright: float = 200.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    img = bright * np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2))
    return np.clip(img + rng.normal(10, 3, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    """A small valid raw folder: 2 classes x 3 groups, one group with crops and crops2."""
    root = tmp_path / "raw"
    for class_index, class_name in enumerate(("ALS", "Control")):
        for group in range(3):
            sample = f"{'SD' if class_index == 0 else 'CT'}{group:03d}_1{group}"
            for crop in range(2):
                write_crop(root / class_name / f"{sample}_crops_r" / f"c{crop}.tif",
                           blob(seed=group * 10 + crop, bright=120 + 40 * class_index),
                           compression="tiff_lzw")
            if group == 0:
                write_crop(root / class_name / f"{sample}_crops2_r" / "c9.png", blob(seed=99))
    return root


def square_crops(root: Path, count: int, split_of) -> tuple[Path, Path]:
    """`count` cached 32 px crops, positives carrying a bright square, two crops per group,
    and a split.csv with split_of(index) for each; returns (crops folder, split.csv)."""
    import pandas as pd

    from pipeline.io import save_array_atomic

    crops = root / "crops"
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        label = index % 2
        image = rng.uniform(0, 0.3, (1, 32, 32))
        image[:, 8:24, 8:24] += 0.6 * label
        crop_id = f"c{index:03d}"
        save_array_atomic(crops / f"{crop_id}.npy",
                          (np.clip(image, 0, 1) * 65535).astype(np.uint16))
        rows.append({"crop_id": crop_id, "group": f"g{index // 2}", "label": label,
                     "split": split_of(index)})
    split_csv = root / "split.csv"
    pd.DataFrame(rows).to_csv(split_csv, index=False)
    return crops, split_csv
