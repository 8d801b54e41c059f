"""Five per-crop features a microscope or a batch effect changes as readily as a disease does:
brightness, bright spots, how much of the crop a cell fills, how much signal it holds, and
one texture measure. If a linear model on these alone separates the classes as well as a
deep network, the network may have learnt nothing more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from skimage.feature import graycomatrix, graycoprops
from skimage.filters import threshold_otsu

from pipeline.cli import progress
from pipeline.data.images import from_uint16
from pipeline.io import load_array

# name -> what it measures, in the words the report uses
FEATURES = {
    "mean_intensity": "mean intensity of the crop",
    "high_percentile_intensity": "high-percentile intensity (the brightest spots)",
    "foreground_area": "share of the crop above Otsu's threshold (cell or nucleus size)",
    "integrated_intensity": "summed intensity above Otsu's threshold, per crop pixel",
    "texture_contrast": "grey-level co-occurrence contrast (texture, brightness removed)",
}


def crop_features(image: np.ndarray, high_percentile: float, texture_levels: int
                  ) -> dict[str, float]:
    """FEATURES of one crop in [0, 1] (H x W)."""
    try:
        mask = image > threshold_otsu(image)
    except ValueError:  # a constant crop (ingest refuses those; a test may not)
        mask = np.zeros(image.shape, bool)
    # Texture on the crop's own grey range, so that it measures pattern, not brightness
    # (the intensity features already carry that).
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    levels = np.minimum((scaled * texture_levels).astype(np.uint8), texture_levels - 1)
    cooccurrence = graycomatrix(levels, distances=[1], angles=[0, np.pi / 2],
                                levels=texture_levels, symmetric=True, normed=True)
    return {"mean_intensity": float(image.mean()),
            "high_percentile_intensity": float(np.percentile(image, high_percentile)),
            "foreground_area": float(mask.mean()),
            "integrated_intensity": float(image[mask].sum() / image.size),
            "texture_contrast": float(graycoprops(cooccurrence, "contrast").mean())}


def feature_table(rows: pd.DataFrame, crops_dir: Path, high_percentile: float,
                  texture_levels: int) -> pd.DataFrame:
    """`rows` (crop_id, group, label, split) with one column per feature, read one crop at
    a time from ingest's uint16 cache: memory stays flat whatever the data's size."""
    values = []
    with progress() as bar:
        task = bar.add_task("baseline features", total=len(rows), status="")
        for crop_id in rows["crop_id"]:
            image = from_uint16(load_array(crops_dir / f"{crop_id}.npy"))[0]
            values.append(crop_features(image, high_percentile, texture_levels))
            bar.advance(task)
    return pd.concat([rows.reset_index(drop=True),
                      pd.DataFrame(values, columns=list(FEATURES))], axis=1)
