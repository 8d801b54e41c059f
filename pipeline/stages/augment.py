"""Augment the training split with Kornia (on the GPU when there is one), class-balanced.

The study balanced classes by oversampling the minority class with augmented copies;
here that is done on the training split only. Validation and test crops are never
augmented. With augment.online the stage stores no images: it writes which crop each
training image is made from (train_index.csv), and train_classifier makes those images
from the split's own and augments every batch on the device.
"""

from __future__ import annotations

import pandas as pd

from pipeline.classify.augment import training_set_chunks, training_sources
from pipeline.classify.images import load_classifier_images
from pipeline.cli import console, stage_main, stage_parser
from pipeline.config import load_params
from pipeline.data.split import split_subset
from pipeline.environment import write_environment
from pipeline.io import (
    bytes_under,
    read_crop_table,
    write_csv_atomic,
    write_json_atomic,
    write_rows_atomic,
)
from pipeline.runtime.device import resolve_device
from pipeline.runtime.memory import release_freed_memory_at_once


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, "split", "crops", ("sr", "sr_infer output folder"),
                          ("out", "folder for the training set (train_index.csv; "
                                  "train_images.npy unless augment.online)"), "metrics",
                          environment=True)
    args = parser.parse_args()
    params = load_params(args.params)
    device = resolve_device(params.device, params.runtime.threads)
    train = split_subset(read_crop_table(args.split), "train")
    labels = train["label"].to_numpy()
    source = training_sources(labels, params.augment, params.seed)
    out_labels = labels[source]
    stored = args.out / "train_images.npy"
    if params.augment.online:  # the index is the training set; nothing to store
        stored.unlink(missing_ok=True)  # an offline run's set, outside DVC
    else:
        # Kornia's intermediates are freed at once, not kept by the allocator: the stage's
        # peak is then the split plus one chunk's working memory at any set size.
        release_freed_memory_at_once()
        images = load_classifier_images(params, params.classifier.input, args.crops, args.sr,
                                        train["crop_id"].tolist(), device)
        # written chunk by chunk as it is made: the stage never holds the augmented set
        write_rows_atomic(stored, (len(source), *images.shape[1:]), "uint16",
                          training_set_chunks(images, source, params.augment, params.seed,
                                              device))
    write_csv_atomic(args.out / "train_index.csv", pd.DataFrame({
        "crop_id": train["crop_id"].to_numpy()[source], "group": train["group"].to_numpy()[source],
        "label": out_labels}))
    metrics = {"input": params.classifier.input, "source_crops": len(train),
               "training_images": len(source), "positives": int(out_labels.sum()),
               "negatives": int(len(out_labels) - out_labels.sum()),
               "online": params.augment.online, "images_stored": not params.augment.online,
               "bytes_written": bytes_under(args.out)}
    write_json_atomic(args.metrics, metrics)
    write_environment(args.environment, device)
    made = "indexed, augmented per batch in training" if params.augment.online else "stored"
    console.print(f"augment: {len(train)} crops -> {len(source)} training images ({made}) "
                  f"on {device}")


if __name__ == "__main__":
    main()
