"""Train one backbone (ALS vs control) on the augmented training set; pick the epoch by val AUC.

The best epoch is chosen on the validation split (groups never seen in training), never
on training accuracy, which the study reported as a result. classifier.seeds runs with
seeds seed, seed + 1, ... show how much of a result is the seed's.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from pipeline.classify.augment import open_training_set
from pipeline.classify.images import load_classifier_images
from pipeline.classify.training import batch_progress, train_classifier
from pipeline.cli import PipelineError, console, stage_main, stage_parser
from pipeline.config import classifier_image_size, load_params, seed_runs
from pipeline.data.split import split_subset
from pipeline.environment import write_environment
from pipeline.io import read_crop_table, save_torch_atomic, write_csv_atomic, write_json_atomic
from pipeline.runtime.checkpoints import prepare_checkpoint_dir
from pipeline.runtime.device import resolve_device
from pipeline.runtime.distributed import init_distributed, run_under_torchrun, shutdown


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("augmented", "augment's folder (train_index.csv; "
                                                 "train_images.npy unless augment.online)"),
                          "split", "crops", "sr",
                          ("model-dir", "folder for model.pt (first seed) and model_seed<s>.pt"),
                          "checkpoints", "metrics", "curves", environment=True)
    parser.add_argument("--backbone", required=True, help="one of classifier.backbones")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.backbone not in params.classifier.backbones:
        raise PipelineError(f"backbone {args.backbone!r} is not in classifier.backbones")
    run_under_torchrun(params.distributed.nproc, __spec__.name)
    context, device = init_distributed(resolve_device(params.device, params.runtime.threads))
    # uint16 rows read from disk (or made from the split's images when augmentation is
    # online) a batch at a time, or copied to the GPU when they fit there, made float32 a
    # batch at a time: the stage never holds the training set.
    train_images, train_labels = open_training_set(params, args.augmented, args.crops, args.sr,
                                                   device)
    val = split_subset(read_crop_table(args.split), "val")
    val_images = load_classifier_images(params, params.classifier.input, args.crops, args.sr,
                                        val["crop_id"].tolist(), device)
    if train_images.shape[-1] != classifier_image_size(params):
        raise PipelineError("augmented images do not match classifier.image_size; rerun augment")
    prepare_checkpoint_dir(args.checkpoints)
    results = {}
    runs = seed_runs(params)
    # One bar over every batch of every seed: its ETA is the whole stage's.
    with batch_progress(f"train {args.backbone} ({len(runs)} seeds)", len(runs)) as tracker:
        for seed, model_file in runs:  # each run resumes from its own checkpoint
            result = train_classifier(args.backbone, train_images, train_labels, val_images,
                                      val["label"].to_numpy(copy=True),
                                      dataclasses.replace(params, seed=seed), device,
                                      args.checkpoints, context=context, tracker=tracker)
            if context.is_main:
                save_torch_atomic(args.model_dir / model_file, {
                    "model": result["best_state"], "backbone": args.backbone, "seed": seed,
                    "best_epoch": result["metrics"]["best_epoch"]})
            results[seed] = result
    shutdown(context)
    if not context.is_main:
        console.print(f"rank {context.rank}: training done; rank 0 writes the outputs")
        return
    first = next(iter(results.values()))
    write_csv_atomic(args.curves, pd.DataFrame(first["curves"]))
    write_json_atomic(args.metrics, first["metrics"] | {
        "seeds": list(results),
        "best_val_auc_seeds": [r["metrics"]["best_val_auc"] for r in results.values()],
        "train_seconds_all_seeds": round(sum(r["metrics"]["train_seconds"]
                                             for r in results.values()), 2)})
    write_environment(args.environment, device)
    for result in results.values():  # every run is saved: no resume state is needed now
        result["checkpoint"].unlink(missing_ok=True)
    m = first["metrics"]
    console.print(f"{args.backbone}: best epoch {m['best_epoch']} val AUC {m['best_val_auc']:.3f}"
                  f" (seed {params.seed}; {len(results)} seeds), {m['train_images_per_s']} img/s,"
                  f" peak {m['peak_memory_mb']} MB")


if __name__ == "__main__":
    main()
