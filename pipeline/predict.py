"""Classify new, unlabelled patients' crops with one or more exported bundles.

    python -m pipeline.predict --bundle data/bundles/resnet50.pt --input DIR --out OUTDIR

DIR holds sample folders (`<sample>_crops[N]_r/<crop>.tif|tiff|png`), or class folders of
them (their names are ignored: predict never uses labels). Every crop goes through
ingest's own checks and normalisation (`ingest.prepare_crop`), then the bundle's SR or
bicubic step, its resizing and preprocessing, and its classifier. Writes OUTDIR/crops.csv
(path, sample, prob, prediction) and OUTDIR/samples.csv (sample, n_crops, prob,
prediction, threshold, backbone), the sample's prob being the mean of its crops' as in
evaluate, decided at the sample threshold chosen on validation. With several bundles
each gets its own columns (`prob_<backbone>`, ...) plus their mean (`prob_mean`, decided
at the mean of their thresholds).
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.classifier import build_classifier
from pipeline.bundle import BundleError, bundle_data_params, bundle_preprocess, load_bundle
from pipeline.common import (
    PipelineError,
    atomic_path,
    console,
    progress,
    stage_main,
    write_csv_atomic,
)
from pipeline.config import DataParams
from pipeline.datasets import on_cache_grid, sr_as_stored, to_classifier_size
from pipeline.device import resolve_device
from pipeline.images import AboveBitDepthError, BadImageError
from pipeline.inference import decide, predict_proba, sample_predictions
from pipeline.ingest import BadFiles, collect_sample_crops, prepare_crop
from pipeline.preprocess import preprocess_images
from pipeline.tiling import bicubic_upscale


def find_sample_folders(input_dir: Path, group_regex: str) -> list[Path]:
    """The sample folders in `input_dir`, directly or one class-folder level down."""
    if not input_dir.is_dir():
        raise PipelineError(f"--input: folder not found: {input_dir}")
    pattern = re.compile(group_regex)
    folders = []
    for child in sorted(p for p in input_dir.iterdir() if not p.name.startswith(".")):
        if not child.is_dir():
            continue  # a stray file beside the sample folders (a README, a CSV)
        if pattern.match(child.name):
            folders.append(child)
            continue
        inner = sorted(p for p in child.iterdir() if p.is_dir() and not p.name.startswith("."))
        if inner and all(pattern.match(p.name) for p in inner):
            folders += inner  # a class folder: its name is not used
            continue
        raise PipelineError(f"{child}: neither a sample folder matching data.group_regex "
                            f"{group_regex!r} (the bundle's) nor a folder of sample folders")
    if not folders:
        raise PipelineError(f"{input_dir}: no sample folders matching {group_regex!r}")
    return folders


class BundleClassifier:
    """A loaded bundle on a device: crops as ingest prepared them in, P(positive) out."""

    def __init__(self, bundle: dict, device: torch.device, path: Path):
        try:
            self._build(bundle, device)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise BundleError(f"{path}: cannot build its {bundle.get('backbone')} model "
                              f"({type(exc).__name__}: {first})") from None
        fp16 = [part for part, precision in (
            ("classifier", bundle["inference"]["precision"]),
            ("SR generator", (bundle.get("sr") or {}).get("precision"))) if precision == "fp16"]
        if fp16 and device.type != "cuda":
            raise BundleError(f"{path}: the bundle's {' and '.join(fp16)} runs in fp16, which "
                              "needs CUDA; pass --device cuda")

    def _build(self, bundle: dict, device: torch.device) -> None:
        self.bundle, self.device = bundle, device
        self.backbone = bundle["backbone"]
        self.data: DataParams = bundle_data_params(bundle)
        self.preprocess = bundle_preprocess(bundle)
        model, _ = build_classifier(self.backbone, "none")
        model.load_state_dict(bundle["classifier_state"])
        self.channels_last = bool(bundle["inference"]["channels_last"])
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(device).eval()
        self.generator = None
        if bundle["input"] == "sr":
            from pipeline.sr_metrics import generator_from_state

            sr = bundle["sr"]
            self.generator = generator_from_state(sr["state"], sr["config"]).to(device)

    def images(self, acquired: list[np.ndarray], originals: list[np.ndarray | None]
               ) -> torch.Tensor:
        """The classifier's input for these crops, made as the training stages made it:
        the uint16 cache grid after each step that writes images (ingest, sr_infer)."""
        kind = self.bundle["input"]
        stack = originals if kind == "hr" else acquired
        batch = torch.from_numpy(np.stack(stack))[:, None]
        scale = self.bundle["sr_scale"]
        if kind == "sr":
            from pipeline.tiling import upscale_tiled

            sr = self.bundle["sr"]
            batch = upscale_tiled(self.generator, batch, scale, sr["tile"], sr["tile_overlap"],
                                  sr["batch"], sr["precision"])
            # as sr_infer stored it (bundles from before store_size: at full size)
            batch = sr_as_stored(batch.cpu(), sr.get("store_size", batch.shape[-1]))
        elif kind == "bicubic":  # as the training stages make it at load time
            batch = on_cache_grid(bicubic_upscale(batch, scale))
        batch = to_classifier_size(batch, self.bundle["image_size"])
        return preprocess_images(batch, self.preprocess)

    def probabilities(self, images: torch.Tensor) -> np.ndarray:
        inference = self.bundle["inference"]
        return predict_proba(self.model, images, self.device, inference["batch"],
                             inference["precision"], self.channels_last)


def classify_folder(classifier: BundleClassifier, input_dir: Path, on_bad_file: str
                    ) -> tuple[pd.DataFrame, list[dict], dict[str, int]]:
    """(crops: path, sample, prob), the skipped files, and files left out by extension."""
    bad = BadFiles(on_bad_file, "pass --on-bad-file skip")
    folders = find_sample_folders(input_dir, classifier.data.group_regex)
    found, ignored = collect_sample_crops(folders, classifier.data, bad)
    rows, batch = [], []
    step = classifier.bundle["inference"]["batch"]

    def flush() -> None:
        if not batch:
            return
        images = classifier.images([b[2] for b in batch], [b[3] for b in batch])
        for (path, group, _, _), prob in zip(batch, classifier.probabilities(images)):
            rows.append({"path": path.relative_to(input_dir).as_posix(), "sample": group,
                         "prob": float(prob)})
        batch.clear()

    with progress() as bar:
        task = bar.add_task(f"predict {classifier.backbone}", total=len(found), status="")
        for _, group, path in found:
            try:
                acquired, original, _, _ = prepare_crop(path, input_dir, classifier.data)
            except AboveBitDepthError as exc:
                norm = classifier.bundle["normalisation"]
                bad(path, f"{exc}; the bundle scales intensities as its training data was "
                          f"scaled ({norm['bit_depth']} bits: "
                          f"{norm.get('bit_depth_source', '')}), and brighter crops cannot be "
                          "put on that scale")
                bar.advance(task)
                continue
            except BadImageError as exc:
                bad(path, str(exc))
                bar.advance(task)
                continue
            batch.append((path, group, acquired, original))
            if len(batch) >= step:
                flush()
            bar.advance(task)
        flush()
    if not rows:
        raise PipelineError(f"{input_dir}: no usable crops")
    return pd.DataFrame(rows), bad.problems, ignored


def combine(per_bundle: dict[str, pd.DataFrame], bundles: dict[str, dict]
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """crops.csv and samples.csv from each bundle's crop probabilities."""
    names = {tuple(b["class_names"]) for b in bundles.values()}
    if len(names) > 1:
        raise PipelineError(f"the bundles name their classes differently ({sorted(names)}); "
                            "combine bundles trained on the same classes")
    class_names = list(names.pop())
    if len(per_bundle) == 1:
        (backbone, crops), = per_bundle.items()
        bundle = bundles[backbone]
        crops = crops.assign(prediction=np.asarray(class_names)[
            decide(crops["prob"], bundle["thresholds"]["crop"])])
        samples = sample_predictions(crops.rename(columns={"sample": "group"}), class_names,
                                     bundle["thresholds"]["sample"], backbone)
        return crops[["path", "sample", "prob", "prediction"]], samples

    crops = None
    for backbone, frame in per_bundle.items():
        part = frame.rename(columns={"prob": f"prob_{backbone}"})
        crops = part if crops is None else crops.merge(part, on=["path", "sample"], how="outer")
    backbones = list(per_bundle)
    # a crop one bundle left out (its own data settings refused it) has no mean
    crops["prob_mean"] = crops[[f"prob_{b}" for b in backbones]].mean(axis=1, skipna=False)
    cuts = {b: bundles[b]["thresholds"] for b in backbones}
    cuts["mean"] = {level: float(np.mean([bundles[b]["thresholds"][level] for b in backbones]))
                    for level in ("crop", "sample")}
    samples = None
    for name in [*backbones, "mean"]:
        scored = crops[f"prob_{name}"].notna()
        crops[f"prediction_{name}"] = np.where(
            scored, np.asarray(class_names)[decide(crops[f"prob_{name}"].fillna(0.0),
                                                   cuts[name]["crop"])], "")
        table = sample_predictions(
            crops.dropna(subset=[f"prob_{name}"]).rename(columns={"sample": "group",
                                                                   f"prob_{name}": "prob"}),
            class_names, cuts[name]["sample"], name)
        table = table.drop(columns="backbone").rename(
            columns={"prob": f"prob_{name}", "prediction": f"prediction_{name}",
                     "threshold": f"threshold_{name}", "n_crops": f"n_crops_{name}"})
        samples = table if samples is None else samples.merge(table, on="sample", how="outer")
    samples = samples.rename(columns={"n_crops_mean": "n_crops"}).drop(
        columns=[f"n_crops_{b}" for b in backbones])
    ordered = ["sample", "n_crops"] + [c for c in samples.columns if c not in ("sample",
                                                                              "n_crops")]
    crop_columns = ["path", "sample"] + [f"{kind}_{name}" for name in [*backbones, "mean"]
                                         for kind in ("prob", "prediction")]
    return crops[crop_columns], samples[ordered]


