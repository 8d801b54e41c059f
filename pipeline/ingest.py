"""Ingest: raw `<class>/<sample>_crops[N]_r/<crop>` folders -> manifest + normalised crop cache."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.common import (
    PipelineError,
    atomic_path,
    bytes_under,
    check_raw_dir,
    console,
    progress,
    save_array_atomic,
    stage_main,
    write_csv_atomic,
    write_environment,
    write_json_atomic,
)
from pipeline.config import DataParams, load_params
from pipeline.images import (
    AboveBitDepthError,
    BadImageError,
    acquire_low_resolution,
    fit_to_size,
    quantise,
    raw_peak,
    read_crop,
    resolve_bit_depth,
    to_uint16,
)

MANIFEST_COLUMNS = ["crop_id", "path", "class_name", "label", "sample", "group", "height",
                    "width", "channels", "dtype", "levels", "fit", "sha256", "cache_file"]


@dataclass
class IngestResult:
    manifest: pd.DataFrame
    metrics: dict
    problems: list[dict] = field(default_factory=list)


def find_class_folders(raw_dir: Path, positive: str) -> list[str]:
    classes = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) != 2:
        raise PipelineError(f"{raw_dir}: expected exactly 2 class folders, found {len(classes)}"
                            f" ({', '.join(classes) or 'none'})")
    if positive not in classes:
        raise PipelineError(f"data.positive: class folder {positive!r} not found in {raw_dir} "
                            f"(found {', '.join(classes)}); set -S data.positive=<folder>")
    return classes


def manifest_digest(manifest: pd.DataFrame, params: DataParams) -> str:
    """Names the data a run used: every file's bytes, class and sample, and how it was cached.

    Tables that put experiments side by side group them by this, so figures from two
    datasets (or two acquisition settings) are never mixed.
    """
    digest = hashlib.sha256(f"{params.crop_size}|{params.acquire_downsample}|"
                            f"{params.on_size_mismatch}|{params.positive}|{params.bit_depth}|"
                            f"{params.float_range}|{params.channel}".encode())
    for row in manifest[["path", "class_name", "group", "sha256"]].itertuples(index=False):
        digest.update("|".join(row).encode())
    return digest.hexdigest()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


class BadFiles:
    """Where a bad file goes: an error (data.on_bad_file: error) or the skipped list."""

    def __init__(self, on_bad_file: str, how_to_skip: str = "set data.on_bad_file: skip"):
        self.on_bad_file, self.how_to_skip, self.problems = on_bad_file, how_to_skip, []

    def __call__(self, path: Path, why: str) -> None:
        if self.on_bad_file == "error":
            raise PipelineError(f"{path}: {why} ({self.how_to_skip} to leave it out)")
        self.problems.append({"path": str(path), "problem": why})


def collect_sample_crops(sample_dirs: list[Path], params: DataParams,
                         bad: BadFiles) -> tuple[list[tuple[str, str, Path]], dict[str, int]]:
    """Every crop file of the sample folders as (sample folder, group, path), and the files
    left out for their extension, counted per extension. Ingest and predict share it."""
    group_pattern = re.compile(params.group_regex)
    extensions = {e.lower() for e in params.extensions}
    crops_found, ignored = [], {}
    for sample_dir in sample_dirs:
        if sample_dir.name.startswith("."):
            continue
        if not sample_dir.is_dir():
            bad(sample_dir, "a file where sample folders belong; crops belong in "
                            "<sample>_crops_r/")
            continue
        match = group_pattern.match(sample_dir.name)
        if not match:
            raise PipelineError(
                f"{sample_dir}: folder name does not match data.group_regex "
                f"{params.group_regex} (sample folders are named <sample>_crops_r or "
                f"<sample>_crops2_r). Rename the folder, or use the whole folder name as the "
                f"sample: dvc exp run -S \"data.group_regex='^(?P<group>.+)$'\"")
        files = [p for p in sorted(sample_dir.iterdir())
                 if not p.name.startswith(".") and not p.is_dir()]
        crops = [p for p in files if p.suffix.lower() in extensions]
        for other in files:
            if other.suffix.lower() not in extensions:
                suffix = other.suffix.lower() or "(none)"
                ignored[suffix] = ignored.get(suffix, 0) + 1
        if not crops:
            bad(sample_dir, f"sample folder holds no crops ({', '.join(sorted(extensions))})")
            continue
        crops_found += [(sample_dir.name, match.group("group"), p) for p in crops]
    return crops_found, ignored


def collect_candidates(raw_dir: Path, classes: list[str], params: DataParams, bad: BadFiles
                       ) -> tuple[list[tuple[str, str, str, Path]], dict[str, int]]:
    """Every crop file as (class, sample folder, group, path), and the files with other
    extensions counted per extension; collected first so the progress bar knows its total."""
    candidates, ignored = [], {}
    for class_name in classes:
        found, left_out = collect_sample_crops(sorted((raw_dir / class_name).iterdir()),
                                               params, bad)
        candidates += [(class_name, sample, group, path) for sample, group, path in found]
        for suffix, count in left_out.items():
            ignored[suffix] = ignored.get(suffix, 0) + count
    return candidates, ignored


def prepare_crop(path: Path, root: Path, params: DataParams) -> tuple[
        np.ndarray, np.ndarray | None, dict, str]:
    """One crop as the classifier's side of the pipeline stores it: (acquired, original or
    None, what was on disk, how it was fitted), both quantised to the uint16 cache's grid.

    Raises BadImageError with a one-line reason. Ingest and predict both call this, so a new
    patient's crop is checked and normalised exactly as the training crops were.
    """
    if path.is_symlink() and not _inside(path, root):
        raise BadImageError(f"symlink pointing outside the data folder ({os.readlink(path)}); "
                            "refused")
    if params.bit_depth == "auto":
        raise ValueError("resolve data.bit_depth: auto (ingest.resolved_data_params) first")
    image, info = read_crop(path, params.bit_depth, params.float_range, params.channel)
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
                         "sample": sample, "group": group, "height": info["height"],
                         "width": info["width"], "channels": info["channels"],
                         "dtype": info["dtype"], "levels": info["levels"], "fit": fit,
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


def resolved_data_params(candidates: list, params: DataParams) -> tuple[DataParams, str]:
    """params with data.bit_depth: auto replaced by the depth the data shows, and where
    that came from. Files that cannot be read are left to the main pass, which names them."""
    if params.bit_depth != "auto":
        return params, "data.bit_depth"
    peaks = []
    for *_, path in candidates:
        try:
            peaks.append(raw_peak(path, params.channel))
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
    params, bit_depth_source = resolved_data_params(candidates, params)
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
    return IngestResult(manifest, metrics, bad.problems)


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for manifest + cache")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True, help="CSV of skipped files")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)

    # Build into a temporary folder and swap it in at the end: a failed ingest leaves the
    # previous output whole (or nothing), never a mix.
    with atomic_path(args.out) as staging:
        staging.unlink()
        result = ingest_crops(args.raw_dir, staging / "crops", params.data)
        write_csv_atomic(staging / "manifest.csv", result.manifest)
        result.metrics["bytes_written"] = bytes_under(staging)
        if args.out.exists():
            shutil.rmtree(args.out)
    write_csv_atomic(args.report, pd.DataFrame(result.problems, columns=["path", "problem"]))
    write_json_atomic(args.metrics, result.metrics)
    write_environment(args.metrics)
    m = result.metrics
    console.print(f"ingest: {m['crops']} crops in {m['groups']} groups, {m['skipped_files']} "
                  "skipped" + (f"; left out by extension (not in data.extensions): "
                               f"{m['ignored_extensions']}" if m["ignored_files"] else ""))


if __name__ == "__main__":
    main()
