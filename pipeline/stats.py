"""Binary classification metrics at crop and sample level, with bootstrap intervals over samples.

AUC is the area under the ROC curve of the scores; accuracy is the share of correct
decisions at a threshold (chosen on the validation split by `choose_threshold`, or 0.5).
The study used the two words interchangeably; here they are separate keys, always
computed on the held-out test split. Every decision goes through `decide`.

Every interval resamples samples (patients), never crops: crops of one sample are
correlated, and resampling them as if independent gives intervals that are too narrow.
The resampling is stratified by class (each class's samples drawn with replacement,
its count kept), so no resample lacks a class and every resample is kept.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve


class Interval(NamedTuple):
    """A percentile bootstrap interval and the number of resamples it rests on."""

    low: float
    high: float
    resamples: int


class SampleMismatchError(ValueError):
    """Two prediction sets that should be paired cover different test samples."""


def decide(prob: np.ndarray | float, threshold: float = 0.5) -> np.ndarray:
    """1 (positive class) where P(positive) >= threshold, else 0: the one place a
    probability becomes a label, so that a chosen threshold changes every caller at once.

    Compared in float64: the cut is chosen on float64 scores, and against float32 scores
    NumPy would round the cut to float32 first, so a cut between two neighbouring float32
    values (common in a saturated softmax) would decide otherwise than it was chosen."""
    return (np.asarray(prob, dtype=np.float64) >= threshold).astype(int)


def youden_threshold(labels: np.ndarray, prob_positive: np.ndarray) -> float:
    """The threshold that maximises Youden's J = sensitivity + specificity - 1.

    The candidates are the cuts between consecutive distinct scores; each is placed
    halfway between the lowest score called positive and the next lower score, so a new
    case scoring between the two classes' validation scores is not decided by which side
    happened to be the boundary. Among equal J the cut nearest 0.5 wins (no evidence to
    move away from the default), and the cut leaves 0.5 only for J > 0: with one class
    only, one distinct score (a collapsed model) or scores that rank the classes the wrong
    way round, 0.5 is returned.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(prob_positive, float)
    if not np.all(np.isfinite(scores)):
        raise ValueError("validation probabilities that are not finite (NaN or inf): the "
                         "model's outputs are broken; no threshold can be chosen")
    positives, negatives = int(labels.sum()), int((1 - labels).sum())
    if positives == 0 or negatives == 0:
        return 0.5
    distinct = np.unique(scores)[::-1]  # descending
    best_j, best_cut = 0.0, 0.5
    for index, score in enumerate(distinct):
        lower = distinct[index + 1] if index + 1 < len(distinct) else None
        cut = float(score if lower is None else (score + lower) / 2)
        called = scores >= cut
        j = called[labels == 1].mean() + (~called)[labels == 0].mean() - 1
        if j > best_j + 1e-12 or (abs(j - best_j) <= 1e-12
                                  and abs(cut - 0.5) < abs(best_cut - 0.5)):
            best_j, best_cut = j, cut
    return best_cut


def choose_threshold(rule: str | float, labels: np.ndarray, prob_positive: np.ndarray) -> float:
    """classifier.threshold applied to validation scores: `youden`, or a fixed number."""
    if rule == "youden":
        return youden_threshold(labels, prob_positive)
    return float(rule)


def expected_calibration_error(labels: np.ndarray, prob_positive: np.ndarray,
                               bins: int = 10) -> float:
    """ECE over `bins` equal-width bins of the confidence max(p, 1 - p)."""
    confidence = np.maximum(prob_positive, 1 - prob_positive)
    correct = decide(prob_positive, 0.5) == labels  # calibration of the 0.5 decision
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
    predicted = decide(prob_positive, threshold)
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


def aggregate_samples(crops: pd.DataFrame, prob_column: str = "prob") -> pd.DataFrame:
    """One row per sample (group): its crop count and the mean of its crops' probabilities,
    the one aggregation evaluate and predict share."""
    grouped = crops.groupby("group", sort=True)[prob_column]
    return pd.DataFrame({"group": list(grouped.groups), "n_crops": grouped.size().values,
                         "prob": grouped.mean().values})


