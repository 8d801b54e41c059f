"""Ingest raw `<class>/<sample>_crops[N]_r/<crop>` folders: a manifest and a uint16 crop cache."""

from __future__ import annotations

import pandas as pd

from pipeline.cli import console, stage_main, stage_parser, warn
from pipeline.config import load_params
from pipeline.data.ingest import ingest_crops
from pipeline.environment import write_environment
from pipeline.io import bytes_under, staged_directory, write_csv_atomic, write_json_atomic


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("raw-dir", "the raw crops: <class>/<sample>_crops[N]_r/"
                                    "<crop>.tif|tiff|png (data.raw_dir)"),
                          ("out", "folder for manifest + cache"), "metrics",
                          ("report", "CSV of skipped files"), environment=True)
    args = parser.parse_args()
    params = load_params(args.params)
    with staged_directory(args.out) as staging:
        result = ingest_crops(args.raw_dir, staging / "crops", params.data)
        write_csv_atomic(staging / "manifest.csv", result.manifest)
        result.metrics["bytes_written"] = bytes_under(staging)
    write_csv_atomic(args.report, pd.DataFrame(result.problems, columns=["path", "problem"]))
    write_json_atomic(args.metrics, result.metrics)
    write_environment(args.environment)
    m = result.metrics
    for message in result.warnings:
        warn(message)
    for fitted in ("resized", "padded"):
        if m[fitted]:
            warn(f"{m[fitted]} of {m['crops']} crops {fitted} to {params.data.crop_size} px "
                 f"(data.on_size_mismatch: {params.data.on_size_mismatch})")
    console.print(f"ingest: {m['crops']} crops in {m['groups']} groups, {m['skipped_files']} "
                  "skipped" + (f"; left out by extension (not in data.extensions): "
                               f"{m['ignored_extensions']}" if m["ignored_files"] else ""))


if __name__ == "__main__":
    main()
