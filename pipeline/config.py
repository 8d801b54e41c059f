"""Typed, strict view of params.yaml.

Every key a stage may read is declared here once, with its type. Loading fails on a
missing key, an unknown key (a typo) or a value out of range, naming every such key at
once (one line each), so a mistyped `-S` never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml


class ParamsError(ValueError):
    """A params.yaml problem that names the offending key."""


@dataclass(frozen=True)
class DemoParams:
    n_als_samples: int
    n_control_samples: int
    crops_per_sample: list[int]  # [min, max] per sample folder
    second_folder_fraction: float  # share of samples that also get a `_crops2_r` folder
    crop_size: int
    render_scale: int  # cells are drawn this many times larger, then area-averaged

    def validate(self) -> None:
        _check(self.render_scale >= 1, "demo.render_scale", ">= 1")
        _check(self.n_als_samples >= 1 and self.n_control_samples >= 1,
               "demo.n_*_samples", "needs at least one sample per class")
        _check(len(self.crops_per_sample) == 2 and 1 <= self.crops_per_sample[0]
               <= self.crops_per_sample[1], "demo.crops_per_sample", "must be [min, max] >= 1")
        _check(0 <= self.second_folder_fraction <= 1, "demo.second_folder_fraction", "in [0, 1]")
        _check(self.crop_size >= 16, "demo.crop_size", ">= 16")


@dataclass(frozen=True)
class DataParams:
    raw_dir: str
    positive: str
    group_regex: str
    extensions: list[str]
    on_bad_file: str
    on_size_mismatch: str
    crop_size: int
    acquire_downsample: int  # 0, or k: also store each crop as acquired at 1/k resolution
    bit_depth: int | str  # auto | 8 | 10 | 12 | 14 | 16: full scale of integer crops
    float_range: list[float]  # [low, high] that float crops were saved in
    # gray | r | g | b | max (RGB exports) | a channel name from the file's OME or ImageJ
    # metadata | a 0-based channel index: which channel of the file is the crop
    channel: int | str
    z_project: int | str  # none | max | mean | a 0-based plane index: z-stacks to one plane

    def validate(self) -> None:
        _check(self.bit_depth == "auto" or (type(self.bit_depth) is int
                                            and self.bit_depth in (8, 10, 12, 14, 16)),
               "data.bit_depth", f"auto | 8 | 10 | 12 | 14 | 16, got {self.bit_depth!r}")
        _check(len(self.float_range) == 2 and self.float_range[0] < self.float_range[1],
               "data.float_range", "[low, high] with low < high")
        _check((type(self.channel) is int and self.channel >= 0)
               or (isinstance(self.channel, str) and self.channel.strip() != ""),
               "data.channel", "gray | r | g | b | max | a channel name | a 0-based index, "
               f"got {self.channel!r}")
        _check(self.z_project in ("none", "max", "mean")
               or (type(self.z_project) is int and self.z_project >= 0), "data.z_project",
               f"none | max | mean | a 0-based plane index, got {self.z_project!r}")
        _check(self.acquire_downsample in (0, 2, 4), "data.acquire_downsample", "0 | 2 | 4")
        _check(self.crop_size % max(self.acquire_downsample, 1) == 0, "data.crop_size",
               f"must divide by data.acquire_downsample ({self.acquire_downsample})")
        _check(self.on_bad_file in ("error", "skip"), "data.on_bad_file", "error | skip")
        _check(self.on_size_mismatch in ("resize", "pad", "error"),
               "data.on_size_mismatch", "resize | pad | error")
        _check(self.crop_size >= 16, "data.crop_size", ">= 16")
        _check("(?P<group>" in self.group_regex, "data.group_regex",
               "needs a named group (?P<group>...)")


@dataclass(frozen=True)
class SplitParams:
    test_fraction: float
    val_fraction: float
    folds: int

    def validate(self) -> None:
        _check(0 < self.test_fraction < 1, "split.test_fraction", "in (0, 1)")
        _check(0 < self.val_fraction < 1, "split.val_fraction", "in (0, 1)")
        _check(self.folds == 0 or self.folds >= 2, "split.folds", "0 (single split) or >= 2")


@dataclass(frozen=True)
class SRParams:
    scale: int
    hr_patch: int
    patches_per_crop: int
    blur_sigma: float
    noise_std: float
    num_feat: int
    num_block: int
    num_grow_ch: int
    residual: bool
    disc_feat: int
    batch_size: int
    iters_psnr: int
    iters_gan: int
    lr_g: float
    lr_d: float
    lr_milestones: list[float]  # fractions of each phase where lr halves
    ema_decay: float
    weight_pixel: float
    weight_perceptual: float
    weight_gan: float
    vgg_weights: str
    val_every: int
    checkpoint_every: int
    tile: int
    tile_overlap: int
    infer_batch: int
    store_full_size: bool  # false: SR images are stored at the size the classifier reads
    precision: str
    channels_last: bool
    discriminator: str  # vgg (ESRGAN's, 128/256 px) | unet (Real-ESRGAN's, any multiple of 8)
    generator: str  # which exported generator feeds the classifier: psnr | gan | best
    min_gain_db: float  # SR - bicubic PSNR below this: "SR does no better than bicubic"

    def validate(self) -> None:
        _check(self.scale in (2, 4), "sr.scale", "must be 2 or 4")
        _check(self.discriminator in ("vgg", "unet"), "sr.discriminator", "vgg | unet")
        _check(self.generator in ("psnr", "gan", "best"), "sr.generator", "psnr | gan | best")
        if self.discriminator == "vgg":
            _check(self.hr_patch in (128, 256), "sr.hr_patch",
                   "sr.discriminator vgg (VGGStyleDiscriminator) takes 128 or 256 px only; "
                   "use sr.discriminator: unet for other patch sizes")
        else:
            _check(self.hr_patch >= 16 and self.hr_patch % 8 == 0, "sr.hr_patch",
                   "sr.discriminator unet needs a multiple of 8, >= 16")
        _check(self.hr_patch % self.scale == 0, "sr.hr_patch", "must divide by sr.scale")
        _check(self.hr_patch - 2 * self.scale >= 11, "sr.hr_patch",
               "too small: validation SSIM needs an 11 px window after cropping sr.scale px "
               "from each border")
        for key in ("num_feat", "num_block", "num_grow_ch", "disc_feat", "batch_size",
                    "patches_per_crop", "val_every", "checkpoint_every", "infer_batch"):
            _check(getattr(self, key) >= 1, f"sr.{key}", ">= 1")
        _check(self.iters_psnr >= 1 and self.iters_gan >= 0, "sr.iters_psnr/iters_gan",
               "iters_psnr >= 1, iters_gan >= 0")
        _check(self.lr_g > 0 and self.lr_d > 0, "sr.lr_g/lr_d", "must be > 0")
        _check(0 <= self.ema_decay < 1, "sr.ema_decay", "in [0, 1)")
        _check(all(0 < m < 1 for m in self.lr_milestones), "sr.lr_milestones",
               "fractions in (0, 1)")
        _check(self.tile >= 16, "sr.tile", ">= 16")
        _check(0 <= self.tile_overlap < self.tile // 2, "sr.tile_overlap", "in [0, tile/2)")
        _check(self.precision in PRECISIONS, "sr.precision", " | ".join(PRECISIONS))
        _check(min(self.weight_pixel, self.weight_perceptual, self.weight_gan) >= 0,
               "sr.weight_*", "must be >= 0")
        _check(self.min_gain_db >= 0, "sr.min_gain_db", "must be >= 0 (dB)")


@dataclass(frozen=True)
class AugmentParams:
    copies: int
    balance: bool
    online: bool
    hflip: float
    vflip: float
    rot90: float
    rotation_degrees: float
    translate: float
    scale_range: list[float]
    brightness: float
    contrast: float
    noise_std: float

    def validate(self) -> None:
        _check(self.copies >= 1, "augment.copies", ">= 1")
        for key in ("hflip", "vflip", "rot90"):
            _check(0 <= getattr(self, key) <= 1, f"augment.{key}", "a probability in [0, 1]")
        _check(len(self.scale_range) == 2 and 0 < self.scale_range[0] <= self.scale_range[1],
               "augment.scale_range", "[min, max] with 0 < min <= max")
        _check(0 <= self.translate < 0.5, "augment.translate", "in [0, 0.5)")


@dataclass(frozen=True)
class ClassifierParams:
    backbones: list[str]
    pretrained: str
    input: str
    image_size: int | str  # "auto": the size the input arrives at (classifier_image_size)
    weight_decay: float
    label_smoothing: float
    precision: str
    channels_last: bool
    compile: bool
    eval_batch_size: int
    # Training images kept on the GPU: auto (when they take under runtime/placement.py's
    # share of its free memory) | true | false (batches stream from pinned host memory).
    # Where they live changes speed, not results: no stage lists it.
    cache_on_device: bool | str
    bootstrap: int  # resamples of the validation groups behind the robust youden cut
    permutations: int  # sign-flip permutations of a paired test (exact up to 14 groups)
    seeds: int  # training runs per backbone, with seeds seed, seed + 1, ...
    # youden (on the validation split, at crop and at group level) or a fixed probability
    threshold: float | str

    def validate(self) -> None:
        _check(self.cache_on_device in ("auto", True, False), "classifier.cache_on_device",
               f"auto | true | false, got {self.cache_on_device!r}")
        from models.backbones import BACKBONE_NAMES

        _check(self.threshold == "youden"
               or (type(self.threshold) is float and 0 < self.threshold < 1),
               "classifier.threshold", f"youden or a probability in (0, 1), got "
               f"{self.threshold!r}")

        for name in self.backbones:
            _check(name in BACKBONE_NAMES, "classifier.backbones",
                   f"unknown backbone {name!r}; choose from {', '.join(BACKBONE_NAMES)}")
        _check(self.input in INPUTS, "classifier.input", " | ".join(INPUTS))
        _check(self.image_size == "auto" or (isinstance(self.image_size, int)
                                             and self.image_size >= 16),
               "classifier.image_size", f"auto or an integer >= 16, got {self.image_size!r}")
        _check(self.precision in PRECISIONS, "classifier.precision", " | ".join(PRECISIONS))
        _check(0 <= self.label_smoothing < 1, "classifier.label_smoothing", "in [0, 1)")
        _check(self.bootstrap >= 100, "classifier.bootstrap", ">= 100 resamples")
        _check(self.permutations >= 99, "classifier.permutations", ">= 99 permutations")
        _check(self.seeds >= 1, "classifier.seeds", ">= 1 training run per backbone")


@dataclass(frozen=True)
class PreprocessParams:
    filter: str  # none | gaussian | median | mean
    kernel: int
    sigma: float
    equalize: bool

    def validate(self) -> None:
        _check(self.filter in ("none", "gaussian", "median", "mean"), "preprocess.filter",
               "none | gaussian | median | mean")
        _check(self.kernel >= 3 and self.kernel % 2 == 1, "preprocess.kernel", "odd, >= 3")
        _check(self.sigma > 0, "preprocess.sigma", "must be > 0")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: bf16 where the hardware has it
# raw: the crop as acquired; bicubic / sr: upscaled by sr.scale; hr: the original crop,
# kept only when data.acquire_downsample > 0 (the upper bound SR is measured against).
INPUTS = ("sr", "bicubic", "raw", "hr")


@dataclass(frozen=True)
class PredictParams:
    # Folders of new patients' sample folders; each adds a `predict@<folder>` stage (DVC's
    # foreach over an empty list adds none, so the default DAG has no predict stage).
    input_dir: list[str]
    on_bad_file: str  # error | skip

    def validate(self) -> None:
        _check(len(self.input_dir) <= 1, "predict.input_dir",
               "one folder at a time (its results go to reports/predict)")
        _check(all(d.strip() for d in self.input_dir), "predict.input_dir",
               "an empty folder name")
        # The folder becomes the stage's name (predict@<folder>); DVC 3.67 wraps a long name
        # with spaces over two lines of dvc.lock and can then no longer read it.
        _check(not any(" " in d for d in self.input_dir), "predict.input_dir",
               "a folder path with spaces breaks dvc.lock (the path is the stage name); "
               "use a symlink without spaces, or run python -m pipeline.stages.predict directly")
        _check(self.on_bad_file in ("error", "skip"), "predict.on_bad_file", "error | skip")


@dataclass(frozen=True)
class BaselineParams:
    # Inverse regularisation strengths of the logistic regression tried; the one with the
    # best validation group AUC is kept (the backbones choose their epoch the same way).
    c_grid: list[float]
    high_percentile: float  # the "bright spots" intensity feature, e.g. 99
    texture_levels: int  # grey levels of the co-occurrence (GLCM) texture feature

    def validate(self) -> None:
        _check(len(self.c_grid) >= 1 and all(c > 0 for c in self.c_grid), "baseline.c_grid",
               "one or more values > 0")
        _check(50 <= self.high_percentile < 100, "baseline.high_percentile", "in [50, 100)")
        _check(2 <= self.texture_levels <= 256, "baseline.texture_levels", "in [2, 256]")


@dataclass(frozen=True)
class RuntimeParams:
    # auto: the CPUs this process may use, shared among the pipeline stages running beside
    # it (pipeline/runtime/threads.py); a number fixes torch's threads. No stage lists it:
    # it changes how fast a stage runs, not what it computes.
    threads: int | str

    def validate(self) -> None:
        _check(self.threads == "auto" or (type(self.threads) is int and self.threads >= 1),
               "runtime.threads", f"auto | a number >= 1, got {self.threads!r}")


@dataclass(frozen=True)
class DistributedParams:
    nproc: int  # processes per node for train_sr and train_classifier (torchrun when > 1)

    def validate(self) -> None:
        _check(self.nproc >= 1, "distributed.nproc", ">= 1")


@dataclass(frozen=True)
class Params:
    profile: str  # the profile params.yaml was composed with (pipeline/conf/profile/<name>.yaml)
    seed: int
    device: str
    lr: float
    batch_size: int
    epochs: int
    demo: DemoParams
    data: DataParams
    split: SplitParams
    sr: SRParams
    augment: AugmentParams
    preprocess: PreprocessParams
    classifier: ClassifierParams
    baseline: BaselineParams
    predict: PredictParams
    distributed: DistributedParams
    runtime: RuntimeParams

    def validate(self) -> None:
        _check(bool(self.profile.strip()), "profile", "the name of a pipeline/conf/profile file")
        _check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        dev = self.device
        _check(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
               "device", f"auto | cpu | cuda | cuda:N, got {dev!r}")
        _check(self.data.crop_size >= self.sr.hr_patch, "data.crop_size",
               f"crops of {self.data.crop_size} px are smaller than the SR patch "
               f"(sr.hr_patch: {self.sr.hr_patch}); use sr.hr_patch <= data.crop_size "
               "(with sr.discriminator: unet below 128)")
        k = self.data.acquire_downsample
        _check(k == 0 or self.sr.scale == k, "sr.scale",
               f"must equal data.acquire_downsample ({k}) so SR restores the acquired crops "
               "to the original size")
        _check(self.classifier.input != "hr" or k > 0, "classifier.input",
               "hr needs data.acquire_downsample > 0 (without it the crops are the highest "
               "resolution there is: use raw)")
        _check(not (self.sr.generator == "gan" and self.sr.iters_gan == 0), "sr.generator",
               "gan needs a GAN phase (sr.iters_gan > 0); use psnr or best")
        size = self.classifier.image_size
        size = arrival_size(self) if size == "auto" else size
        _check("vgg16" not in self.classifier.backbones or size >= VGG16_MIN_SIZE,
               "classifier.image_size",
               f"VGG16 would read {size} px images (classifier.input "
               f"{self.classifier.input}, image_size {self.classifier.image_size}) but its "
               f"five 2x2 poolings need >= {VGG16_MIN_SIZE} px; set classifier.image_size: "
               f"{VGG16_MIN_SIZE} or more, or leave vgg16 out of classifier.backbones")


# VGG16 halves the image five times: below 32 px its last pooling has nothing to pool.
VGG16_MIN_SIZE = 32


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


def seed_runs(params: Params) -> list[tuple[int, str]]:
    """(training seed, model file) of each of a backbone's classifier.seeds runs; the first
    seed's model is model.pt, the one evaluated with intervals, explained and exported."""
    return [(params.seed + k, "model.pt" if k == 0 else f"model_seed{params.seed + k}.pt")
            for k in range(params.classifier.seeds)]


