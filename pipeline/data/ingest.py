"""Ingest: every raw crop read, checked, fitted and cached as uint16; one manifest row each."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import PipelineError, progress
from pipeline.config import DataParams
from pipeline.data.acquisition import acquisition_metrics
from pipeline.data.image_files import (
    AboveBitDepthError,
    BadImageError,
    PlaneChoice,
    PlaneChoiceError,
    raw_peak,
    read_crop,
    resolve_bit_depth,
    stored_size,
)
from pipeline.data.images import acquire_low_resolution, fit_to_size, quantise, to_uint16
from pipeline.data.layout import (
    BadFiles,
    _inside,
    check_raw_dir,
    collect_candidates,
    find_class_folders,
)
from pipeline.io import save_array_atomic

# What each file was on disk (format to pixel_size_um) sits beside what ingest made of it,
# so that the acquisition can be compared between the classes (data/acquisition.py).
MANIFEST_COLUMNS = ["crop_id", "path", "class_name", "label", "sample", "group", "height",
                    "width", "format", "axes", "shape", "dtype", "compression",
                    "bits_per_sample", "channel_names", "channel", "z_project", "pixel_size_um",
                    "levels", "fit", "sha256", "cache_file"]


@dataclass
class IngestResult:
    manifest: pd.DataFrame
    metrics: dict
    problems: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # acquisition confounds, mixed sizes


def manifest_digest(manifest: pd.DataFrame, params: DataParams) -> str:
    """Names the data a run used: every file's bytes, class and sample, and how it was cached.

    Tables that put experiments side by side group them by this, so figures from two
    datasets (or two acquisition settings) are never mixed.
    """
    digest = hashlib.sha256(f"{params.crop_size}|{params.acquire_downsample}|"
                            f"{params.on_size_mismatch}|{params.positive}|{params.bit_depth}|"
                            f"{params.float_range}|{params.channel}|{params.z_project}".encode())
    for row in manifest[["path", "class_name", "group", "sha256"]].itertuples(index=False):
        digest.update("|".join(row).encode())
    return digest.hexdigest()


def links_outside(path: Path, root: Path) -> bool:
    """A symlink whose target lies outside the data folder: never opened, refused by name."""
    return path.is_symlink() and not _inside(path, root)


def prepare_crop(path: Path, root: Path, params: DataParams) -> tuple[
        np.ndarray, np.ndarray | None, dict, str]:
    """One crop as the classifier's side of the pipeline stores it: (acquired, original or
    None, what was on disk, how it was fitted), both quantised to the uint16 cache's grid.

    Raises BadImageError with a one-line reason. Ingest and predict both call this, so a new
    patient's crop is checked and normalised exactly as the training crops were.
    """
    if links_outside(path, root):
        raise BadImageError(f"symlink pointing outside the data folder ({os.readlink(path)}); "
                            "refused")
    if params.bit_depth == "auto":
        raise ValueError("resolve data.bit_depth: auto (ingest.resolved_data_params) first")
    image, info = read_crop(path, params.bit_depth, params.float_range, params.channel,
                            params.z_project)
    image, fit = fit_to_size(image, params.crop_size, params.on_size_mismatch)
    original = None
    if params.acquire_downsample:
        original = quantise(image)
        image = acquire_low_resolution(image, params.acquire_downsample, info["levels"])
    return quantise(image), original, info, fit


def cache_crops(candidates: list, raw_dir: Path, cache_dir: Path, params: DataParams,
                bad: BadFiles) -> list[dict]:
    """Read, check, fit and cache every candidate (and its hr original with acquisition);
    return the manifest rows."""
    factor = params.acquire_downsample
    hr_dir = cache_dir.with_name("hr")
    for folder in (cache_dir, hr_dir):
        if folder.exists():
            shutil.rmtree(folder)
    cache_dir.mkdir(parents=True)
    if factor:
        hr_dir.mkdir()
    rows = []
    with progress() as bar:
        task = bar.add_task("ingest", total=len(candidates), status="")
        for class_name, sample, group, path in candidates:
            bar.advance(task)
            try:
                image, original, info, fit = prepare_crop(path, raw_dir, params)
            except PlaneChoiceError as exc:  # the params must choose: skipping would hide it
                raise PipelineError(f"{path} {exc}") from None
            except AboveBitDepthError as exc:
                bad(path, f"{exc}; set data.bit_depth to the camera's bit depth, or auto")
                continue
            except BadImageError as exc:
                bad(path, str(exc))
                continue
            crop_id = f"c{len(rows):06d}"
            if original is not None:
                save_array_atomic(hr_dir / f"{crop_id}.npy", to_uint16(original)[None])
            save_array_atomic(cache_dir / f"{crop_id}.npy", to_uint16(image)[None])
            rows.append({"crop_id": crop_id, "path": path.relative_to(raw_dir).as_posix(),
                         "class_name": class_name, "label": int(class_name == params.positive),
                         "sample": sample, "group": group,
                         **{key: info[key] for key in MANIFEST_COLUMNS if key in info},
                         "levels": info["levels"], "fit": fit,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                         "cache_file": f"{crop_id}.npy"})
    return rows


def check_manifest(manifest: pd.DataFrame, raw_dir: Path, classes: list[str]) -> None:
    if manifest.empty:
        raise PipelineError(f"{raw_dir}: no usable crops")
    for class_name in classes:
        if not (manifest["class_name"] == class_name).any():
            raise PipelineError(f"class {class_name!r}: every crop was skipped; nothing to learn")
    groups_crossing = manifest.groupby("group")["class_name"].nunique()
    if (groups_crossing > 1).any():
        name = groups_crossing[groups_crossing > 1].index[0]
        raise PipelineError(f"group {name!r} appears under both classes; a sample belongs to one "
                            "class (check data.group_regex)")


def check_crop_sizes(paths: list[Path], params: DataParams) -> None:
    """Refuse crops of another size than data.crop_size, naming both, unless the params ask
    for resize or pad: a silent resize would throw away (or invent) resolution."""
    if params.on_size_mismatch != "error":
        return
    paths_by_size: dict[tuple[int, int], list[Path]] = {}
    for path in paths:
        if (size := stored_size(path)) is not None:
            paths_by_size.setdefault(size, []).append(path)
    sizes = Counter({size: len(found) for size, found in paths_by_size.items()})
    wanted = (params.crop_size, params.crop_size)
    if set(sizes) <= {wanted}:
        return
    shown = ", ".join(f"{h}x{w} px: {n}" for (h, w), n in sizes.most_common(4))
    if len(sizes) == 1:
        (height, width), = sizes
        fix = (f"set -S data.crop_size={height}" if height == width else
               "crops must be square; pad them with -S data.on_size_mismatch=pad")
        raise PipelineError(f"the crops are {height}x{width} px ({sizes[height, width]} of "
                            f"them) but data.crop_size is {params.crop_size}: {fix}, or "
                            f"-S data.on_size_mismatch=resize|pad to bring them to "
                            f"{params.crop_size} px")
    rarest = min(sizes, key=lambda size: (sizes[size], size))
    odd = ", ".join(str(path) for path in sorted(paths_by_size[rarest])[:3])
    raise PipelineError(f"the crops come in {len(sizes)} sizes ({shown}) and data.crop_size "
                        f"is {params.crop_size}: -S data.on_size_mismatch=resize|pad brings "
                        f"them all to {params.crop_size} px (reports/ingest/metrics.json counts "
                        f"them), or remove the odd ones ({rarest[0]}x{rarest[1]} px: {odd}"
                        f"{', ...' if sizes[rarest] > 3 else ''})")


def resolved_data_params(candidates: list, params: DataParams) -> tuple[DataParams, str]:
    """params with data.bit_depth: auto replaced by the depth the data shows, and where
    that came from. Files that cannot be read are left to the main pass, which names them."""
    if params.bit_depth != "auto":
        return params, "data.bit_depth"
    peaks, choice = [], PlaneChoice(params.channel, params.z_project)
    for *_, path in candidates:
        try:
            peaks.append(raw_peak(path, choice))
        except PlaneChoiceError as exc:  # fail on the first such file, before the main pass
            raise PipelineError(f"{path} {exc}") from None
        except BadImageError:
            continue
    try:
        bits, source = resolve_bit_depth(peaks)
    except BadImageError as exc:
        raise PipelineError(f"data.bit_depth auto: {exc}") from None
    return dataclasses.replace(params, bit_depth=bits), source


def ingest_crops(raw_dir: Path, cache_dir: Path, params: DataParams) -> IngestResult:
    """Read every crop, normalise it, write it to cache_dir; return manifest and metrics.

    With data.acquire_downsample k > 0, cache_dir holds each crop as acquired at 1/k
    resolution and a sibling `hr` folder the original, under the same file name.
    """
    check_raw_dir(raw_dir)
    classes = find_class_folders(raw_dir, params.positive)
    bad = BadFiles(params.on_bad_file)
    candidates, ignored = collect_candidates(raw_dir, classes, params, bad)
    # The header passes never open a link to outside the data folder (the main pass
    # refuses it by name): its size or bit depth must not decide anything.
    own = [item for item in candidates if not links_outside(item[-1], raw_dir)]
    check_crop_sizes([path for *_, path in own], params)
    params, bit_depth_source = resolved_data_params(own, params)
    manifest = pd.DataFrame(cache_crops(candidates, raw_dir, cache_dir, params, bad),
                            columns=MANIFEST_COLUMNS)
    check_manifest(manifest, raw_dir, classes)
    fits = manifest["fit"].value_counts()
    metrics = {"crops": len(manifest), "groups": int(manifest["group"].nunique()),
               "sample_folders": int(manifest["sample"].nunique()),
               "skipped_files": len(bad.problems), "ignored_files": sum(ignored.values()),
               "ignored_extensions": ", ".join(f"{n} {ext}"
                                               for ext, n in sorted(ignored.items())),
               "resized": int(fits.get("resized", 0)), "padded": int(fits.get("padded", 0)),
               "positive_class": params.positive, "acquire_downsample": params.acquire_downsample,
               "acquired_size": params.crop_size // max(params.acquire_downsample, 1),
               "bit_depth": params.bit_depth, "bit_depth_source": bit_depth_source,
               "manifest_sha256": manifest_digest(manifest, params)}
    for class_name in classes:
        part = manifest[manifest["class_name"] == class_name]
        metrics[f"crops_{class_name}"] = len(part)
        metrics[f"groups_{class_name}"] = int(part["group"].nunique())
    acquisition, warnings = acquisition_metrics(manifest)
    return IngestResult(manifest, metrics | acquisition, bad.problems, warnings)
