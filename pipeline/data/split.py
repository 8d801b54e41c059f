"""Split by group (patient sample), stratified by class: train / val / test, optional k folds.

The study split crops at random, so crops of one patient sat on both sides and the
test score rewarded recognising the patient. Here a group never crosses a split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

from pipeline.cli import PipelineError
from pipeline.config import SplitParams

SPLITS = ("train", "val", "test")


def _take_groups(groups: np.ndarray, fraction: float, seed: int, what: str, class_name,
                 keep: int = 1) -> tuple:
    """Split one class's groups into (rest, taken): >= 1 taken, >= `keep` left."""
    if len(groups) < keep + 1:
        raise PipelineError(f"class {class_name!r} has {len(groups)} group(s) left for the "
                            f"{what} split; each split needs at least one group per class")
    n_taken = int(np.clip(round(fraction * len(groups)), 1, len(groups) - keep))
    splitter = GroupShuffleSplit(n_splits=1, test_size=n_taken, random_state=seed)
    rest_index, taken_index = next(splitter.split(groups, groups=groups))
    return groups[rest_index], groups[taken_index]


def split_groups(manifest: pd.DataFrame, params: SplitParams, seed: int) -> pd.DataFrame:
    """Assign each crop to train/val/test by its group, class by class (= stratified)."""
    group_label = manifest.groupby("group")["label"].first()
    assignment: dict[str, str] = {}
    for label in sorted(group_label.unique()):
        class_name = manifest.loc[manifest["label"] == label, "class_name"].iloc[0]
        groups = np.array(sorted(group_label.index[group_label == label]))
        if len(groups) < 3:
            raise PipelineError(f"class {class_name!r} has only {len(groups)} group(s); a "
                                "train/val/test split by group needs at least 3 per class")
        # keep two groups back so that train and validation each get one
        rest, test = _take_groups(groups, params.test_fraction, seed, "test", class_name, keep=2)
        train, val = _take_groups(rest, params.val_fraction, seed + 1, "val", class_name)
        assignment.update({g: "train" for g in train} | {g: "val" for g in val}
                          | {g: "test" for g in test})

    frame = manifest[["crop_id", "group", "sample", "class_name", "label"]].copy()
    frame["split"] = frame["group"].map(assignment)
    if params.folds:
        frame["fold"] = fold_of_each_crop(manifest, params.folds, seed)
    return frame


def fold_of_each_crop(manifest: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """Test-fold index per crop from StratifiedGroupKFold (groups never share folds)."""
    n_groups = manifest.groupby("label")["group"].nunique().min()
    if n_groups < folds:
        raise PipelineError(f"split.folds={folds} but the smaller class has only {n_groups} "
                            "groups; use fewer folds")
    fold = np.full(len(manifest), -1)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for index, (_, test_index) in enumerate(
            splitter.split(manifest, manifest["label"], groups=manifest["group"])):
        fold[test_index] = index
    return fold


def fold_assignment(split_frame: pd.DataFrame, fold: int, val_fraction: float,
                    seed: int) -> pd.Series:
    """For cross-validation: fold `fold` is test, validation groups are carved from the rest."""
    split = pd.Series("train", index=split_frame.index)
    split[split_frame["fold"] == fold] = "test"
    rest = split_frame[split_frame["fold"] != fold]
    for label in sorted(rest["label"].unique()):
        groups = np.array(sorted(rest.loc[rest["label"] == label, "group"].unique()))
        _, val = _take_groups(groups, val_fraction, seed + fold, "val", label)
        split[split_frame["group"].isin(val)] = "val"
    return split

# Below this many groups (patients) of a class in a split, its figures say little: a
# group-level AUC over 2 + 2 groups takes one of five values, and a test split of one
# group per class cannot rank anything.
MIN_SAMPLES_PER_CLASS = 5


def small_splits(frame: pd.DataFrame) -> list[str]:
    """'test/Control: 2' for each split and class with fewer than MIN_SAMPLES_PER_CLASS."""
    counts = frame.groupby(["split", "class_name"])["group"].nunique()
    return [f"{split}/{class_name}: {int(counts.get((split, class_name), 0))}"
            for split in SPLITS for class_name in sorted(frame["class_name"].unique())
            if counts.get((split, class_name), 0) < MIN_SAMPLES_PER_CLASS]


def split_metrics(frame: pd.DataFrame) -> dict:
    metrics: dict = {}
    for split in SPLITS:
        part = frame[frame["split"] == split]
        for class_name in sorted(frame["class_name"].unique()):
            of_class = part[part["class_name"] == class_name]
            metrics[f"{split}_crops_{class_name}"] = len(of_class)
            metrics[f"{split}_groups_{class_name}"] = int(of_class["group"].nunique())
    metrics["groups_in_two_splits"] = int((frame.groupby("group")["split"].nunique() > 1).sum())
    metrics["test_crop_fraction"] = round(float((frame["split"] == "test").mean()), 4)
    metrics["splits_below_minimum"] = len(small_splits(frame))
    if "fold" in frame:
        metrics["folds"] = int(frame["fold"].max() + 1)
        metrics["groups_in_two_folds"] = int((frame.groupby("group")["fold"].nunique() > 1).sum())
    return metrics


def split_subset(split_frame: pd.DataFrame, split: str, hint: str = "") -> pd.DataFrame:
    subset = split_frame[split_frame["split"] == split].reset_index(drop=True)
    hint = f" ({hint})" if hint else ""
    if subset.empty:
        raise PipelineError(f"the {split} split is empty{hint}")
    if subset["label"].nunique() < 2:
        raise PipelineError(f"the {split} split holds one class only; AUC is undefined{hint}")
    return subset


def class_names_from(split_frame: pd.DataFrame) -> tuple[str, str]:
    """(negative, positive) class names as the split names them."""
    names = split_frame.groupby("label")["class_name"].first()
    return str(names.get(0, "negative")), str(names.get(1, "positive"))
