"""Super-resolve every ingested crop with the chosen generator (tiled, batched).

SR images are stored at the size the classifier reads them (sr.store_full_size keeps the
full crop x scale). The bicubic input of the SR ablation is not stored: the stages that
read it upscale the crops at load time, which costs less than writing and reading back
16x the crops' pixels at x4.
"""

from __future__ import annotations

from pipeline.cli import console, stage_main, stage_parser
from pipeline.config import load_params, sr_storage_size
from pipeline.environment import write_environment
from pipeline.io import read_crop_table, staged_directory, write_json_atomic
from pipeline.runtime.device import effective_precision, resolve_device
from pipeline.sr.inference import load_generator, super_resolve_crops


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, "model", "manifest", "crops",
                          ("out", "folder for the super-resolved crops"), "metrics",
                          environment=True)
    args = parser.parse_args()
    params = load_params(args.params)
    sr = params.sr
    device = resolve_device(params.device, params.runtime.threads)
    model, generator_name = load_generator(args.model, sr.scale)
    crop_ids = read_crop_table(args.manifest)["crop_id"].tolist()
    with staged_directory(args.out) as staging:
        metrics = super_resolve_crops(model, crop_ids, args.crops, staging, sr.scale, sr.tile,
                                      sr.tile_overlap, sr.infer_batch, device, sr.precision,
                                      sr.channels_last, sr_storage_size(params))
    metrics |= {"generator": generator_name,
                "precision": effective_precision(sr.precision, device)}
    write_json_atomic(args.metrics, metrics)
    write_environment(args.environment, device)
    console.print(f"sr_infer: {metrics['crops']} crops in {metrics['seconds']} s")


if __name__ == "__main__":
    main()
