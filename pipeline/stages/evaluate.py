"""Evaluate one trained backbone on the test split: crop- and group-level metrics with 95%
intervals at the thresholds chosen on the validation split (classifier.threshold), at 0.5,
and their spread over the backbone's training seeds."""

from __future__ import annotations

import torch

from pipeline.classify.explain import class_names_from, save_gradcam_grid
from pipeline.classify.images import load_classifier_images
from pipeline.classify.inference import (
    inference_speed,
    load_trained,
    score_split,
    validation_thresholds,
)
from pipeline.classify.preprocess import describe
from pipeline.classify.scoring import group_table, print_summary, reliability, seed_spread
from pipeline.cli import progress, stage_main, stage_parser
from pipeline.config import load_params, seed_runs
from pipeline.data.split import split_subset
from pipeline.environment import write_environment
from pipeline.io import read_crop_table, read_json, write_csv_atomic, write_json_atomic
from pipeline.runtime.device import effective_precision, resolve_device
from pipeline.stats import roc_points

# Figures of the training stage that the comparison shows beside the test figures.
FROM_TRAINING = ("train_seconds", "peak_memory_mb", "params_millions", "pretrained",
                 "best_epoch")


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("model-dir", "train_classifier's folder (model.pt, "
                                    "model_seed<s>.pt)"),
                          ("train-metrics", "train_classifier's metrics.json (time, memory)"),
                          "split", "crops", "sr",
                          ("out", "reports/eval/<backbone>"), environment=True)
    parser.add_argument("--backbone", required=True, help="one of classifier.backbones")
    args = parser.parse_args()
    params = load_params(args.params)
    cp = params.classifier
    device = resolve_device(params.device, params.runtime.threads)
    split_frame = read_crop_table(args.split)
    test = split_subset(split_frame, "test")
    images = load_classifier_images(params, cp.input, args.crops, args.sr,
                                    test["crop_id"].tolist(), device)
    val = val_images = None
    if cp.threshold == "youden":
        val = split_subset(split_frame, "val", hint="or set classifier.threshold to a number")
        val_images = load_classifier_images(params, cp.input, args.crops, args.sr,
                                            val["crop_id"].tolist(), device)
    runs = {}  # seed -> (model, thresholds, predictions, report); the first seed's is shown
    with progress() as bar:
        task = bar.add_task(f"evaluate {args.backbone}", total=cp.seeds, status="")
        for seed, model_file in seed_runs(params):
            bar.update(task, status=f"seed {seed}")
            model = load_trained(args.model_dir / model_file, args.backbone).to(device)
            if cp.channels_last:
                model = model.to(memory_format=torch.channels_last)
            thresholds = validation_thresholds(model, val_images, val, device, cp, seed)
            runs[seed] = (model, thresholds, *score_split(model, images, test, device, cp,
                                                          thresholds))
            bar.advance(task)
    model, thresholds, predictions, report = next(iter(runs.values()))
    trained = read_json(args.train_metrics, required=True)
    metrics = {"backbone": args.backbone, "input": cp.input, "threshold": thresholds,
               "preprocess": describe(params.preprocess),
               "generator": params.sr.generator if cp.input == "sr" else None, **report,
               "seeds": seed_spread({seed: run[3] for seed, run in runs.items()}),
               **{key: trained[key] for key in FROM_TRAINING},
               **inference_speed(model, images, device, cp.eval_batch_size, cp.precision,
                                 cp.channels_last),
               "precision": effective_precision(cp.precision, device),
               "test_crops": len(test), "test_groups": int(test["group"].nunique()),
               **reliability(predictions)}
    class_names = class_names_from(test)
    write_csv_atomic(args.out / "predictions.csv", predictions)
    write_csv_atomic(args.out / "seed_predictions.csv", predictions[["crop_id", "group",
                                                                      "label"]].assign(
        **{f"prob_seed{seed}": run[2]["prob"] for seed, run in runs.items()}))
    write_csv_atomic(args.out / "groups.csv", group_table(
        predictions, class_names, thresholds["group"], args.backbone))
    save_gradcam_grid(model, args.backbone, images, predictions, class_names,
                      args.out / "gradcam.png", device, thresholds["crop"], metrics["collapsed"])
    write_json_atomic(args.out / "roc.json", {"roc": roc_points(
        predictions["label"].to_numpy(), predictions["prob"].to_numpy())})
    write_json_atomic(args.out / "metrics.json", metrics)
    write_environment(args.environment, device)
    print_summary(args.backbone, metrics, thresholds)


if __name__ == "__main__":
    main()