def bundle_paths(given: list[Path], params_path: Path) -> list[Path]:
    """--bundle values; a folder means its `<backbone>.pt` for classifier.backbones of the
    params file when there is one (so a stale bundle of a dropped backbone is not used),
    else every .pt in it."""
    paths = []
    for path in given:
        if not path.is_dir():
            paths.append(path)
            continue
        if params_path.is_file():
            from pipeline.config import load_params

            paths += [path / f"{b}.pt" for b in load_params(params_path).classifier.backbones]
        else:
            paths += sorted(path.glob("*.pt"))
    if not paths:
        raise PipelineError("no bundles given (--bundle FILE, or a folder of bundles)")
    return paths


OWN_OUTPUTS = {"crops.csv", "samples.csv", "bad_files.csv"}


def check_output_folder(out: Path, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse an --out that --overwrite would make predict delete more than its own
    earlier outputs with: the input crops, a bundle, or anything else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise PipelineError(f"{out}: a file, not a folder; --out names a folder")
    if not overwrite:
        raise PipelineError(f"{out}: exists; pass --overwrite to replace it")
    target = out.resolve()
    for path in inputs:
        if path.resolve() == target or target in path.resolve().parents:
            raise PipelineError(f"--out {out} holds the input {path}; --overwrite would "
                                "delete it. Write the predictions to another folder")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_OUTPUTS)
    if foreign:
        raise PipelineError(f"--out {out} holds files predict did not write (e.g. "
                            f"{', '.join(foreign[:3])}); --overwrite replaces only a folder "
                            "of predict's own outputs. Choose an empty or new folder")


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, action="append", required=True,
                        help="a bundle file (repeat for several), or a folder of them")
    parser.add_argument("--input", type=Path, required=True, help="folder of sample folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--on-bad-file", choices=("error", "skip"), default="error",
                        help="skip: leave bad crops out, listed in OUTDIR/bad_files.csv")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--ignore-versions", action="store_true",
                        help="apply a bundle made with another torchvision")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="only to pick bundles from a folder (classifier.backbones)")
    args = parser.parse_args()
    paths = bundle_paths(args.bundle, args.params)
    check_output_folder(args.out, args.overwrite, [args.input, *paths])
    # every bundle is checked before any crop is read: a bad one costs nothing
    bundles = {}
    for path in paths:
        bundle = load_bundle(path, check_versions=not args.ignore_versions)
        if bundle["backbone"] in bundles:
            raise BundleError(f"{path}: a second {bundle['backbone']} bundle; give each "
                              "backbone once")
        bundles[bundle["backbone"]] = bundle
    device = resolve_device(args.device)
    classifiers = {backbone: BundleClassifier(bundle, device, path)
                   for (backbone, bundle), path in zip(bundles.items(), paths)}
    per_bundle, problems, ignored, started = {}, {}, {}, time.perf_counter()
    for backbone, classifier in classifiers.items():
        crops, skipped, ignored = classify_folder(classifier, args.input, args.on_bad_file)
        per_bundle[backbone] = crops
        for problem in skipped:  # the same file refused by several bundles is listed once
            entry = problems.setdefault(problem["path"], {**problem, "backbones": []})
            entry["backbones"].append(backbone)
    problems = [{**entry, "backbones": " ".join(entry["backbones"])}
                for entry in problems.values()]
    seconds = time.perf_counter() - started
    crops, samples = combine(per_bundle, bundles)
    with atomic_path(args.out) as staging:
        staging.unlink()
        write_csv_atomic(staging / "crops.csv", crops)
        write_csv_atomic(staging / "samples.csv", samples)
        if problems:
            write_csv_atomic(staging / "bad_files.csv",
                             pd.DataFrame(problems, columns=["path", "problem", "backbones"]))
        if args.out.exists():
            shutil.rmtree(args.out)
    left_out = ", ".join(f"{n} {ext}" for ext, n in sorted(ignored.items()))
    console.print(f"predict: {len(crops)} crops of {len(samples)} samples with "
                  f"{', '.join(bundles)} on {device}: "
                  f"{len(crops) * len(bundles) / max(seconds, 1e-9):.1f} crops/s; "
                  f"{len(problems)} bad files skipped"
                  + (f", left out by extension: {left_out}" if left_out else "")
                  + f" -> {args.out}/samples.csv")


if __name__ == "__main__":
    main()
