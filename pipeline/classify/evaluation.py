"""Evaluating a trained classifier on the test split: how far its figures can be trusted,
how fast it infers, the per-group table, the spread over training seeds, and the console
summary."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from pipeline.classify.inference import group_predictions, predict_proba
from pipeline.cli import console, warn
from pipeline.stats import LEVELS, group_level


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

# A model whose test probabilities all lie within this of each other has collapsed to one
# output: the ordering behind its AUC is rounding noise, not a finding.
COLLAPSE_SPREAD = 1e-3


def reliability(predictions: pd.DataFrame) -> dict:
    """How far the test figures can be trusted: the spread of the probabilities (collapsed
    below COLLAPSE_SPREAD) and whether each class has the 2 groups a group AUC needs."""
    spread = float(predictions["prob"].max() - predictions["prob"].min())
    per_class = predictions.groupby("label")["group"].nunique().reindex([0, 1], fill_value=0)
    return {"prob_spread": spread, "collapsed": spread < COLLAPSE_SPREAD,
            "group_level_estimable": bool((per_class >= 2).all())}


@torch.no_grad()
def inference_speed(model: torch.nn.Module, images: torch.Tensor, device: torch.device,
                    batch: int, precision: str, channels_last: bool,
                    single_runs: int = 20) -> dict[str, float]:
    """ms per image at batch 1 (median) and images/s batched, after a warm-up."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    predict_proba(model, images[:2], device, 1, precision, channels_last)  # warm-up
    single = []
    for index in range(min(single_runs, len(images))):
        sync()
        start = time.perf_counter()
        predict_proba(model, images[index:index + 1], device, 1, precision, channels_last)
        sync()
        single.append(time.perf_counter() - start)
    sync()
    start = time.perf_counter()
    predict_proba(model, images, device, batch, precision, channels_last)
    sync()
    batched = time.perf_counter() - start
    return {"infer_ms_per_image": round(1000 * float(np.median(single)), 3),
            "infer_images_per_s": round(len(images) / batched, 2)}


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
    console.print(f"{backbone} test: crop AUC {c['auc']:.3f} {interval_text(c, 'auc')} "
                  f"balanced acc {c['balanced_accuracy']:.3f} at {thresholds['crop']:.3g}; "
                  f"{group_part} ({thresholds['rule']} on validation){seeds}"
                  + (" - COLLAPSED MODEL, not a finding" if metrics["collapsed"] else ""))
    if metrics["collapsed"]:
        warn(f"{backbone} gives every test crop nearly the same probability (spread "
             f"{metrics['prob_spread']:.2g}): a collapsed model; its AUC is not a finding")
    if not metrics["group_level_estimable"]:
        warn("the test split has fewer than 2 groups of a class: group-level figures are "
             "not estimable")


def interval_text(figures: dict, name: str) -> str:
    """'[0.812, 0.990]' from a level's figures, or '[not estimable]'."""
    low, high = figures.get(f"{name}_ci_low"), figures.get(f"{name}_ci_high")
    return "[not estimable]" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"
