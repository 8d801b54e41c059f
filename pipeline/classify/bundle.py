"""The portable bundle of one trained backbone: a single file that classifies new crops.

`data/bundles/<backbone>.pt` holds plain tensors, numbers, strings, lists and dicts only,
so `torch.load(path, weights_only=True)` reads it and nothing in it can execute code:
the classifier's weights and architecture, how a crop is read and normalised, the input
kind (with the SR generator's weights and config for `sr`), the thresholds chosen on the
validation split, class names, every param and the training data's hash. No package
versions or machine names: an output under data/ must not differ from one machine to
the next (a bundle made with another torchvision is caught by its weights not fitting).
The predict stage applies it with no other file of the repository.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from models.classifier import build_classifier
from pipeline.classify.inference import predict_proba
from pipeline.classify.preprocess import preprocess_images
from pipeline.cli import PipelineError, first_line
from pipeline.config import (
    DataParams,
    Params,
    PreprocessParams,
    _build,
    arrival_size,
    classifier_image_size,
    sr_storage_size,
)
from pipeline.data.tensors import bicubic_upscale, on_cache_grid, sr_as_stored, to_classifier_size

BUNDLE_FORMAT = "tdp43-classifier-bundle"

BUNDLE_VERSION = 2  # 2: no package versions; the weights are checked against the architecture


class BundleError(PipelineError):
    """A bundle that cannot be applied; the message is one line that says why."""


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
        "normalisation": {"reader": "images.read_crop (tifffile for TIFF, Pillow otherwise)",
                          "cache": "uint16",
                          "bit_depth": int(bit_depth), "bit_depth_source": str(bit_depth_source),
                          "classifier_mean": float(classifier_state["mean"].item()),
                          "classifier_std": float(classifier_state["std"].item())},
        "data": {**{key: raw_params["data"][key] for key in
                    ("group_regex", "extensions", "crop_size", "on_size_mismatch",
                     "acquire_downsample", "positive", "float_range", "channel",
                     "z_project")},
                 "bit_depth": int(bit_depth)},
        "preprocess": dict(raw_params["preprocess"]),
        "inference": {"precision": cp.precision, "channels_last": cp.channels_last,
                      "batch": cp.eval_batch_size},
        "sr_scale": params.sr.scale,
        "sr": None,
        "thresholds": {"rule": str(thresholds["rule"]), "crop": float(thresholds["crop"]),
                       "group": float(thresholds["group"])},
        "class_names": [str(class_names[0]), str(class_names[1])],
        "positive_class": str(class_names[1]),
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


def load_bundle(path: Path) -> dict:
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
        first = first_line(exc, 160)
        raise BundleError(f"{path}: refused - it holds Python objects that loading with "
                          f"weights_only=True does not allow ({first}); a bundle holds only "
                          "tensors, numbers and strings, and nothing in it is executed") from None
    except Exception as exc:
        first = first_line(exc, 160)
        raise BundleError(f"{path}: not a complete bundle file (truncated or damaged: "
                          f"{type(exc).__name__}: {first}); export it again") from None
    try:
        return _checked(path, bundle)
    except (KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{path}: an incomplete bundle (no {exc}); export it again") from None


def _checked(path: Path, bundle) -> dict:
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not a classifier bundle from the export stage (no "
                          f"'format: {BUNDLE_FORMAT}'); a model.pt is not a bundle - run the "
                          "export stage")
    if bundle.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{path}: bundle format version {bundle.get('format_version')}, "
                          f"this code reads version {BUNDLE_VERSION}")
    mismatch = architecture_mismatch(bundle["backbone"], bundle["classifier_state"])
    if mismatch:
        raise BundleError(f"{path}: its {bundle['backbone']} weights do not fit this "
                          f"torchvision's {bundle['backbone']} ({mismatch}); export the bundle "
                          "again in this environment, or install the torchvision it was made "
                          "with")
    if bundle["input"] == "sr":
        sr = bundle.get("sr")
        if not sr:
            raise BundleError(f"{path}: input is sr but the bundle holds no SR generator")
        if sr["config"]["scale"] != bundle["sr_scale"]:
            raise BundleError(f"{path}: SR generator is x{sr['config']['scale']} but its "
                              f"classifier was trained on x{bundle['sr_scale']} images; "
                              "export the bundle again from one run")
    return bundle


def architecture_mismatch(backbone: str, state: dict) -> str:
    """'' if `state` fits this environment's `backbone` parameter for parameter, else the
    first difference in words (architectures can change between torchvision versions)."""
    expected = build_classifier(backbone, "none")[0].state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        return (f"{len(missing)} tensors missing, e.g. {missing[:1]}, {len(unexpected)} "
                f"unexpected, e.g. {unexpected[:1]}")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            return f"{name} is {tuple(state[name].shape)}, expected {tuple(tensor.shape)}"
    return ""


def bundle_data_params(bundle: dict) -> DataParams:
    """How the bundle's training crops were read, as DataParams (what ingest used)."""
    # Bundles from before data.z_project read a stack's first plane in silence; none
    # refuses stacks, as ingest now does.
    data = dict({"z_project": "none"}, **bundle["data"], raw_dir="", on_bad_file="error")
    return _build(DataParams, data, "data.")


def bundle_preprocess(bundle: dict) -> PreprocessParams:
    return _build(PreprocessParams, dict(bundle["preprocess"]), "preprocess.")


class BundleClassifier:
    """A loaded bundle on a device: crops as ingest prepared them in, P(positive) out."""

    def __init__(self, bundle: dict, device: torch.device, path: Path):
        try:
            self._build(bundle, device)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = first_line(exc)
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
            from pipeline.sr.inference import generator_from_state

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
            from pipeline.sr.inference import upscale_tiled

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
