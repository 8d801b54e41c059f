"""Export one trained backbone as a portable bundle: a single file that classifies new crops
(see classify.bundle for what it holds; predict applies it)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from pipeline.classify.bundle import build_bundle, load_bundle
from pipeline.classify.explain import class_names_from
from pipeline.cli import console, stage_main, stage_parser
from pipeline.config import load_params
from pipeline.io import atomic_path, read_crop_table, read_json, torch_bytes, write_json_atomic


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("model", "train_classifier's model.pt"),
                          ("generator", "train_sr's generator.pt"), "split",
                          ("ingest-metrics", "ingest's metrics.json (data hash and bit depth, "
                                             "which the bundle carries)"),
                          ("out", "data/bundles/<backbone>.pt"), "metrics")
    parser.add_argument("--backbone", required=True, help="one of classifier.backbones")
    parser.add_argument("--eval-metrics", type=Path, required=True,
                        help="evaluate's metrics.json (the validation thresholds)")
    args = parser.parse_args()
    params = load_params(args.params)
    raw_params = yaml.safe_load(args.params.read_text())
    saved = torch.load(args.model, map_location="cpu", weights_only=True)
    generator = (torch.load(args.generator, map_location="cpu", weights_only=True)
                 if params.classifier.input == "sr" else None)
    thresholds = read_json(args.eval_metrics, required=True)["threshold"]
    ingested = read_json(args.ingest_metrics, required=True)
    class_names = class_names_from(read_crop_table(args.split))
    bundle = build_bundle(args.backbone, saved["model"], params, raw_params, thresholds,
                          class_names, ingested["manifest_sha256"],
                          generator, ingested["bit_depth"], ingested["bit_depth_source"])
    with atomic_path(args.out) as staging:
        staging.write_bytes(torch_bytes(bundle))
        load_bundle(staging)  # only a file that reads back and passes every check replaces
    size_mb = round(args.out.stat().st_size / 2**20, 3)
    write_json_atomic(args.metrics, {"backbone": args.backbone, "bundle_mb": size_mb,
                                     "input": bundle["input"],
                                     "threshold_crop": bundle["thresholds"]["crop"],
                                     "threshold_group": bundle["thresholds"]["group"]})
    console.print(f"export: {args.out} ({size_mb} MB, input {bundle['input']}, thresholds "
                  f"crop {bundle['thresholds']['crop']:.3g} / group "
                  f"{bundle['thresholds']['group']:.3g})")


if __name__ == "__main__":
    main()
