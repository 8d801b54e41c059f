"""Binary classification statistics at crop and group level, with intervals and tests that
hold at a few tens of groups.

A *group* is one patient sample: every crop folder of one sample (`SD003_17_crops_r` and
`SD003_17_crops2_r`, read by data.group_regex), the unit that is never split. Crops of one
group are correlated, so every interval and test here treats the group as the unit:

* AUC at group level (a group's score is the mean of its crops' probabilities): the
  Hanley-McNeil variance inverted as a score interval (Newcombe 2006), which keeps its
  coverage near the ends of [0, 1] and gives a one-sided bound [low, 1] at perfect
  separation, where a bootstrap or a Wald interval collapses to a point;
* AUC at crop level: DeLong's variance with the structural components summed per group
  (Obuchowski 1997), on the logit scale with a t quantile on min(groups) - 1 degrees of
  freedom; where it is not estimable (AUC 0 or 1), the group-level score bound;
* proportions (sensitivity, specificity, accuracy): Wilson intervals, at crop level on the
  effective number of crops that the between-group variance leaves; balanced accuracy by
  MOVER (Zou & Donner 2008) from its two Wilson intervals;
* paired comparisons: the AUC difference over its clustered DeLong standard error, referred
  to its own distribution under group-by-group swaps of the two models' within-model ranks
  (a studentized permutation test: exact up to 2**14 groups' swaps, else Monte Carlo),
  Holm-adjusted across a table's comparisons.

`tests/test_intervals.py` checks coverage and false-positive rates by simulation. Where no
interval exists (fewer than MIN_GROUPS_PER_CLASS groups in a class, or a zero width) the
bounds are None ("not estimable"), never a point or a guess.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.stats import norm, rankdata
from scipy.stats import t as student_t
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

LEVELS = ("crop", "group")
THRESHOLDED = ("accuracy", "balanced_accuracy", "sensitivity", "specificity")
ALPHA = 0.05
# Fewer groups than this in a class and no interval or paired test is reported: a
# between-group variance needs two groups, and one group's crops are one observation.
MIN_GROUPS_PER_CLASS = 2


class Interval(NamedTuple):
    """A 95% interval; low and high are None where it is not estimable."""

    low: float | None
    high: float | None
    method: str


NOT_ESTIMABLE = Interval(None, None, "not estimable")


class GroupMismatchError(ValueError):
    """Two prediction sets that should be paired cover different test groups or crops."""


def decide(prob: np.ndarray | float, threshold: float = 0.5) -> np.ndarray:
    """1 (positive class) where P(positive) >= threshold, else 0: the one place a
    probability becomes a label, so that a chosen threshold changes every caller at once.

    Compared in float64: the cut is chosen on float64 scores, and against float32 scores
    NumPy would round the cut to float32 first, so a cut between two neighbouring float32
    values (common in a saturated softmax) would decide otherwise than it was chosen."""
    return (np.asarray(prob, dtype=np.float64) >= threshold).astype(int)


# ---------------------------------------------------------------- thresholds
def youden_threshold(labels: np.ndarray, prob_positive: np.ndarray) -> float:
    """The cut that maximises Youden's J = sensitivity + specificity - 1.

    J is constant between consecutive distinct scores, so the optimal cuts form intervals
    (a, b]; the cut is 0.5 where an optimal interval holds it (no evidence to move from the
    default), else the middle of the optimal interval nearest 0.5, so that a new case
    scoring between the two classes' validation scores is not decided by which one
    happened to be the boundary. With one class only, one distinct score (a collapsed
    model) or scores that rank the classes the wrong way round (J <= 0), 0.5.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(prob_positive, float)
    if not np.all(np.isfinite(scores)):
        raise ValueError("validation probabilities that are not finite (NaN or inf): the "
                         "model's outputs are broken; no threshold can be chosen")
    pos, neg = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    distinct = np.unique(scores)
    # a cut in (distinct[i-1], distinct[i]] calls every score >= distinct[i] positive
    j = (1 - np.searchsorted(pos, distinct, "left") / len(pos)
         + np.searchsorted(neg, distinct, "left") / len(neg) - 1)
    if j.max() <= 1e-12:
        return 0.5
    # the first interval (-inf, min] calls everything positive (J = 0): never optimal here
    optimal = np.flatnonzero(j >= j.max() - 1e-12)
    lows, highs = distinct[optimal - 1], distinct[optimal]
    if np.any((lows < 0.5) & (0.5 <= highs)):
        return 0.5
    nearest = int(np.argmin(np.where(highs < 0.5, 0.5 - highs, lows - 0.5)))
    low, high = lows[nearest], highs[nearest]
    # above `low` even where the two scores are neighbouring floats and the middle rounds
    return float(max((low + high) / 2, np.nextafter(low, np.inf)))


