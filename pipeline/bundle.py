"""Export one trained backbone as a portable bundle: a single file that classifies new crops.

`data/bundles/<backbone>.pt` holds plain tensors, numbers, strings, lists and dicts only,
so `torch.load(path, weights_only=True)` reads it and nothing in it can execute code:
the classifier's weights and architecture, how a crop is read and normalised, the input
kind (with the SR generator's weights and config for `sr`), the thresholds chosen on the
validation split, class names, package versions, every param and the training data's
hash. `pipeline.predict` applies it with no other file of the repository.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import pickle
from pathlib import Path

import torch
import yaml

from pipeline.common import (
    PipelineError,
    atomic_path,
    console,
    read_crop_table,
    stage_main,
    write_json_atomic,
)
from pipeline.config import DataParams, Params, PreprocessParams, _build, arrival_size, load_params
from pipeline.datasets import classifier_image_size, sr_storage_size

BUNDLE_FORMAT = "tdp43-classifier-bundle"
BUNDLE_VERSION = 1
VERSIONED_PACKAGES = ("torch", "torchvision", "basicsr")


class BundleError(PipelineError):
    """A bundle that cannot be applied; the message is one line that says why."""


def package_versions() -> dict[str, str | None]:
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    return versions


def public_version(version: str | None) -> str | None:
    """'0.29.1+cu130' -> '0.29.1': the local build tag does not change the architectures."""
    return None if version is None else version.split("+")[0]


def build_bundle(backbone: str, classifier_state: dict, params: Params, raw_params: dict,
                 thresholds: dict, class_names: tuple[str, str], data_sha256: str,
                 generator: dict | None, bit_depth: int, bit_depth_source: str = "") -> dict:
    """The bundle as a dict of plain values (see the module docstring).

    `generator` is train_sr's generator file ({model, config, name}); it is kept only when
    the classifier reads SR images. `bit_depth` is the one ingest used (data.bit_depth auto
    resolved over the training data), so new crops are scaled exactly as those were.
    """
    cp = params.classifier
    bundle = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION,
        "backbone": backbone,
        "classifier_state": {k: v.detach().cpu().contiguous() for k, v in
                             classifier_state.items()},
        "input": cp.input,
        "image_size": classifier_image_size(params),
        "arrival_size": arrival_size(params),
        # Intensity: read_crop's full scale (8-bit files / 255, wider ones / 2**bit_depth - 1,
        # floats from data.float_range), the uint16 cache grid, then the model's own grey
        # mean/std (also buffers in the state).
        "normalisation": {"reader": "images.read_crop", "cache": "uint16",
                          "bit_depth": int(bit_depth), "bit_depth_source": str(bit_depth_source),
                          "classifier_mean": float(classifier_state["mean"].item()),
                          "classifier_std": float(classifier_state["std"].item())},
        "data": {**{key: raw_params["data"][key] for key in
                    ("group_regex", "extensions", "crop_size", "on_size_mismatch",
                     "acquire_downsample", "positive", "float_range", "channel")},
                 "bit_depth": int(bit_depth)},
        "preprocess": dict(raw_params["preprocess"]),
        "inference": {"precision": cp.precision, "channels_last": cp.channels_last,
                      "batch": cp.eval_batch_size},
        "sr_scale": params.sr.scale,
        "sr": None,
        "thresholds": {"rule": str(thresholds["rule"]), "crop": float(thresholds["crop"]),
                       "sample": float(thresholds["sample"])},
        "class_names": [str(class_names[0]), str(class_names[1])],
        "positive_class": str(class_names[1]),
        "versions": package_versions(),
        "params": {key: value for key, value in raw_params.items() if key != "predict"},
        "training_data_sha256": data_sha256,
    }
    if cp.input == "sr":
        if generator is None:
            raise PipelineError("classifier.input is sr but no generator was given")
        bundle["sr"] = {"state": {k: v.detach().cpu().contiguous()
                                  for k, v in generator["model"].items()},
                        "config": dict(generator["config"]),
                        "name": str(generator.get("name", "unknown")),
                        "tile": params.sr.tile, "tile_overlap": params.sr.tile_overlap,
                        "batch": params.sr.infer_batch, "precision": params.sr.precision,
                        "store_size": sr_storage_size(params)}
    return bundle


def load_bundle(path: Path, check_versions: bool = True) -> dict:
    """Read and check a bundle; raise BundleError with one line for each way it can be wrong:
    a missing, truncated or damaged file, a pickle payload (refused, never executed), another
    format, another torchvision, or an SR generator whose scale is not the one its
    classifier was trained on."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: bundle not found")
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise BundleError(f"{path}: refused - it holds Python objects that loading with "
                          f"weights_only=True does not allow ({first}); a bundle holds only "
                          "tensors, numbers and strings, and nothing in it is executed") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise BundleError(f"{path}: not a complete bundle file (truncated or damaged: "
                          f"{type(exc).__name__}: {first}); export it again") from None
    try:
        return _checked(path, bundle, check_versions)
    except (KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{path}: an incomplete bundle (no {exc}); export it again") from None


def _checked(path: Path, bundle, check_versions: bool) -> dict:
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not a classifier bundle from pipeline.bundle (no "
                          f"'format: {BUNDLE_FORMAT}'); a model.pt is not a bundle - run the "
                          "export stage")
    if bundle.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{path}: bundle format version {bundle.get('format_version')}, "
                          f"this code reads version {BUNDLE_VERSION}")
    if check_versions:
        made_with = public_version(bundle["versions"].get("torchvision"))
        here = public_version(package_versions()["torchvision"])
        if made_with != here:
            raise BundleError(f"{path}: made with torchvision {made_with}, this environment has "
                              f"{here}; architectures can differ between versions - install "
                              f"torchvision=={made_with} (or pass --ignore-versions to try)")
    if bundle["input"] == "sr":
        sr = bundle.get("sr")
        if not sr:
            raise BundleError(f"{path}: input is sr but the bundle holds no SR generator")
        if sr["config"]["scale"] != bundle["sr_scale"]:
            raise BundleError(f"{path}: SR generator is x{sr['config']['scale']} but its "
                              f"classifier was trained on x{bundle['sr_scale']} images; "
                              "export the bundle again from one run")
    return bundle


