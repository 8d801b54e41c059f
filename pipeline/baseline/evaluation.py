"""Training and scoring the shortcut baseline exactly as evaluate scores a backbone: thresholds
by classifier.threshold on the validation groups, the test split's figures with their
intervals, the per-group table, and metrics with the keys every comparison table reads."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.baseline.features import FEATURES, feature_table
from pipeline.baseline.model import FEATURE_COLUMNS, feature_evidence, fit_baseline, scored
from pipeline.classify.scoring import (
    fixed_thresholds,
    group_table,
    reliability,
    seed_spread,
    thresholds_from_scores,
)
from pipeline.config import Params
from pipeline.data.split import split_subset
from pipeline.reporting.labels import BASELINE
from pipeline.stats import decide, evaluation_report


@dataclass
class BaselineRun:
    features: pd.DataFrame  # every crop: crop_id, group, label, split, the features
    predictions: pd.DataFrame  # test crops: crop_id, group, label, prob, predicted
    groups: pd.DataFrame  # evaluate's groups.csv columns for the test groups
    metrics: dict


def group_intensity(features: pd.DataFrame) -> pd.DataFrame:
    """One row per group: its class, split, crops and mean of each feature, for the report's
    brightness-by-group figure (imaging sessions shift brightness: the classic batch effect)."""
    return (features.groupby(["group", "class_name", "split"], sort=True)
            .agg(n_crops=("crop_id", "size"),
                 **{name: (name, "mean") for name in FEATURE_COLUMNS})
            .reset_index())


def run_baseline(split_frame: pd.DataFrame, crops_dir: Path, params: Params,
                 class_names: tuple[str, str]) -> BaselineRun:
    bp, cp = params.baseline, params.classifier
    start = time.perf_counter()
    features = feature_table(split_frame[["crop_id", "group", "class_name", "label", "split"]],
                             crops_dir, bp.high_percentile, bp.texture_levels)
    feature_seconds_per_crop = (time.perf_counter() - start) / len(features)
    parts = {name: split_subset(features, name) for name in ("train", "val", "test")}
    model, fitted = fit_baseline(parts["train"], parts["val"], bp.c_grid, params.seed)
    thresholds = (thresholds_from_scores(cp.threshold, scored(parts["val"], model),
                                         cp.bootstrap, params.seed)
                  if cp.threshold == "youden" else fixed_thresholds(cp.threshold))
    start = time.perf_counter()
    test = scored(parts["test"], model)
    predict_seconds = time.perf_counter() - start
    test = test.assign(predicted=decide(test["prob"], thresholds["crop"]))
    report = evaluation_report(test, thresholds)
    metrics = {"backbone": BASELINE, "input": "raw", "threshold": thresholds,
               "preprocess": "none", "generator": None, **report,
               "seeds": seed_spread({params.seed: report}),
               "train_seconds": round(fitted["train_seconds"], 3),
               "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                       / 1024, 1),
               "params_millions": (len(FEATURE_COLUMNS) + 1) / 1e6, "pretrained": "none",
               "best_epoch": None,
               # features and model together, as predict would pay them per new crop
               "infer_ms_per_image": round(1000 * (feature_seconds_per_crop
                                                   + predict_seconds / len(test)), 4),
               "infer_images_per_s": round(1 / (feature_seconds_per_crop
                                                + predict_seconds / len(test)), 1),
               "precision": "fp64", "test_crops": len(test),
               "test_groups": int(test["group"].nunique()), **reliability(test),
               "model": "logistic regression (scikit-learn), standardised features",
               "chosen_c": fitted["chosen_c"],
               "validation_auc_by_c": fitted["validation_auc_by_c"],
               "features": feature_evidence(model, parts["train"], parts["test"], class_names),
               "feature_descriptions": dict(FEATURES)}
    groups = group_table(test, class_names, thresholds["group"], BASELINE)
    return BaselineRun(features, test, groups, metrics)