def robust_threshold(labels: np.ndarray, prob_positive: np.ndarray, groups: np.ndarray,
                     resamples: int, seed: int) -> dict[str, float]:
    """{cut, low, high}: the median of youden_threshold over bootstrap resamples of the
    validation groups (each class's groups drawn with replacement, every crop of a drawn
    group coming along), and the 5-95% range of those cuts. One Youden cut on a few
    validation groups moves with every group; the median does not follow one group. A
    resample that separates nothing (J <= 0) contributes 0.5, which pulls the median toward
    the default where the evidence is weak."""
    frame = pd.DataFrame({"label": np.asarray(labels).astype(int),
                          "prob": np.asarray(prob_positive, float), "group": groups})
    by_group = {g: part for g, part in frame.groupby("group", sort=True)}
    group_labels = np.array([part["label"].iloc[0] for part in by_group.values()])
    if len(np.unique(group_labels)) < 2:
        cut = youden_threshold(frame["label"], frame["prob"])
        return {"cut": cut, "low": cut, "high": cut}
    draws, _ = stratified_group_draws(group_labels, resamples, seed)
    names = list(by_group)
    cuts = []
    for draw in draws:
        drawn = pd.concat([by_group[names[i]] for i in draw])
        cuts.append(youden_threshold(drawn["label"].to_numpy(), drawn["prob"].to_numpy()))
    low, cut, high = np.quantile(cuts, [0.05, 0.5, 0.95])
    return {"cut": float(cut), "low": float(low), "high": float(high)}


def choose_threshold(rule: str | float, labels: np.ndarray, prob_positive: np.ndarray,
                     groups: np.ndarray, resamples: int, seed: int) -> dict[str, float]:
    """classifier.threshold applied to validation scores: {cut, low, high}."""
    if rule == "youden":
        return robust_threshold(labels, prob_positive, groups, resamples, seed)
    return {"cut": float(rule), "low": float(rule), "high": float(rule)}


def stratified_group_draws(group_labels: np.ndarray, resamples: int,
                           seed: int) -> tuple[np.ndarray, int]:
    """(resamples, n_groups) indices into the groups, negatives in the first columns, and
    how many columns are negatives: each class's groups drawn with replacement in their own
    number, so every resample has both classes and the data's class balance."""
    group_labels = np.asarray(group_labels).astype(int)
    negatives, positives = np.flatnonzero(group_labels == 0), np.flatnonzero(group_labels == 1)
    if len(negatives) == 0 or len(positives) == 0:
        raise ValueError(f"a resample of groups needs groups of both classes; got "
                         f"{len(positives)} positive and {len(negatives)} negative groups")
    rng = np.random.default_rng(seed)
    draws = np.concatenate([rng.choice(negatives, (resamples, len(negatives))),
                            rng.choice(positives, (resamples, len(positives)))], axis=1)
    return draws, len(negatives)


# ---------------------------------------------------------------- point figures
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
    prob_positive = np.asarray(prob_positive, dtype=np.float64)
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
            "ece": expected_calibration_error(labels, prob_positive),
            "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn), "n": int(len(labels))}


def aggregate_groups(crops: pd.DataFrame, prob_column: str = "prob") -> pd.DataFrame:
    """One row per group: its crop count and the mean of its crops' probabilities, in
    float64 (a float32 mean ties groups that float64 tells apart, and moves the AUC)."""
    grouped = crops.assign(**{prob_column: crops[prob_column].astype(np.float64)}).groupby(
        "group", sort=True)[prob_column]
    return pd.DataFrame({"group": list(grouped.groups), "n_crops": grouped.size().values,
                         "prob": grouped.mean().values})


