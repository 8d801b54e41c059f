"""From scores to figures, shared by evaluate and the baseline (and predict's group table):
the thresholds chosen on validation, the per-group table, the spread over training seeds,
how far the figures can be trusted, and the console summary. No torch here: the baseline
stage, which trains no network, imports this and not the inference code."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.markup import escape

from pipeline.cli import console, warn
from pipeline.stats import LEVELS, aggregate_groups, choose_threshold, decide, group_level


def group_predictions(crops: pd.DataFrame, class_names: tuple[str, str] | list[str],
                      threshold: float, backbone: str) -> pd.DataFrame:
    """One row per group of `crops` (group, prob): group, n_crops, prob (the mean of its
    crops' probabilities), prediction (a class name), threshold, backbone. evaluate and
    predict both write this table."""
    groups = aggregate_groups(crops)
    return pd.DataFrame({"group": groups["group"], "n_crops": groups["n_crops"],
                         "prob": groups["prob"],
                         "prediction": np.asarray(class_names)[decide(groups["prob"],
                                                                      threshold)],
                         "threshold": float(threshold), "backbone": backbone})


def thresholds_from_scores(rule: str | float, crops: pd.DataFrame, resamples: int,
                           seed: int) -> dict:
    """{rule, crop, group, crop_range, group_range}: classifier.threshold applied to the
    validation crops' probabilities (`crops`: group, label, prob) and to their groups' mean
    probabilities (youden: the median cut over resamples of the validation groups, with
    its 5-95% range)."""
    thresholds = {"rule": rule}
    for level in LEVELS:
        frame = crops if level == "crop" else group_level(crops)
        cut = choose_threshold(rule, frame["label"].to_numpy(), frame["prob"].to_numpy(),
                               frame["group"].to_numpy(), resamples, seed)
        thresholds |= {level: cut["cut"], f"{level}_range": [cut["low"], cut["high"]]}
    return thresholds


def fixed_thresholds(rule: float) -> dict:
    """The thresholds of a fixed classifier.threshold: the same cut at both levels."""
    return {"rule": str(rule), "crop": float(rule), "group": float(rule),
            "crop_range": [float(rule)] * 2, "group_range": [float(rule)] * 2}


def group_table(predictions: pd.DataFrame, class_names: tuple[str, str], threshold: float,
                backbone: str) -> pd.DataFrame:
    """predict's groups.csv columns for the test groups, plus their true `label` (the class
    name), so a reader sees which patients were called wrong."""
    table = group_predictions(predictions, class_names, threshold, backbone)
    labels = group_level(predictions).set_index("group")["label"]
    return table.assign(label=np.asarray(class_names)[labels.loc[table["group"]].to_numpy()])


# The figures whose spread over training seeds the tables show beside each backbone.
SEED_FIGURES = ("auc", "balanced_accuracy")


def seed_spread(reports: dict[int, dict]) -> dict:
    """{seeds, <level>_<figure>: {values, mean, sd}}: each backbone's test figures over its
    training seeds (sd with ddof 1; None with one seed), what a difference between two
    cells must exceed before it is more than the seed's doing."""
    spread: dict = {"seeds": list(reports)}
    for level in LEVELS:
        for figure in SEED_FIGURES:
            values = [float(report[level][figure]) for report in reports.values()]
            spread[f"{level}_{figure}"] = {
                "values": values, "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None}
    return spread

# Below this spread (max - min) of the test probabilities a model gives every crop nearly
# one output, wherever it sits: the ordering behind its AUC is too small to be a finding.
COLLAPSE_SPREAD = 0.05

# What "collapsed" means, said once for the report and the docstring below.
COLLAPSE_RULE = ("a model is collapsed when its test probabilities span (max - min) less "
                 f"than {COLLAPSE_SPREAD}, or lie all on one side of 0.5 and span less than the "
                 "gap between 0.5 and the nearest of them: its output moves less than it sits "
                 "off 0.5, and at 0.5 it calls every crop one class")


def reliability(predictions: pd.DataFrame) -> dict:
    """How far the test figures can be trusted: the spread of the probabilities, whether the
    model collapsed, and whether each class has the 2 groups a group AUC needs.

    Collapsed (COLLAPSE_RULE): the probabilities span less than COLLAPSE_SPREAD, or they lie
    all on one side of 0.5 and span less than the gap between 0.5 and the nearest of them.
    The second, relative, part catches a model that has learnt the class prior and little
    else (0.80-0.95 on every test crop: balanced accuracy 0.5 at 0.5) without an absolute
    floor so high that it would flag an honest but uncertain model around 0.5 (0.40-0.60)."""
    probs = predictions["prob"].to_numpy(dtype=float)
    spread = float(probs.max() - probs.min())
    one_side = bool((probs >= 0.5).all() or (probs < 0.5).all())
    offset = float(np.abs(probs - 0.5).min())
    per_class = predictions.groupby("label")["group"].nunique().reindex([0, 1], fill_value=0)
    return {"prob_spread": spread,
            "collapsed": spread < COLLAPSE_SPREAD or (one_side and spread < offset),
            "group_level_estimable": bool((per_class >= 2).all())}


def print_summary(backbone: str, metrics: dict, thresholds: dict) -> None:
    """The console line of a finished evaluation, and warnings a reader must not miss."""
    c, g = metrics["crop"], metrics["group"]
    group_part = (f"group AUC {g['auc']:.3f} {interval_text(g, 'auc')} balanced acc "
                  f"{g['balanced_accuracy']:.3f} at {thresholds['group']:.3g}"
                  if metrics["group_level_estimable"] else "group level not estimable")
    spread = metrics["seeds"]
    seeds = (f"; over {len(spread['seeds'])} seeds group AUC "
             f"{spread['group_auc']['mean']:.3f} ± {spread['group_auc']['sd']:.3f}"
             if spread["group_auc"]["sd"] is not None else "")
    line = (f"{backbone} test: crop AUC {c['auc']:.3f} {interval_text(c, 'auc')} "
            f"balanced acc {c['balanced_accuracy']:.3f} at {thresholds['crop']:.3g}; "
            f"{group_part} ({thresholds['rule']} on validation){seeds}"
            + (" - COLLAPSED MODEL, not a finding" if metrics["collapsed"] else ""))
    # escaped: rich reads "[not estimable]" as markup and would drop it
    console.print(escape(line))
    if metrics["collapsed"]:
        warn(f"{backbone}'s test probabilities span {metrics['prob_spread']:.2g}: a collapsed "
             f"model ({COLLAPSE_RULE}); its AUC is not a finding")
    if not metrics["group_level_estimable"]:
        warn("the test split has fewer than 2 groups of a class: group-level figures are "
             "not estimable")


def interval_text(figures: dict, name: str) -> str:
    """'[0.812, 0.990]' from a level's figures, or '[not estimable]'."""
    low, high = figures.get(f"{name}_ci_low"), figures.get(f"{name}_ci_high")
    return "[not estimable]" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"
