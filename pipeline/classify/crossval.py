"""Cross-validation by group: k StratifiedGroupKFold folds, each trained and tested.

One train/test split of a few dozen patients gives a noisy estimate; k folds give each
group one turn in the test set and a mean and standard deviation per metric. Folds
come from the split stage (split.folds); 0 folds means this stage records nothing.

SR images are not used here: the generator was trained on the main split's training
groups, which include test groups of some folds, so a fold scored on SR images would
have had its test images (not their labels) seen in training. With classifier.input sr
the folds read the bicubic upscales of the same crops instead (same size, made at load
time from the crops), and every row says which input it used. The stage does not even
depend on data/sr_images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.classify.augment import make_training_set, training_sources
from pipeline.classify.images import ClassifierImages, TrainingRowsFromSplit, load_classifier_images
from pipeline.classify.inference import score_split, validation_thresholds
from pipeline.classify.training import train_classifier
from pipeline.config import Params
from pipeline.data.split import fold_assignment
from pipeline.data.tensors import cache_rows
from pipeline.stats import LEVELS

SUMMARY_METRICS = ["auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity"]


def crossval_input(input_kind: str) -> str:
    """The input the folds read: bicubic in place of sr (see the module docstring)."""
    return "bicubic" if input_kind == "sr" else input_kind


def fold_training_set(images: ClassifierImages, labels: np.ndarray, params: Params, seed: int,
                      device: torch.device) -> tuple[torch.Tensor | TrainingRowsFromSplit,
                                                     np.ndarray]:
    """A fold's training set as the augment stage would make it: augmented and held as
    uint16 rows, or with augment.online made per batch from the fold's images (the loop
    augments), the same rows without holding them."""
    if params.augment.online:
        source = training_sources(labels, params.augment, seed)
        return TrainingRowsFromSplit(images, source), labels[source]
    rows, out_labels, _ = make_training_set(images, labels, params.augment, seed, device)
    return cache_rows(rows), out_labels


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
    train_rows, train_labels = fold_training_set(
        images["train"], parts["train"]["label"].to_numpy(), params, params.seed + fold, device)
    result = train_classifier(backbone, train_rows, train_labels, images["val"],
                              parts["val"]["label"].to_numpy(), params, device,
                              checkpoint_dir / f"{backbone}-fold{fold}")
    model = result["model"]
    model.load_state_dict(result["best_state"])
    model = model.to(device)
    # the fold's own validation groups choose its thresholds, as evaluate does
    thresholds = validation_thresholds(model, images["val"], parts["val"], device,
                                       params.classifier, params.seed)
    predictions, report = score_split(model, images["test"], parts["test"], device,
                                      params.classifier, thresholds)
    result["checkpoint"].unlink(missing_ok=True)
    row = {"backbone": backbone, "fold": fold, "input": crossval_input(params.classifier.input),
           "test_groups": predictions["group"].nunique(),
           "test_crops": len(predictions), "best_epoch": result["metrics"]["best_epoch"],
           "threshold_crop": thresholds["crop"], "threshold_group": thresholds["group"]}
    for level in LEVELS:
        row |= {f"{level}_{key}": report[level][key] for key in SUMMARY_METRICS}
    return row


def summarise(folds: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation (ddof=1) per metric per backbone."""
    rows = []
    for backbone, part in folds.groupby("backbone", sort=False):
        # One training seed per fold: the sd is the folds' spread, seed noise included.
        row = {"backbone": backbone, "folds": len(part), "seeds_per_fold": 1}
        if "input" in part:
            row["input"] = part["input"].iloc[0]
        for level in LEVELS:
            for key in SUMMARY_METRICS:
                values = part[f"{level}_{key}"].to_numpy(dtype=float)
                row[f"{level}_{key}_mean"] = float(np.nanmean(values))
                row[f"{level}_{key}_sd"] = float(np.nanstd(values, ddof=1)) if len(values) > 1 \
                    else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
