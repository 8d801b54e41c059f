"""Classify new, unlabelled patients' crops with one or more exported bundles.

    python -m pipeline.stages.predict --bundle data/bundles/resnet50.pt --input DIR --out OUTDIR

DIR holds sample folders (`<sample>_crops[N]_r/<crop>.tif|tiff|png`), or class folders of
them (their names are ignored: predict never uses labels). Every crop goes through
ingest's own checks and normalisation, then the bundle's SR or bicubic step, its resizing
and preprocessing, and its classifier. Writes OUTDIR/crops.csv (path, group, prob,
prediction) and OUTDIR/groups.csv (group, n_crops, prob, prediction, threshold, backbone):
a group is one patient sample, all its sample folders; its prob is the mean of its crops'
as in evaluate, decided at the group threshold chosen on validation. With several bundles
each gets its own columns (`prob_<backbone>`, ...) plus their mean (`prob_mean`, decided at
the mean of their thresholds).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from pipeline.classify.bundle import BundleClassifier
from pipeline.classify.predict import (
    bundle_paths,
    check_output_folder,
    classify_with_each,
    combine,
    load_bundles,
)
from pipeline.cli import console, stage_main, stage_parser
from pipeline.io import staged_directory, write_csv_atomic
from pipeline.runtime.device import resolve_device


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("input", "folder of sample folders"), ("out", "output folder"))
    parser.add_argument("--bundle", type=Path, action="append", required=True,
                        help="a bundle file (repeat for several), or a folder of them")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--on-bad-file", choices=("error", "skip"), default="error",
                        help="skip: leave bad crops out, listed in OUTDIR/bad_files.csv")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    args = parser.parse_args()  # --params: only to pick bundles from a folder
    paths = bundle_paths(args.bundle, args.params)
    check_output_folder(args.out, args.overwrite, [args.input, *paths])
    bundles = load_bundles(paths)
    device = resolve_device(args.device)
    classifiers = {backbone: BundleClassifier(bundle, device, path)
                   for (backbone, bundle), path in zip(bundles.items(), paths)}
    started = time.perf_counter()
    per_bundle, problems, ignored = classify_with_each(classifiers, args.input,
                                                       args.on_bad_file)
    seconds = time.perf_counter() - started
    crops, groups = combine(per_bundle, bundles)
    with staged_directory(args.out) as staging:
        write_csv_atomic(staging / "crops.csv", crops)
        write_csv_atomic(staging / "groups.csv", groups)
        if problems:
            write_csv_atomic(staging / "bad_files.csv",
                             pd.DataFrame(problems, columns=["path", "problem", "backbones"]))
    left_out = ", ".join(f"{n} {ext}" for ext, n in sorted(ignored.items()))
    console.print(f"predict: {len(crops)} crops of {len(groups)} groups with "
                  f"{', '.join(bundles)} on {device}: "
                  f"{len(crops) * len(bundles) / max(seconds, 1e-9):.1f} crops/s; "
                  f"{len(problems)} bad files skipped"
                  + (f", left out by extension: {left_out}" if left_out else "")
                  + f" -> {args.out}/groups.csv")


if __name__ == "__main__":
    main()