def sample_level(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per sample (group): label and the mean of its crops' probabilities."""
    grouped = predictions.groupby("group", sort=True)
    if (grouped["label"].nunique() > 1).any():
        raise ValueError("a sample has crops with different labels")
    samples = aggregate_samples(predictions)
    return pd.DataFrame({"group": samples["group"], "label": grouped["label"].first().values,
                         "prob": samples["prob"]})


# ---------------------------------------------------------------- bootstrap over samples
def stratified_sample_draws(sample_labels: np.ndarray, resamples: int,
                            seed: int) -> tuple[np.ndarray, int]:
    """(resamples, n_samples) indices into the samples, and how many columns are negatives.

    Each class's samples are drawn with replacement in their own number, negatives in the
    first columns, so every resample has both classes and the class balance of the data.
    scipy.stats.bootstrap resamples independent groups the same way but refuses a group
    of one observation, which a small test split (one control sample) can have.
    """
    sample_labels = np.asarray(sample_labels).astype(int)
    negatives, positives = np.flatnonzero(sample_labels == 0), np.flatnonzero(sample_labels == 1)
    if len(negatives) == 0 or len(positives) == 0:
        raise ValueError(f"a bootstrap over samples needs samples of both classes; got "
                         f"{len(positives)} positive and {len(negatives)} negative samples")
    rng = np.random.default_rng(seed)
    draws = np.concatenate([rng.choice(negatives, (resamples, len(negatives))),
                            rng.choice(positives, (resamples, len(positives)))], axis=1)
    return draws, len(negatives)


def _auc_from_ranks(scores: np.ndarray, negatives: int) -> np.ndarray:
    """AUC of each row of `scores` whose first `negatives` columns are the negatives
    (Mann-Whitney U from midranks, so ties count one half, as in roc_auc_score)."""
    ranks = rankdata(scores, axis=-1)
    positives = scores.shape[-1] - negatives
    return ((ranks[..., negatives:].sum(axis=-1) - positives * (positives + 1) / 2)
            / (positives * negatives))


def _percentile_interval(values: np.ndarray, alpha: float) -> Interval:
    values = np.asarray(values, float)
    kept = values[np.isfinite(values)]
    if kept.size == 0:
        raise ValueError("no bootstrap resample gave a finite value")
    low, high = np.quantile(kept, [alpha / 2, 1 - alpha / 2])
    return Interval(float(low), float(high), int(kept.size))


THRESHOLDED = ("accuracy", "balanced_accuracy", "sensitivity", "specificity")


def bootstrap_metric_interval(predictions: pd.DataFrame, level: str, metric: str,
                              resamples: int, seed: int, alpha: float = 0.05,
                              threshold: float = 0.5) -> Interval:
    """Percentile interval of `metric` (auc or a thresholded one) at crop or sample level.

    The resampling unit is the sample at both levels, stratified by class; at crop level
    every crop of a drawn sample comes along, so a sample's crops stay together.
    """
    if level not in ("crop", "sample"):
        raise ValueError(f"level must be crop or sample, not {level!r}")
    if metric != "auc" and metric not in THRESHOLDED:
        raise ValueError(f"no bootstrap for {metric!r}; one of auc, {', '.join(THRESHOLDED)}")
    samples = sample_level(predictions)
    draws, negatives = stratified_sample_draws(samples["label"].to_numpy(), resamples, seed)
    if metric == "auc":
        if level == "sample":
            values = _auc_from_ranks(samples["prob"].to_numpy()[draws], negatives)
        else:
            values = _crop_auc_per_draw(predictions, samples["group"], draws, negatives)
        return _percentile_interval(values, alpha)
    # Thresholded metrics only need, per sample, how many of its units (its crops, or the
    # sample itself) were decided correctly: sums over the drawn samples give each resample.
    if level == "sample":
        correct = (decide(samples["prob"], threshold) == samples["label"]).to_numpy()
        units = np.ones(len(samples))
    else:
        decided = predictions.assign(correct=decide(predictions["prob"], threshold)
                                     == predictions["label"])
        per_sample = decided.groupby("group", sort=True)["correct"].agg(["sum", "size"])
        per_sample = per_sample.loc[samples["group"]]
        correct, units = per_sample["sum"].to_numpy(float), per_sample["size"].to_numpy(float)
    correct_drawn, units_drawn = correct[draws], units[draws]
    specificity = (correct_drawn[:, :negatives].sum(1) / units_drawn[:, :negatives].sum(1))
    sensitivity = (correct_drawn[:, negatives:].sum(1) / units_drawn[:, negatives:].sum(1))
    values = {"sensitivity": sensitivity, "specificity": specificity,
              "balanced_accuracy": (sensitivity + specificity) / 2,
              "accuracy": correct_drawn.sum(1) / units_drawn.sum(1)}[metric]
    return _percentile_interval(values, alpha)


def _crop_auc_per_draw(predictions: pd.DataFrame, groups: pd.Series, draws: np.ndarray,
                       negatives: int) -> np.ndarray:
    rows_of = predictions.groupby("group", sort=True).indices
    probs = predictions["prob"].to_numpy()
    crops_of = [probs[rows_of[g]] for g in groups]
    values = np.empty(len(draws))
    for index, draw in enumerate(draws):
        negative = np.concatenate([crops_of[s] for s in draw[:negatives]])
        positive = np.concatenate([crops_of[s] for s in draw[negatives:]])
        values[index] = _auc_from_ranks(np.concatenate([negative, positive]), len(negative))
    return values


def bootstrap_auc_interval(predictions: pd.DataFrame, level: str, resamples: int, seed: int,
                           alpha: float = 0.05) -> Interval:
    """Percentile interval of AUC, resampling samples (stratified by class)."""
    return bootstrap_metric_interval(predictions, level, "auc", resamples, seed, alpha)


LEVELS = ("crop", "sample")


def evaluation_report(predictions: pd.DataFrame, resamples: int, seed: int,
                      thresholds: dict[str, float] | None = None) -> dict:
    """{crop: {...}, sample: {...}, at_0_5: {crop: {...}, sample: {...}}}.

    Each level's metrics are taken at its threshold (`thresholds[level]`, default 0.5) with
    AUC and balanced-accuracy 95% intervals from a bootstrap over samples (stratified by
    class); `at_0_5` repeats the thresholded figures at 0.5 for comparison.
    """
    thresholds = thresholds or {}
    report, at_half = {}, {}
    samples = sample_level(predictions)
    for level, frame in (("crop", predictions), ("sample", samples)):
        labels, probs = frame["label"].to_numpy(), frame["prob"].to_numpy()
        threshold = float(thresholds.get(level, 0.5))
        metrics = binary_metrics(labels, probs, threshold)
        for metric in ("auc", "balanced_accuracy"):
            low, high, kept = bootstrap_metric_interval(predictions, level, metric, resamples,
                                                        seed, threshold=threshold)
            metrics[f"{metric}_ci_low"], metrics[f"{metric}_ci_high"] = low, high
            metrics[f"{metric}_ci_resamples"] = kept
        report[level] = metrics
        half = binary_metrics(labels, probs, 0.5)
        at_half[level] = {key: half[key] for key in THRESHOLDED}
    report["at_0_5"] = at_half
    return report


def caveats(evaluation: dict) -> str:
    """What keeps an evaluate metrics.json from being a finding, in words ('' if nothing):
    a collapsed model, or too few test samples of a class for sample-level figures."""
    notes = []
    if evaluation.get("collapsed"):
        notes.append("collapsed")
    if evaluation.get("sample_level_estimable") is False:
        notes.append("sample level not estimable")
    return ", ".join(notes)


def roc_points(labels: np.ndarray, prob_positive: np.ndarray) -> list[dict[str, float]]:
    fpr, tpr, thresholds = roc_curve(labels, prob_positive)
    thresholds = np.minimum(thresholds, 1.0)  # sklearn puts +inf first; JSON cannot hold it
    return [{"fpr": float(f), "tpr": float(t), "threshold": float(th)}
            for f, t, th in zip(fpr, tpr, thresholds)]


# ---------------------------------------------------------------- paired comparisons
def delong_test(labels: np.ndarray, scores_a: np.ndarray,
                scores_b: np.ndarray) -> dict[str, float | None]:
    """DeLong's test for two correlated ROC AUCs on the same cases (DeLong et al. 1988).

    Uses the midrank formulation of Sun & Xu (2014). Returns both AUCs, their difference,
    its standard error, z and the two-sided p-value. Where the estimated variance of the
    difference is zero (both scorers perfect, or both constant) the test has nothing to
    stand on: z and p_value are None ("not estimable"), not p = 1.
    """
    labels = np.asarray(labels).astype(int)
    positives, negatives = labels == 1, labels == 0
    m, n = int(positives.sum()), int(negatives.sum())
    if m < 2 or n < 2:
        raise ValueError(f"DeLong's test needs at least two cases of each class "
                         f"(got {m} positive, {n} negative)")
    aucs, v10, v01 = [], [], []
    for scores in (np.asarray(scores_a, float), np.asarray(scores_b, float)):
        pos, neg = scores[positives], scores[negatives]
        all_ranks = rankdata(np.concatenate([pos, neg]))  # midranks: ties share their mean
        pos_ranks, neg_ranks = rankdata(pos), rankdata(neg)
        aucs.append((all_ranks[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((all_ranks[:m] - pos_ranks) / n)        # structural components, positives
        v01.append(1 - (all_ranks[m:] - neg_ranks) / m)    # and negatives
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    covariance = s10 / m + s01 / n
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = float(aucs[0] - aucs[1])
    z = p = None
    if variance > 1e-15:  # below this it is rounding error of an exact zero
        z = float(difference / np.sqrt(variance))
        p = float(2 * norm.sf(abs(z)))
    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "difference": difference,
            "se": float(np.sqrt(max(variance, 0.0))), "z": z, "p_value": p}


def paired_bootstrap_auc_difference(labels: np.ndarray, scores_a: np.ndarray,
                                    scores_b: np.ndarray, resamples: int, seed: int,
                                    alpha: float = 0.05) -> Interval:
    """Percentile interval of AUC(a) - AUC(b), the same resampled cases for both.

    Each row is one sample (see sample_level); rows are drawn stratified by class.
    """
    draws, negatives = stratified_sample_draws(labels, resamples, seed)  # negatives first
    a = _auc_from_ranks(np.asarray(scores_a, float)[draws], negatives)
    b = _auc_from_ranks(np.asarray(scores_b, float)[draws], negatives)
    return _percentile_interval(a - b, alpha)


def paired_sample_comparison(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame,
                             resamples: int, seed: int) -> dict:
    """Sample-level AUC of a against b on the same test samples: DeLong and paired bootstrap.

    Raises SampleMismatchError when the two cover different samples (or label one
    differently), and ValueError when a class has fewer than two samples.
    """
    left = sample_level(predictions_a).set_index("group").sort_index()
    right = sample_level(predictions_b).set_index("group").sort_index()
    if not left.index.equals(right.index):
        only_a = sorted(set(left.index) - set(right.index))
        only_b = sorted(set(right.index) - set(left.index))
        raise SampleMismatchError(f"different test samples ({len(only_a)} only in the first, "
                                  f"{len(only_b)} only in the second, e.g. "
                                  f"{(only_a + only_b)[:3]})")
    if not (left["label"] == right["label"]).all():
        raise SampleMismatchError("the same test samples carry different labels")
    labels = left["label"].to_numpy()
    test = delong_test(labels, left["prob"].to_numpy(), right["prob"].to_numpy())
    interval = paired_bootstrap_auc_difference(labels, left["prob"].to_numpy(),
                                               right["prob"].to_numpy(), resamples, seed)
    return {"samples": len(labels), "auc_a": test["auc_a"], "auc_b": test["auc_b"],
            "auc_difference": test["difference"], "difference_ci_low": interval.low,
            "difference_ci_high": interval.high, "bootstrap_resamples": interval.resamples,
            "delong_se": test["se"], "delong_z": test["z"], "delong_p_value": test["p_value"]}
