"""Split by group (patient sample), stratified by class: train / val / test, optional k folds."""

from __future__ import annotations

import pandas as pd

from pipeline.cli import PipelineError, print_frame, stage_main, stage_parser, warn
from pipeline.config import load_params
from pipeline.data.split import MIN_SAMPLES_PER_CLASS, small_splits, split_groups, split_metrics
from pipeline.environment import write_environment
from pipeline.io import read_crop_table, write_csv_atomic, write_json_atomic


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, "manifest", ("out", "split assignment CSV"),
                          ("folds", "fold id per crop (CSV)"), "metrics", environment=True)
    args = parser.parse_args()
    params = load_params(args.params)
    frame = split_groups(read_crop_table(args.manifest), params.split, params.seed)
    metrics = split_metrics(frame)
    if metrics["groups_in_two_splits"]:  # cannot happen by construction; never write it if so
        raise PipelineError("internal error: a group landed in two splits")
    # Fold ids live in their own file, so asking for cross-validation leaves split.csv (and
    # everything trained from it, SR included) untouched.
    folds = frame[["crop_id", "group", "fold"]] if "fold" in frame else \
        pd.DataFrame(columns=["crop_id", "group", "fold"])
    write_csv_atomic(args.out, frame.drop(columns="fold", errors="ignore"))
    write_csv_atomic(args.folds, folds)
    write_json_atomic(args.metrics, metrics)
    write_environment(args.environment)
    classes = sorted(frame["class_name"].unique())
    print_frame("split (groups are patient samples; none in two splits)", pd.DataFrame(
        [{"split": part, **{f"{c} crops / groups": f"{metrics.get(f'{part}_crops_{c}', 0)} / "
                                                    f"{metrics.get(f'{part}_groups_{c}', 0)}"
                            for c in classes}} for part in ("train", "val", "test")]))
    small = small_splits(frame)
    if small:
        warn(f"fewer than {MIN_SAMPLES_PER_CLASS} groups per class in {', '.join(small)}; "
             "figures from so few patients are not findings (see the README's minimum)")


if __name__ == "__main__":
    main()
