"""Evaluate one trained backbone on the test split: crop- and sample-level metrics at the
thresholds chosen on the validation split (classifier.threshold), and at 0.5."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.common import (
    console,
    read_crop_table,
    stage_main,
    write_csv_atomic,
    write_environment,
    write_json_atomic,
)
from pipeline.config import load_params
from pipeline.datasets import load_classifier_images, split_subset
from pipeline.device import resolve_device
from pipeline.explain import class_names_from, save_gradcam_grid
from pipeline.inference import (
    load_trained,
    predict_proba,
    sample_predictions,
    score_split,
    validation_thresholds,
)
from pipeline.metrics import roc_points, sample_level
from pipeline.preprocess import describe


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



@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train-metrics", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--sr", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="reports/eval/<backbone>")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    cp = params.classifier
    device = resolve_device(params.device)
    split_frame = read_crop_table(args.split)
    test = split_subset(split_frame, "test")
    images = load_classifier_images(params, cp.input, args.crops, args.sr,
                                    test["crop_id"].tolist(), device)
    model = load_trained(args.model, args.backbone).to(device)
    if cp.channels_last:
        model = model.to(memory_format=torch.channels_last)
    val = val_images = None
    if cp.threshold == "youden":
        val = split_subset(split_frame, "val", hint="or set classifier.threshold to a number")
        val_images = load_classifier_images(params, cp.input, args.crops, args.sr,
                                            val["crop_id"].tolist(), device)
    thresholds = validation_thresholds(model, val_images, val, device, cp)
    predictions, report = score_split(model, images, test, device, cp, params.seed, thresholds)
    trained = json.loads(args.train_metrics.read_text())
    metrics = {"backbone": args.backbone, "input": cp.input, "threshold": thresholds,
               "preprocess": describe(params.preprocess),
               "generator": params.sr.generator if cp.input == "sr" else None, **report,
               "train_seconds": trained["train_seconds"],
               "peak_memory_mb": trained["peak_memory_mb"],
               "params_millions": trained["params_millions"],
               "pretrained": trained["pretrained"], "best_epoch": trained["best_epoch"],
               **inference_speed(model, images, device, cp.eval_batch_size, cp.precision,
                                 cp.channels_last),
               "test_crops": len(test), "test_samples": int(test["group"].nunique()),
               **reliability(predictions)}
    class_names = class_names_from(test)
    write_csv_atomic(args.out / "predictions.csv", predictions)
    write_csv_atomic(args.out / "samples.csv", sample_table(
        predictions, class_names, thresholds["sample"], args.backbone))
    save_gradcam_grid(model, args.backbone, images, predictions, class_names,
                      args.out / "gradcam.png", device, thresholds["crop"])
    write_json_atomic(args.out / "roc.json", {"roc": roc_points(
        predictions["label"].to_numpy(), predictions["prob"].to_numpy())})
    write_json_atomic(args.out / "metrics.json", metrics)
    write_environment(args.out / "metrics.json", device)
    print_summary(args.backbone, metrics, thresholds)

if __name__ == "__main__":
    main()