def sr_storage_size(params: Params) -> int:
    """Edge sr_infer stores SR images at: the classifier's size when it reads them smaller
    than they arrive (sr.store_full_size false), else crop x scale."""
    full = arrival_size(params, "sr")
    size = params.classifier.image_size
    if params.sr.store_full_size or size == "auto" or int(size) >= full:
        return full
    return int(size)


# Hydra's config folder (dvc.yaml's stages read params.yaml; `dvc exp run` composes it from here).
CONF_DIR = Path(__file__).parent / "conf"


def profile_values(name: str, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """The dotted keys a profile sets (pipeline/conf/profile/<name>.yaml) and their values."""
    path = conf_dir / "profile" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf_dir / "profile").glob("*.yaml"))
        raise ParamsError(f"params.yaml: profile: {name!r} has no {path} (profiles: "
                          f"{', '.join(known)})")
    return flatten(yaml.safe_load(path.read_text()) or {})


def composed_values(name: str, conf_dir: Path = CONF_DIR) -> dict[str, Any]:
    """The dotted keys and values `dvc exp run -S profile=<name>` composes params.yaml from
    (config.yaml with the profile over it): departures from these are the run's own `-S`."""
    base = yaml.safe_load((conf_dir / "config.yaml").read_text()) or {}
    base.pop("defaults", None)
    return flatten(base) | profile_values(name, conf_dir)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"sr": {"scale": 4}} -> {"sr.scale": 4}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def departures(raw: dict, profile: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys of `profile` whose value in the params `raw` differs: key -> (params, profile)."""
    values = flatten(raw)
    return {key: (values.get(key), value) for key, value in profile.items()
            if key != "profile" and values.get(key) != value}


def _check(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ParamsError(f"params.yaml: {key}: {why}")


def _coerce(value: Any, annotation: Any, key: str, problems: list[str]) -> Any:
    """Build `annotation` from a YAML value, checking the type and naming the key on error
    (a section's own problems go to `problems`, a wrong value raises)."""
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ParamsError(f"params.yaml: {key}: expected a section (mapping), got {value!r}")
        return _build(annotation, value, key + ".", problems)
    origin = typing.get_origin(annotation)
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ParamsError(f"params.yaml: {key}: expected a list, got {value!r}")
        return [_coerce(v, item_type, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ParamsError(f"params.yaml: {key}: expected true/false, got {value!r}")
    if annotation in (int, float) and isinstance(value, bool):
        raise ParamsError(f"params.yaml: {key}: expected a number, got {value!r}")
    if annotation is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ParamsError(
            f"params.yaml: {key}: expected {annotation.__name__}, got {value!r}")
    return value


def _build(cls: type, raw: dict, prefix: str = "", problems: list[str] | None = None):
    """`cls` from its section of params.yaml. Every problem found is appended to `problems`
    (one line each) and None returned when the section could not be built; without a
    `problems` list they are raised together as one ParamsError."""
    if problems is None:
        problems = []
        built = _build(cls, raw, prefix, problems)
        if problems:  # all of them at once, one line each: one fix-and-rerun, not one per key
            raise ParamsError("\n".join(problems))
        return built
    hints = typing.get_type_hints(cls, vars(types.ModuleType("x")) | globals())
    expected = {f.name for f in fields(cls)}
    found_before = len(problems)
    missing = expected - set(raw)
    for name in sorted(set(raw) - expected):
        close = difflib.get_close_matches(name, sorted(expected), n=1, cutoff=0.6)
        guess = f"did you mean {prefix}{close[0]}? " if close else ""
        missing -= set(close)  # a misspelt key is one problem, not also a missing one
        problems.append(f"params.yaml: unknown key {prefix}{name}: {guess}(expected one of: "
                        f"{', '.join(sorted(expected))}). A `dvc exp run -S +key=...` adds a "
                        "key no stage reads; fix the name instead, and `git checkout "
                        "params.yaml` undoes what the failed run wrote")
    problems += [f"params.yaml: missing key {prefix}{name}" for name in sorted(missing)]
    values = {}
    for name in sorted(expected & set(raw)):
        try:
            values[name] = _coerce(raw[name], hints[name], prefix + name, problems)
        except ParamsError as exc:
            problems.append(str(exc))
    if len(problems) > found_before:
        return None  # its checks would read values that are missing or wrong
    obj = cls(**values)
    if hasattr(obj, "validate"):
        try:
            obj.validate()  # stops at its first failed check: later ones may build on it
        except ParamsError as exc:
            problems.append(str(exc))
    return obj


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the whole params file; raise ParamsError naming the bad key."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at top level")
    return _build(Params, raw)
