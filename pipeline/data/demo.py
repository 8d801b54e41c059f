"""Demo data: seeded synthetic TDP-43-like crops in the study's raw layout.

Control cells show diffuse nuclear TDP-43; ALS cells show nuclear depletion plus
cytoplasmic puncta. Each sample (patient) has its own brightness, cell size, noise
and background, so a split that puts crops of one sample on both sides would let a
classifier recognise the sample instead of the disease: the leak we infer the study had
(it split crops at random and does not report grouping by patient; it does not report
the leak itself).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.cli import progress
from pipeline.config import DemoParams
from pipeline.data.images import acquire_low_resolution
from pipeline.io import write_bytes_atomic


def _soft_ellipse(yy, xx, cy, cx, ry, rx, angle, edge):
    cos, sin = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * cos + dy * sin) / rx
    v = (-dx * sin + dy * cos) / ry
    radius = np.sqrt(u * u + v * v)
    return 1.0 / (1.0 + np.exp((radius - 1.0) / edge))


def render_cell(rng: np.random.Generator, size: int, is_als: bool,
                sample_style: dict) -> np.ndarray:
    """One crop, float in [0, 1]; the style dict carries the sample's own look."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = size / 2 + rng.normal(0, size * 0.03, 2)
    cell_r = size * 0.36 * sample_style["cell_scale"] * rng.uniform(0.9, 1.1, 2)
    angle = rng.uniform(0, np.pi)
    cell = _soft_ellipse(yy, xx, *centre, *cell_r, angle, 0.06)
    nucleus_r = cell_r * rng.uniform(0.45, 0.6)
    nucleus_centre = centre + rng.normal(0, size * 0.02, 2)
    nucleus = _soft_ellipse(yy, xx, *nucleus_centre, *nucleus_r, angle, 0.08)
    # Nuclear texture: smooth random field so nuclei are not flat discs.
    coarse = rng.normal(0, 1, (size // 8, size // 8)).astype(np.float32)
    texture = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size),
                                                                  Image.Resampling.BICUBIC))
    nuclear_level = 0.75 * (1 + 0.15 * texture)
    image = 0.12 * cell
    if is_als:
        image += nuclear_level * nucleus * rng.uniform(0.3, 0.8)  # depleted nucleus
        cytoplasm = np.clip(cell - nucleus, 0, 1)
        candidates = np.argwhere(cytoplasm > 0.5)
        n_puncta = rng.integers(1, 9)
        if len(candidates):
            for py, px in candidates[rng.integers(0, len(candidates), n_puncta)]:
                sigma = rng.uniform(1.2, 2.8) * size / 128
                amp = rng.uniform(0.3, 0.9)
                image += amp * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * sigma**2))
    else:
        image += nuclear_level * nucleus
    image = sample_style["background"] + sample_style["brightness"] * image
    image += rng.normal(0, sample_style["noise"], image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def make_demo_dataset(out_dir: Path, params: DemoParams, seed: int) -> dict:
    """Write `<class>/<sample>_crops[2]_r/<crop>.tif|png` under out_dir; return counts."""
    rng = np.random.default_rng(seed)
    plan = [("ALS", True, i) for i in range(params.n_als_samples)]
    plan += [("Control", False, i) for i in range(params.n_control_samples)]
    counts = {"ALS": 0, "Control": 0}
    folders = 0
    with progress() as bar:
        task = bar.add_task("demo crops", total=len(plan), status="")
        for class_name, is_als, index in plan:
            # Patient-like names: SD = ALS donor, CT = control, then a visit number.
            prefix = "SD" if is_als else "CT"
            sample = f"{prefix}{index + 1:03d}_{rng.integers(10, 99)}"
            style = {
                "brightness": rng.uniform(0.55, 1.0),
                "background": rng.uniform(0.01, 0.12),
                "noise": rng.uniform(0.01, 0.05),
                "cell_scale": rng.uniform(0.8, 1.15),
            }
            suffixes = ["_crops_r"]
            if rng.random() < params.second_folder_fraction:
                suffixes.append("_crops2_r")
            for suffix in suffixes:
                folder = out_dir / class_name / f"{sample}{suffix}"
                n_crops = rng.integers(params.crops_per_sample[0], params.crops_per_sample[1] + 1)
                for crop_index in range(n_crops):
                    cell = render_cell(rng, params.crop_size * params.render_scale, is_als,
                                       style)
                    # Drawn large, then area-averaged: a camera pixel integrates its area.
                    cell = acquire_low_resolution(cell, params.render_scale, None)
                    pixels = (cell * 255).round()
                    image = Image.fromarray(pixels.astype(np.uint8), mode="L")
                    buffer = io.BytesIO()
                    # Both formats the study's folders hold: LZW TIFF and, in crops2, PNG.
                    if suffix == "_crops2_r":
                        image.save(buffer, format="PNG")
                        name = f"cell_{crop_index:03d}.png"
                    else:
                        image.save(buffer, format="TIFF", compression="tiff_lzw")
                        name = f"cell_{crop_index:03d}.tif"
                    write_bytes_atomic(folder / name, buffer.getvalue())
                    counts[class_name] += 1
                folders += 1
            bar.update(task, advance=1, status=sample)
    return {"crops_ALS": counts["ALS"], "crops_Control": counts["Control"],
            "sample_folders": folders,
            "samples_ALS": params.n_als_samples, "samples_Control": params.n_control_samples}
