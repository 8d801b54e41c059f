"""Cross-validation by sample: k StratifiedGroupKFold folds, each trained and tested.

One train/test split of a few dozen patients gives a noisy estimate; k folds give each
sample one turn in the test set and a mean and standard deviation per metric. Folds
come from the split stage (split.folds); 0 folds means this stage records nothing.

SR images are not used here: the generator was trained on the main split's training
groups, which include test groups of some folds, so a fold scored on SR images would
have had its test images (not their labels) seen in training. With classifier.input sr
the folds read the bicubic upscales of the same crops instead (same size, made at load
time from the crops), and every row says which input it used. The stage does not even
depend on data/sr_images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.augment import make_training_set
from pipeline.common import (
    PipelineError,
    console,
    prepare_checkpoint_dir,
    read_crop_table,
    stage_main,
    write_csv_atomic,
)
from pipeline.config import Params, load_params
from pipeline.datasets import load_classifier_images
from pipeline.device import resolve_device
from pipeline.inference import score_split, validation_thresholds
from pipeline.split import fold_assignment
from pipeline.train_classifier import train_classifier

SUMMARY_METRICS = ["auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity"]


def crossval_input(input_kind: str) -> str:
    """The input the folds read: bicubic in place of sr (see the module docstring)."""
    return "bicubic" if input_kind == "sr" else input_kind


def run_fold(backbone: str, fold: int, split_frame: pd.DataFrame, crops_dir: Path,
             params: Params, device: torch.device, checkpoint_dir: Path) -> dict:
    assignment = fold_assignment(split_frame, fold, params.split.val_fraction, params.seed)
    frame = split_frame.assign(split=assignment)
    parts = {name: frame[frame["split"] == name].reset_index(drop=True)
             for name in ("train", "val", "test")}
    input_kind = crossval_input(params.classifier.input)
    images = {name: load_classifier_images(params, input_kind, crops_dir, None,
                                           part["crop_id"].tolist(), device)
              for name, part in parts.items()}
    train_images, train_labels, _ = make_training_set(
        images["train"], parts["train"]["label"].to_numpy(), params.augment,
        params.seed + fold, device)
    result = train_classifier(backbone, train_images, train_labels, images["val"],
                              parts["val"]["label"].to_numpy(), params, device,
                              checkpoint_dir / f"{backbone}-fold{fold}")
    model = result["model"]
    model.load_state_dict(result["best_state"])
    model = model.to(device)
    # the fold's own validation groups choose its thresholds, as evaluate does
    thresholds = validation_thresholds(model, images["val"], parts["val"], device,
                                       params.classifier)
    predictions, report = score_split(model, images["test"], parts["test"], device,
                                      params.classifier, params.seed, thresholds)
    result["checkpoint"].unlink(missing_ok=True)
    row = {"backbone": backbone, "fold": fold, "input": crossval_input(params.classifier.input),
           "test_samples": predictions["group"].nunique(),
           "test_crops": len(predictions), "best_epoch": result["metrics"]["best_epoch"],
           "threshold_crop": thresholds["crop"], "threshold_sample": thresholds["sample"]}
    for level in ("crop", "sample"):
        row |= {f"{level}_{key}": report[level][key] for key in SUMMARY_METRICS}
    return row


def summarise(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1) per metric per backbone."""
    rows = []
    for backbone, part in folds.groupby("backbone", sort=False):
        row = {"backbone": backbone, "folds": len(part)}
        if "input" in part:
            row["input"] = part["input"].iloc[0]
        for level in ("crop", "sample"):
            for key in SUMMARY_METRICS:
                values = part[f"{level}_{key}"].to_numpy(dtype=float)
                row[f"{level}_{key}_mean"] = float(np.nanmean(values))
                row[f"{level}_{key}_sd"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 \
                    else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--folds", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="reports/crossval")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    prepare_checkpoint_dir(args.checkpoints)  # a DVC out, never empty
    split_frame = read_crop_table(args.split)
    if params.split.folds == 0:
        write_csv_atomic(args.out / "folds.csv", pd.DataFrame(columns=["backbone", "fold"]))
        write_csv_atomic(args.out / "summary.csv", pd.DataFrame(columns=["backbone", "folds"]))
        console.print("crossval: split.folds is 0, nothing to do")
        return
    folds_frame = read_crop_table(args.folds)
    if folds_frame.empty:
        raise PipelineError(f"{args.folds} holds no folds; rerun the split stage")
    split_frame = split_frame.merge(folds_frame[["crop_id", "fold"]], on="crop_id",
                                    validate="one_to_one")
    device = resolve_device(params.device)
    input_kind = crossval_input(params.classifier.input)
    if input_kind != params.classifier.input:
        console.print(f"crossval: reading {input_kind} images in place of "
                      f"{params.classifier.input} (the SR model saw some folds' test groups)")
    rows = []
    for backbone in params.classifier.backbones:
        for fold in range(params.split.folds):
            rows.append(run_fold(backbone, fold, split_frame, args.crops, params, device,
                                 args.checkpoints))
            console.print(f"crossval {backbone} fold {fold}: sample AUC "
                          f"{rows[-1]['sample_auc']:.3f}, crop AUC {rows[-1]['crop_auc']:.3f}")
    folds = pd.DataFrame(rows)
    summary = summarise(folds)
    write_csv_atomic(args.out / "folds.csv", folds)
    write_csv_atomic(args.out / "summary.csv", summary)
    for row in summary.itertuples(index=False):
        console.print(f"{row.backbone}: sample AUC {row.sample_auc_mean:.3f} ± "
                      f"{row.sample_auc_sd:.3f}, crop AUC {row.crop_auc_mean:.3f} ± "
                      f"{row.crop_auc_sd:.3f} over {row.folds} folds")


if __name__ == "__main__":
    main()
