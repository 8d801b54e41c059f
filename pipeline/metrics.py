"""Binary classification metrics at crop and sample level, with bootstrap intervals over samples.

AUC is the area under the ROC curve of the scores; accuracy is the share of correct
decisions at threshold 0.5. The study used the two words interchangeably; here they
are separate keys, always computed on the held-out test split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve


def expected_calibration_error(labels: np.ndarray, prob_positive: np.ndarray,
                               bins: int = 10) -> float:
    """ECE over `bins` equal-width bins of the confidence max(p, 1 - p)."""
    confidence = np.maximum(prob_positive, 1 - prob_positive)
    correct = (prob_positive >= 0.5).astype(int) == labels
    edges = np.linspace(0.5, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high) if low > 0.5 else \
            (confidence >= low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def binary_metrics(labels: np.ndarray, prob_positive: np.ndarray,
                   threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, balanced accuracy, sensitivity, specificity, precision, F1, AUC, ECE."""
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(prob_positive) >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    precision = tp / (tp + fp) if tp + fp else 0.0
    f1 = 2 * precision * sensitivity / (precision + sensitivity) if precision + sensitivity else 0.0
    auc = roc_auc_score(labels, prob_positive) if len(np.unique(labels)) == 2 else float("nan")
    return {"accuracy": float((tp + tn) / len(labels)),
            "balanced_accuracy": float((sensitivity + specificity) / 2),
            "sensitivity": float(sensitivity), "specificity": float(specificity),
            "precision": float(precision), "f1": float(f1), "auc": float(auc),
            "ece": expected_calibration_error(labels, np.asarray(prob_positive)),
            "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn), "n": int(len(labels))}


def sample_level(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per sample (group): label and the mean of its crops' probabilities."""
    grouped = predictions.groupby("group", sort=True)
    if (grouped["label"].nunique() > 1).any():
        raise ValueError("a sample has crops with different labels")
    return pd.DataFrame({"group": list(grouped.groups), "label": grouped["label"].first().values,
                         "prob": grouped["prob"].mean().values})


def bootstrap_auc_interval(predictions: pd.DataFrame, level: str, resamples: int, seed: int,
                           alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of AUC, resampling samples (groups) with replacement.

    Crops of one sample are correlated, so the resampling unit is the sample at both
    levels; at crop level every crop of a drawn sample comes along.
    """
    rng = np.random.default_rng(seed)
    groups = predictions["group"].unique()
    by_group = {g: predictions[predictions["group"] == g] for g in groups}
    sample_table = sample_level(predictions).set_index("group")
    values = []
    for _ in range(resamples):
        drawn = rng.choice(groups, len(groups), replace=True)
        if level == "sample":
            part = sample_table.loc[drawn]
        else:
            part = pd.concat([by_group[g] for g in drawn])
        if part["label"].nunique() < 2:
            continue
        values.append(roc_auc_score(part["label"], part["prob"]))
    if not values:
        return float("nan"), float("nan")
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def evaluation_report(predictions: pd.DataFrame, resamples: int, seed: int) -> dict:
    """{crop: {...}, sample: {...}} with AUC 95% bootstrap intervals over samples."""
    report = {}
    samples = sample_level(predictions)
    for level, frame in (("crop", predictions), ("sample", samples)):
        metrics = binary_metrics(frame["label"].to_numpy(), frame["prob"].to_numpy())
        metrics["auc_ci_low"], metrics["auc_ci_high"] = bootstrap_auc_interval(
            predictions, level, resamples, seed)
        report[level] = metrics
    return report


def roc_points(labels: np.ndarray, prob_positive: np.ndarray) -> list[dict[str, float]]:
    fpr, tpr, thresholds = roc_curve(labels, prob_positive)
    thresholds = np.minimum(thresholds, 1.0)  # sklearn puts +inf first; JSON cannot hold it
    return [{"fpr": float(f), "tpr": float(t), "threshold": float(th)}
            for f, t, th in zip(fpr, tpr, thresholds)]
