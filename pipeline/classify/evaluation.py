"""Evaluating a trained classifier on the test split: how far its figures can be trusted,
how fast it infers, the per-sample table, and the console summary."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from pipeline.classify.inference import predict_proba, sample_predictions
from pipeline.cli import console
from pipeline.stats import sample_level


def sample_table(predictions: pd.DataFrame, class_names: tuple[str, str], threshold: float,
                 backbone: str) -> pd.DataFrame:
    """predict's samples.csv columns for the test samples, plus their true `label` (the class
    name), so a reader sees which patients were called wrong."""
    table = sample_predictions(predictions, class_names, threshold, backbone)
    labels = sample_level(predictions).set_index("group")["label"]
    return table.assign(label=np.asarray(class_names)[labels.loc[table["sample"]].to_numpy()])

# A model whose test probabilities all lie within this of each other has collapsed to one
# output: the ordering behind its AUC is rounding noise, not a finding.
COLLAPSE_SPREAD = 1e-3


def reliability(predictions: pd.DataFrame) -> dict:
    """How far the test figures can be trusted: the spread of the probabilities (collapsed
    below COLLAPSE_SPREAD) and whether each class has the 2 samples a sample AUC needs."""
    spread = float(predictions["prob"].max() - predictions["prob"].min())
    per_class = predictions.groupby("label")["group"].nunique().reindex([0, 1], fill_value=0)
    return {"prob_spread": spread, "collapsed": spread < COLLAPSE_SPREAD,
            "sample_level_estimable": bool((per_class >= 2).all())}


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
    c, s = metrics["crop"], metrics["sample"]
    sample_part = (f"sample AUC {s['auc']:.3f} balanced acc {s['balanced_accuracy']:.3f} at "
                   f"{thresholds['sample']:.3g}" if metrics["sample_level_estimable"]
                   else "sample level not estimable")
    console.print(f"{backbone} test: crop AUC {c['auc']:.3f} "
                  f"[{c['auc_ci_low']:.3f}, {c['auc_ci_high']:.3f}] balanced acc "
                  f"{c['balanced_accuracy']:.3f} at {thresholds['crop']:.3g}; {sample_part} "
                  f"({thresholds['rule']} on validation)"
                  + (" - COLLAPSED MODEL, not a finding" if metrics["collapsed"] else ""))
    if metrics["collapsed"]:
        console.print(f"[bold yellow]warning:[/] {backbone} gives every test crop nearly "
                      f"the same probability (spread {metrics['prob_spread']:.2g}): a collapsed "
                      "model; its AUC is not a finding", highlight=False)
    if not metrics["sample_level_estimable"]:
        console.print("[bold yellow]warning:[/] the test split has fewer than 2 samples of a "
                      "class: sample-level figures are not estimable", highlight=False)