def group_level(predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per group: label and the mean of its crops' probabilities."""
    grouped = predictions.groupby("group", sort=True)
    if (grouped["label"].nunique() > 1).any():
        raise ValueError("a group has crops with different labels")
    groups = aggregate_groups(predictions)
    return pd.DataFrame({"group": groups["group"], "label": grouped["label"].first().values,
                         "prob": groups["prob"]})


def at_level(predictions: pd.DataFrame, level: str) -> pd.DataFrame:
    """The rows a figure at `level` is computed from: crops, or groups (mean probability)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    return predictions if level == "crop" else group_level(predictions)


def level_auc(predictions: pd.DataFrame, level: str) -> float:
    """The AUC at `level`, in float64: the one computation every table and figure reads."""
    rows = at_level(predictions, level)
    labels = rows["label"].to_numpy().astype(int)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, rows["prob"].to_numpy(dtype=np.float64)))


def roc_points(labels: np.ndarray, prob_positive: np.ndarray) -> list[dict[str, float]]:
    fpr, tpr, thresholds = roc_curve(labels, np.asarray(prob_positive, dtype=np.float64))
    thresholds = np.minimum(thresholds, 1.0)  # sklearn puts +inf first; JSON cannot hold it
    return [{"fpr": float(f), "tpr": float(t), "threshold": float(th)}
            for f, t, th in zip(fpr, tpr, thresholds)]


# ---------------------------------------------------------------- intervals
def _checked(interval: Interval) -> Interval:
    """An interval of zero width claims what no finite sample shows: not estimable."""
    if interval.low is None or interval.high is None or interval.high - interval.low < 1e-12:
        return NOT_ESTIMABLE
    return interval


def hanley_mcneil_variance(auc: float, n_negative: int, n_positive: int) -> float:
    """Var(AUC) by Hanley & McNeil (1982), evaluated at `auc`."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    return (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc)
            + (n_negative - 1) * (q2 - auc * auc)) / (n_negative * n_positive)


def auc_score_interval(auc: float, n_negative: int, n_positive: int,
                       alpha: float = ALPHA) -> Interval:
    """All theta whose Hanley-McNeil variance puts the observed AUC within z standard
    errors (the score method, Newcombe 2006): defined at AUC 0 and 1, never a point; not
    estimable below MIN_GROUPS_PER_CLASS of a class."""
    if not np.isfinite(auc) or min(n_negative, n_positive) < MIN_GROUPS_PER_CLASS:
        return NOT_ESTIMABLE
    z = norm.ppf(1 - alpha / 2)

    def gap(theta: float) -> float:
        return (auc - theta) ** 2 - z * z * hanley_mcneil_variance(theta, n_negative, n_positive)

    eps = 1e-9
    low = 0.0 if auc <= eps or gap(eps) <= 0 else brentq(gap, eps, auc - eps)
    high = 1.0 if auc >= 1 - eps or gap(1 - eps) <= 0 else brentq(gap, auc + eps, 1 - eps)
    side = "one-sided (the other limit is the observed 0 or 1), " if auc in (0.0, 1.0) else ""
    return _checked(Interval(float(low), float(high), f"{side}Hanley-McNeil score"))


