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
        if level == "sample":  # samples are independent units: plain bootstrap over rows
            low, high = bootstrap_metric_interval(frame, "balanced_accuracy", resamples, seed)
            metrics["balanced_accuracy_ci_low"], metrics["balanced_accuracy_ci_high"] = low, high
        report[level] = metrics
    return report


def roc_points(labels: np.ndarray, prob_positive: np.ndarray) -> list[dict[str, float]]:
    fpr, tpr, thresholds = roc_curve(labels, prob_positive)
    thresholds = np.minimum(thresholds, 1.0)  # sklearn puts +inf first; JSON cannot hold it
    return [{"fpr": float(f), "tpr": float(t), "threshold": float(th)}
            for f, t, th in zip(fpr, tpr, thresholds)]


def _midranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values))
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = 0.5 * (start + end) + 1  # ties share their mean rank
        start = end + 1
    return ranks


def delong_test(labels: np.ndarray, scores_a: np.ndarray,
                scores_b: np.ndarray) -> dict[str, float]:
    """DeLong's test for two correlated ROC AUCs on the same cases (DeLong et al. 1988).

    Uses the midrank formulation of Sun & Xu (2014). Returns both AUCs, their difference,
    its standard error, z and the two-sided p-value.
    """
    from scipy.stats import norm

    labels = np.asarray(labels).astype(int)
    positives, negatives = labels == 1, labels == 0
    m, n = positives.sum(), negatives.sum()
    if m < 2 or n < 2:
        raise ValueError("DeLong's test needs at least two cases of each class")
    aucs, v10, v01 = [], [], []
    for scores in (np.asarray(scores_a, float), np.asarray(scores_b, float)):
        pos, neg = scores[positives], scores[negatives]
        all_ranks = _midranks(np.concatenate([pos, neg]))
        pos_ranks, neg_ranks = _midranks(pos), _midranks(neg)
        auc = (all_ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
        aucs.append(auc)
        v10.append((all_ranks[:m] - pos_ranks) / n)        # structural components, positives
        v01.append(1 - (all_ranks[m:] - neg_ranks) / m)    # and negatives
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    covariance = s10 / m + s01 / n
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = aucs[0] - aucs[1]
    if variance <= 0:
        z, p = (0.0, 1.0) if difference == 0 else (float("inf"), 0.0)
    else:
        z = difference / np.sqrt(variance)
        p = float(2 * norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": float(difference),
            "se": float(np.sqrt(max(variance, 0.0))), "z": float(z), "p_value": p}


def paired_bootstrap_auc_difference(labels: np.ndarray, scores_a: np.ndarray,
                                    scores_b: np.ndarray, resamples: int, seed: int,
                                    alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of AUC(a) - AUC(b), resampling the same cases for both."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    differences = []
    for _ in range(resamples):
        index = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[index])) < 2:
            continue
        differences.append(roc_auc_score(labels[index], scores_a[index])
                           - roc_auc_score(labels[index], scores_b[index]))
    low, high = np.quantile(differences, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def bootstrap_metric_interval(frame: pd.DataFrame, metric: str, resamples: int, seed: int,
                              alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of a thresholded metric (e.g. balanced_accuracy) over rows."""
    rng = np.random.default_rng(seed)
    labels, probs = frame["label"].to_numpy(), frame["prob"].to_numpy()
    values = []
    for _ in range(resamples):
        index = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[index])) < 2:
            continue
        values.append(binary_metrics(labels[index], probs[index])[metric])
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
