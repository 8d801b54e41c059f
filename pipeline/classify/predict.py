"""Classify new, unlabelled patients' crops with one or more exported bundles.

    python -m pipeline.stages.predict --bundle data/bundles/resnet50.pt --input DIR --out OUTDIR

DIR holds sample folders (`<sample>_crops[N]_r/<crop>.tif|tiff|png`), or class folders of
them (their names are ignored: predict never uses labels). Every crop goes through
ingest's own checks and normalisation (`data.ingest.prepare_crop`), then the bundle's SR or
bicubic step, its resizing and preprocessing, and its classifier. Writes OUTDIR/crops.csv
(path, group, prob, prediction) and OUTDIR/groups.csv (group, n_crops, prob, prediction,
threshold, backbone): a group is one patient sample (all its sample folders, by the
bundle's data.group_regex); its prob is the mean of its crops' as in evaluate, decided at
the group threshold chosen on validation. With several bundles
each gets its own columns (`prob_<backbone>`, ...) plus their mean (`prob_mean`, decided
at the mean of their thresholds).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.classify.bundle import BundleClassifier, BundleError, load_bundle
from pipeline.classify.scoring import decide, group_predictions
from pipeline.cli import PipelineError, progress
from pipeline.data.image_files import AboveBitDepthError, BadImageError, PlaneChoiceError
from pipeline.data.ingest import prepare_crop
from pipeline.data.layout import BadFiles, collect_sample_crops


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


def classify_folder(classifier: BundleClassifier, input_dir: Path, on_bad_file: str
                    ) -> tuple[pd.DataFrame, list[dict], dict[str, int]]:
    """(crops: path, group, prob), the skipped files, and files left out by extension."""
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
            rows.append({"path": path.relative_to(input_dir).as_posix(), "group": group,
                         "prob": float(prob)})
        batch.clear()

    with progress() as bar:
        task = bar.add_task(f"predict {classifier.backbone}", total=len(found), status="")
        for _, group, path in found:
            try:
                acquired, original, _, _ = prepare_crop(path, input_dir, classifier.data)
            except PlaneChoiceError as exc:  # the folder is not what the bundle learnt from
                data = classifier.data
                raise PipelineError(f"{path} {exc}; the bundle reads data.channel="
                                    f"{data.channel}, data.z_project={data.z_project}, as its "
                                    "training crops were read") from None
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
    """crops.csv and groups.csv from each bundle's crop probabilities."""
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
        groups = group_predictions(crops, class_names, bundle["thresholds"]["group"], backbone)
        return crops[["path", "group", "prob", "prediction"]], groups

    crops = None
    for backbone, frame in per_bundle.items():
        part = frame.rename(columns={"prob": f"prob_{backbone}"})
        crops = part if crops is None else crops.merge(part, on=["path", "group"], how="outer")
    backbones = list(per_bundle)
    # a crop one bundle left out (its own data settings refused it) has no mean
    crops["prob_mean"] = crops[[f"prob_{b}" for b in backbones]].mean(axis=1, skipna=False)
    cuts = {b: bundles[b]["thresholds"] for b in backbones}
    cuts["mean"] = {level: float(np.mean([bundles[b]["thresholds"][level] for b in backbones]))
                    for level in ("crop", "group")}
    groups = None
    for name in [*backbones, "mean"]:
        scored = crops[f"prob_{name}"].notna()
        crops[f"prediction_{name}"] = np.where(
            scored, np.asarray(class_names)[decide(crops[f"prob_{name}"].fillna(0.0),
                                                   cuts[name]["crop"])], "")
        table = group_predictions(
            crops.dropna(subset=[f"prob_{name}"]).rename(columns={f"prob_{name}": "prob"}),
            class_names, cuts[name]["group"], name)
        table = table.drop(columns="backbone").rename(
            columns={"prob": f"prob_{name}", "prediction": f"prediction_{name}",
                     "threshold": f"threshold_{name}", "n_crops": f"n_crops_{name}"})
        groups = table if groups is None else groups.merge(table, on="group", how="outer")
    groups = groups.rename(columns={"n_crops_mean": "n_crops"}).drop(
        columns=[f"n_crops_{b}" for b in backbones])
    ordered = ["group", "n_crops"] + [c for c in groups.columns if c not in ("group",
                                                                              "n_crops")]
    crop_columns = ["path", "group"] + [f"{kind}_{name}" for name in [*backbones, "mean"]
                                         for kind in ("prob", "prediction")]
    return crops[crop_columns], groups[ordered]


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

OWN_OUTPUTS = {"crops.csv", "groups.csv", "bad_files.csv"}


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


def load_bundles(paths: list[Path]) -> dict[str, dict]:
    """Every bundle read and checked before any crop is read (a bad one costs nothing),
    by backbone; a backbone given twice is refused."""
    bundles = {}
    for path in paths:
        bundle = load_bundle(path)
        if bundle["backbone"] in bundles:
            raise BundleError(f"{path}: a second {bundle['backbone']} bundle; give each "
                              "backbone once")
        bundles[bundle["backbone"]] = bundle
    return bundles


def classify_with_each(classifiers: dict[str, BundleClassifier], input_dir: Path,
                       on_bad_file: str) -> tuple[dict[str, pd.DataFrame], list[dict],
                                                  dict[str, int]]:
    """Each classifier's crop probabilities, the files any of them skipped (each listed
    once, with the backbones that refused it), and the files left out by extension."""
    per_bundle, problems, ignored = {}, {}, {}
    for backbone, classifier in classifiers.items():
        crops, skipped, ignored = classify_folder(classifier, input_dir, on_bad_file)
        per_bundle[backbone] = crops
        for problem in skipped:
            entry = problems.setdefault(problem["path"], {**problem, "backbones": []})
            entry["backbones"].append(backbone)
    listed = [{**entry, "backbones": " ".join(entry["backbones"])}
              for entry in problems.values()]
    return per_bundle, listed, ignored