def _placements(scores: np.ndarray, positives: int) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placement values of each row of `scores`, positives in its first columns:
    per positive the share of negatives below it, per negative the share of positives
    above it, ties counting half (each row's mean over its positives is its AUC)."""
    ranks = rankdata(scores, axis=1)
    negatives = scores.shape[1] - positives
    # each class's own ranks from one more ranking, of the pooled ranks (whole or half
    # numbers: exact) with the negatives' lifted above every positive's
    lifted = np.concatenate([ranks[:, :positives], ranks[:, positives:] + scores.shape[1]],
                            axis=1)
    within = rankdata(lifted, axis=1)
    below = (ranks[:, :positives] - within[:, :positives]) / negatives
    above = 1 - (ranks[:, positives:] - (within[:, positives:] - positives)) / positives
    return below, above


def _structural_components(predictions: pd.DataFrame, score_column: str = "prob"
                           ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(AUC, per-positive-group V10 sums, per-negative-group V01 sums, crops per positive
    group, crops per negative group): DeLong's placement values summed over each group's
    crops (Obuchowski 1997)."""
    labels = predictions["label"].to_numpy().astype(int)
    scores = predictions[score_column].to_numpy(dtype=np.float64)
    groups = predictions["group"].to_numpy()
    pos, neg = scores[labels == 1], scores[labels == 0]
    below, above = _placements(np.concatenate([pos, neg])[None, :], len(pos))
    placement_pos, placement_neg = below[0], above[0]
    auc = float(placement_pos.mean())
    v10 = pd.Series(placement_pos).groupby(groups[labels == 1]).agg(["sum", "size"])
    v01 = pd.Series(placement_neg).groupby(groups[labels == 0]).agg(["sum", "size"])
    return (auc, v10["sum"].to_numpy(), v01["sum"].to_numpy(), v10["size"].to_numpy(),
            v01["size"].to_numpy())


def clustered_auc_variance(predictions: pd.DataFrame) -> tuple[float, float, int, int]:
    """(crop AUC, its variance with crops clustered in groups, positive groups, negative
    groups): Obuchowski's (1997) clustered DeLong variance."""
    auc, v10, v01, m, n = _structural_components(predictions)
    groups_pos, groups_neg = len(v10), len(v01)
    if groups_pos < 2 or groups_neg < 2:
        return auc, float("nan"), groups_pos, groups_neg
    s10 = groups_pos / ((groups_pos - 1) * m.sum()) * ((v10 - m * auc) ** 2).sum()
    s01 = groups_neg / ((groups_neg - 1) * n.sum()) * ((v01 - n * auc) ** 2).sum()
    return auc, float(s10 / m.sum() + s01 / n.sum()), groups_pos, groups_neg


def crop_auc_interval(predictions: pd.DataFrame, alpha: float = ALPHA) -> Interval:
    """Crop-level AUC interval with crops clustered in groups: clustered DeLong on the logit
    scale, t quantile on min(groups) - 1 degrees of freedom; at AUC 0 or 1 (no variance)
    the group-level score bound, which counts each group once; not estimable below
    MIN_GROUPS_PER_CLASS groups of a class or where the groups show no variance."""
    auc, variance, groups_pos, groups_neg = clustered_auc_variance(predictions)
    if min(groups_pos, groups_neg) < MIN_GROUPS_PER_CLASS:
        return NOT_ESTIMABLE
    if auc in (0.0, 1.0):
        # every positive crop above (below) every negative one: the group means are too,
        # so the crop AUC is the group AUC and the group-level bound is its bound
        bound = auc_score_interval(auc, groups_neg, groups_pos, alpha)
        return bound._replace(method=f"{bound.method} over groups")
    if not np.isfinite(variance) or variance <= 0:
        return NOT_ESTIMABLE
    logit, se = np.log(auc / (1 - auc)), np.sqrt(variance) / (auc * (1 - auc))
    q = student_t.ppf(1 - alpha / 2, min(groups_pos, groups_neg) - 1)
    low, high = (1 / (1 + np.exp(-(logit + sign * q * se))) for sign in (-1, 1))
    return _checked(Interval(float(low), float(high), "clustered DeLong, logit, t"))


def wilson_interval(successes: float, n: float, alpha: float = ALPHA,
                    z: float | None = None) -> Interval:
    """Wilson's score interval for a proportion (n may be an effective, non-integer n; `z`
    a wider quantile than the normal one)."""
    if n <= 0:
        return NOT_ESTIMABLE
    z = norm.ppf(1 - alpha / 2) if z is None else z
    p = min(max(successes / n, 0.0), 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at p = 0 or 1 the bound is exactly 0 or 1 in theory, and rounding leaves it a hair
    # inside: the interval would exclude its own estimate and never cover a truth of 0 or 1
    low = 0.0 if p == 0 else max(0.0, centre - half)
    high = 1.0 if p == 1 else min(1.0, centre + half)
    return _checked(Interval(float(low), float(high), "Wilson"))


def clustered_proportion_interval(correct: np.ndarray, units: np.ndarray,
                                  alpha: float = ALPHA) -> Interval:
    """Wilson interval of sum(correct) / sum(units) over groups, at the effective number of
    units the between-group variance leaves (n / design effect, at most n), with a t
    quantile on groups - 1 degrees of freedom (few groups estimate the variance loosely).
    Where the groups show no variance to estimate (a proportion of 0 or 1), each group
    counts once: crops of one group are not independent evidence. Not estimable below
    MIN_GROUPS_PER_CLASS groups."""
    correct, units = np.asarray(correct, float), np.asarray(units, float)
    total, groups = units.sum(), len(units)
    if groups < MIN_GROUPS_PER_CLASS or total == 0:
        return NOT_ESTIMABLE
    if (units == 1).all():  # one unit per group (the group level): plain Wilson
        return wilson_interval(correct.sum(), total, alpha)
    p = correct.sum() / total
    effective = float(groups)
    if 0 < p < 1:
        # ratio-estimator variance of p from the groups' totals (cluster-robust)
        variance = groups / (groups - 1) * (((correct - p * units) ** 2).sum()) / total ** 2
        effective = total if variance <= 0 else float(np.clip(p * (1 - p) / variance, 1, total))
    interval = wilson_interval(p * effective, effective, alpha,
                               student_t.ppf(1 - alpha / 2, groups - 1))
    return (interval._replace(method="Wilson, clustered effective n, t")
            if interval.low is not None else interval)


def mover_mean(first: tuple[float, Interval], second: tuple[float, Interval]) -> Interval:
    """Interval of (a + b) / 2 from intervals of a and b (MOVER, Zou & Donner 2008)."""
    (a, ia), (b, ib) = first, second
    if None in (ia.low, ia.high, ib.low, ib.high):
        return NOT_ESTIMABLE
    centre = (a + b) / 2
    low = centre - np.sqrt((a - ia.low) ** 2 + (b - ib.low) ** 2) / 2
    high = centre + np.sqrt((ia.high - a) ** 2 + (ib.high - b) ** 2) / 2
    # within [0, 1] in theory; clipped so that rounding cannot leave it
    return _checked(Interval(float(max(0.0, low)), float(min(1.0, high)),
                             f"MOVER of {ia.method}"))


def thresholded_intervals(predictions: pd.DataFrame, level: str,
                          threshold: float) -> dict[str, Interval]:
    """Intervals of sensitivity, specificity, accuracy and balanced accuracy at `level`,
    the group being the unit (at crop level through the clustered Wilson interval); none
    for a figure that reads a class of fewer than MIN_GROUPS_PER_CLASS groups."""
    rows = at_level(predictions, level).assign(
        correct=lambda f: decide(f["prob"], threshold) == f["label"])
    per_group = rows.groupby("group", sort=True).agg(
        correct=("correct", "sum"), units=("correct", "size"), label=("label", "first"))
    out, points = {}, {}
    for name, label in (("specificity", 0), ("sensitivity", 1)):
        part = per_group[per_group["label"] == label]
        out[name] = clustered_proportion_interval(part["correct"], part["units"])
        points[name] = part["correct"].sum() / max(part["units"].sum(), 1)
    # accuracy pools the classes in the split's proportions: where one class is a single
    # patient, that patient is half the evidence and its variance cannot be estimated
    groups_per_class = per_group["label"].value_counts().reindex([0, 1], fill_value=0)
    out["accuracy"] = (clustered_proportion_interval(per_group["correct"], per_group["units"])
                       if groups_per_class.min() >= MIN_GROUPS_PER_CLASS else NOT_ESTIMABLE)
    out["balanced_accuracy"] = mover_mean((points["sensitivity"], out["sensitivity"]),
                                          (points["specificity"], out["specificity"]))
    return out


def evaluation_report(predictions: pd.DataFrame, thresholds: dict[str, float] | None = None
                      ) -> dict:
    """{crop: {...}, group: {...}, at_0_5: {crop: {...}, group: {...}}}.

    Each level's figures are taken at its threshold (`thresholds[level]`, default 0.5),
    with 95% intervals (`<figure>_ci_low`, `_ci_high`, `_ci_method`; None where not
    estimable) for AUC, sensitivity, specificity, accuracy and balanced accuracy; `at_0_5`
    repeats the thresholded figures at 0.5 for comparison.
    """
    thresholds = thresholds or {}
    report, at_half = {}, {}
    for level in LEVELS:
        rows = at_level(predictions, level)
        labels, probs = rows["label"].to_numpy(), rows["prob"].to_numpy(dtype=np.float64)
        threshold = float(thresholds.get(level, 0.5))
        metrics = binary_metrics(labels, probs, threshold)
        metrics["auc"] = level_auc(predictions, level)
        groups = group_level(predictions)["label"].value_counts()
        metrics["groups_negative"] = int(groups.get(0, 0))
        metrics["groups_positive"] = int(groups.get(1, 0))
        intervals = {"auc": (crop_auc_interval(predictions) if level == "crop" else
                             auc_score_interval(metrics["auc"], metrics["groups_negative"],
                                                metrics["groups_positive"]))}
        intervals |= thresholded_intervals(predictions, level, threshold)
        for name, interval in intervals.items():
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = interval.low, interval.high
            metrics[f"{name}_ci_method"] = interval.method
        report[level] = metrics
        half = binary_metrics(labels, probs, 0.5)
        at_half[level] = {key: half[key] for key in THRESHOLDED}
    report["at_0_5"] = at_half
    return report


def caveats(evaluation: dict) -> str:
    """What keeps an evaluate metrics.json from being a finding, in words ('' if nothing):
    a collapsed model, or too few test groups of a class for group-level figures."""
    notes = []
    if evaluation.get("collapsed"):
        notes.append("collapsed")
    if evaluation.get("group_level_estimable") is False:
        notes.append("group level not estimable")
    return ", ".join(notes)


# ---------------------------------------------------------------- paired comparisons
def paired_frames(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame) -> pd.DataFrame:
    """crop_id, group, label, prob_a, prob_b on the crops both cover; GroupMismatchError
    when the two cover different crops or place or label one differently."""
    keys = ["crop_id", "group", "label"]
    left = predictions_a.sort_values("crop_id").reset_index(drop=True)
    right = predictions_b.sort_values("crop_id").reset_index(drop=True)
    if len(left) != len(right) or not left[keys].equals(right[keys]):
        only_a = sorted(set(left["crop_id"]) - set(right["crop_id"]))
        only_b = sorted(set(right["crop_id"]) - set(left["crop_id"]))
        detail = (f"{len(only_a)} crops only in the first, {len(only_b)} only in the second"
                  if only_a or only_b else "the same crops in other groups or classes")
        raise GroupMismatchError(f"different test crops ({detail})")
    return left[keys].assign(prob_a=left["prob"].astype(np.float64),
                             prob_b=right["prob"].astype(np.float64))


def _flip_masks(groups: int, permutations: int, seed: int) -> np.ndarray:
    """(P, groups) booleans: every sign pattern when 2**groups <= 16384, else P random ones
    (the first row is always the observed, unflipped pattern)."""
    if 2 ** groups <= 16384:
        return np.array(list(itertools.product([False, True], repeat=groups)), dtype=bool)
    rng = np.random.default_rng(seed)
    flips = rng.random((permutations, groups)) < 0.5
    flips[0] = False
    return flips


def _studentized_differences(labels: np.ndarray, a: np.ndarray, b: np.ndarray,
                             group_index: np.ndarray, flips: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(AUC(a') - AUC(b'), that difference over its clustered DeLong standard error) for each
    flip pattern, where a flipped group swaps its a and b. The variance sums each group's
    placement differences (Obuchowski 1997), as clustered_auc_variance does for one AUC."""
    order = np.argsort(labels == 0, kind="stable")  # positives first
    a, b, group_index = a[order], b[order], group_index[order]
    positives = int(labels.sum())
    member = np.zeros((len(labels), flips.shape[1]))
    member[np.arange(len(labels)), group_index] = 1.0
    # per class: crops x its groups, each crop weighted 1 / (the class's crops)
    classes = []
    for rows in (slice(0, positives), slice(positives, None)):
        own = member[rows][:, member[rows].sum(0) > 0]
        classes.append((own / len(own), own.sum(0) / len(own), own.shape[1]))
    chunk = max(16, 2_000_000 // len(labels))  # bounded memory for thousands of crops
    differences, t_values = [], []
    for first in range(0, len(flips), chunk):
        swapped = flips[first:first + chunk][:, group_index]
        below, above = _placements(np.concatenate([np.where(swapped, b, a),
                                                   np.where(swapped, a, b)]), positives)
        (below_a, below_b), (above_a, above_b) = np.split(below, 2), np.split(above, 2)
        difference = (below_a - below_b).mean(1)
        variance = np.zeros_like(difference)
        for placed, (weights, share, groups) in zip((below_a - below_b, above_a - above_b),
                                                    classes):
            # each group's part of the difference less its share of the whole
            deviation = placed @ weights - difference[:, None] * share
            variance += groups / (groups - 1) * (deviation ** 2).sum(1)
        # no difference is t = 0; a difference with no spread at all is infinitely far out
        tiny = np.abs(difference) < 1e-12
        t = np.divide(difference, np.sqrt(variance), out=np.copysign(np.inf, difference),
                      where=variance > 1e-24)
        differences.append(difference)
        t_values.append(np.where(tiny, 0.0, t))
    return np.concatenate(differences), np.concatenate(t_values)


def paired_permutation_test(paired: pd.DataFrame, level: str, permutations: int,
                            seed: int) -> dict:
    """AUC(a) - AUC(b) at `level` and its two-sided p-value from a studentized permutation
    test over groups.

    Swapping the two models' raw scores group by group tests 'a and b score alike', not
    'equal AUC': two models of equal AUC whose scores were shaped differently were rejected
    in 9% of runs at 5%, and a model whose scores sat on another scale cost power. So each
    model's scores are replaced by their ranks first (the AUC is unchanged, the two share one
    scale), and the statistic is the difference over its clustered DeLong standard error,
    recomputed in every swapped world: studentizing keeps the test near its level under
    equal AUC alone (the principle of Janssen 1997 and Chung & Romano 2013;
    tests/test_intervals.py checks it by simulation). The group is the unit at both levels:
    at crop level a group's crops swap together and the variance sums them per group.
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    codes, names = pd.factorize(paired["group"], sort=True)
    labels = paired["label"].to_numpy().astype(int)
    a, b = (paired[column].to_numpy(dtype=np.float64) for column in ("prob_a", "prob_b"))
    group_labels = (np.bincount(codes, labels, minlength=len(names)) > 0).astype(int)
    if level == "group":  # one row per group: its label and its crops' mean probabilities
        crops = np.bincount(codes, minlength=len(names))
        a, b = np.bincount(codes, a) / crops, np.bincount(codes, b) / crops
        labels, codes = group_labels, np.arange(len(names))
    positive_groups = int(group_labels.sum())
    if min(positive_groups, len(names) - positive_groups) < MIN_GROUPS_PER_CLASS:
        raise ValueError(f"a paired test needs {MIN_GROUPS_PER_CLASS} groups of each class (got "
                         f"{positive_groups} positive, {len(names) - positive_groups} negative)")
    flips = _flip_masks(len(names), permutations, seed)
    differences, t_values = _studentized_differences(labels, rankdata(a), rankdata(b), codes,
                                                     flips)
    # equal up to rounding counts as extreme (one pattern's t computed two ways)
    extreme = np.abs(t_values) >= np.abs(t_values[0]) * (1 - 1e-9)
    # exact enumeration includes the observed pattern; Monte Carlo counts it once (+1)
    p_value = extreme.mean() if 2 ** len(names) <= 16384 else \
        (extreme[1:].sum() + 1) / len(t_values)
    return {"difference": float(differences[0]), "p_value": float(p_value),
            "permutations": int(len(t_values)), "groups": int(len(names))}


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None)."""
    present = [(p, i) for i, p in enumerate(p_values) if p is not None and np.isfinite(p)]
    adjusted: list[float | None] = [None] * len(p_values)
    running, m = 0.0, len(present)
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


def paired_comparison(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame,
                      permutations: int, seed: int) -> dict:
    """Both levels of a against b on the same test crops: each AUC (as level_auc computes
    it), their difference and its permutation p-value over groups (unadjusted; the table
    adds Holm's adjustment across its comparisons). Raises GroupMismatchError when the
    two cover different crops, ValueError when a class has fewer than two groups."""
    paired = paired_frames(predictions_a, predictions_b)
    groups = paired.groupby("group")["label"].first().value_counts()
    if min(groups.get(0, 0), groups.get(1, 0)) < MIN_GROUPS_PER_CLASS:
        raise ValueError(f"a paired test needs {MIN_GROUPS_PER_CLASS} groups of each class "
                         f"(got {groups.get(1, 0)} positive, {groups.get(0, 0)} negative)")
    row = {"groups": int(paired["group"].nunique()), "crops": len(paired)}
    for level in LEVELS:
        test = paired_permutation_test(paired, level, permutations, seed)
        a = level_auc(paired.rename(columns={"prob_a": "prob"}), level)
        b = level_auc(paired.rename(columns={"prob_b": "prob"}), level)
        row |= {f"{level}_auc_a": a, f"{level}_auc_b": b, f"{level}_difference": a - b,
                f"{level}_p_value": test["p_value"]}
    row["permutations"] = test["permutations"]
    return row