def bundle_data_params(bundle: dict) -> DataParams:
    """How the bundle's training crops were read, as DataParams (what ingest used)."""
    data = dict(bundle["data"], raw_dir="", on_bad_file="error")
    return _build(DataParams, data, "data.")


def bundle_preprocess(bundle: dict) -> PreprocessParams:
    return _build(PreprocessParams, dict(bundle["preprocess"]), "preprocess.")


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--model", type=Path, required=True, help="train_classifier's model.pt")
    parser.add_argument("--eval-metrics", type=Path, required=True,
                        help="evaluate's metrics.json (the validation thresholds)")
    parser.add_argument("--generator", type=Path, required=True, help="train_sr's generator.pt")
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--ingest-metrics", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="data/bundles/<backbone>.pt")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    raw_params = yaml.safe_load(args.params.read_text())
    from pipeline.explain import class_names_from

    saved = torch.load(args.model, map_location="cpu", weights_only=True)
    generator = (torch.load(args.generator, map_location="cpu", weights_only=True)
                 if params.classifier.input == "sr" else None)
    thresholds = json.loads(args.eval_metrics.read_text())["threshold"]
    ingested = json.loads(args.ingest_metrics.read_text())
    class_names = class_names_from(read_crop_table(args.split))
    bundle = build_bundle(args.backbone, saved["model"], params, raw_params, thresholds,
                          class_names, ingested["manifest_sha256"],
                          generator, ingested["bit_depth"], ingested["bit_depth_source"])
    with atomic_path(args.out) as staging:
        torch.save(bundle, staging)
        load_bundle(staging)  # only a file that reads back and passes every check replaces
    size_mb = round(args.out.stat().st_size / 2**20, 3)
    write_json_atomic(args.metrics, {"backbone": args.backbone, "bundle_mb": size_mb,
                                     "input": bundle["input"],
                                     "threshold_crop": bundle["thresholds"]["crop"],
                                     "threshold_sample": bundle["thresholds"]["sample"]})
    console.print(f"export: {args.out} ({size_mb} MB, input {bundle['input']}, thresholds "
                  f"crop {bundle['thresholds']['crop']:.3g} / sample "
                  f"{bundle['thresholds']['sample']:.3g})")


if __name__ == "__main__":
    main()
