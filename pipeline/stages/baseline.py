"""Could something simpler explain the result? A logistic regression on five per-crop features
(brightness, bright spots, foreground area, integrated intensity, texture), trained on the
same split and scored on the same test groups with the same statistics as the backbones."""

from __future__ import annotations

from pipeline.baseline.evaluation import group_intensity, run_baseline
from pipeline.classify.scoring import print_summary
from pipeline.cli import stage_main, stage_parser
from pipeline.config import load_params
from pipeline.data.split import class_names_from
from pipeline.io import read_crop_table, write_csv_atomic, write_json_atomic
from pipeline.reporting.labels import BASELINE_LABEL
from pipeline.stats import roc_points


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, "split", "crops",
                          ("out", "reports/eval/baseline: evaluate's files for the baseline"),
                          ("features", "every crop's features (CSV)"),
                          ("groups", "per-group feature means by class and split (CSV)"))
    args = parser.parse_args()
    params = load_params(args.params)
    split_frame = read_crop_table(args.split)
    run = run_baseline(split_frame, args.crops, params, class_names_from(split_frame))
    write_csv_atomic(args.features, run.features)
    write_csv_atomic(args.groups, group_intensity(run.features))
    write_csv_atomic(args.out / "predictions.csv", run.predictions)
    write_csv_atomic(args.out / "seed_predictions.csv", run.predictions[
        ["crop_id", "group", "label"]].assign(**{f"prob_seed{params.seed}":
                                                 run.predictions["prob"]}))
    write_csv_atomic(args.out / "groups.csv", run.groups)
    write_json_atomic(args.out / "roc.json", {"roc": roc_points(
        run.predictions["label"].to_numpy(), run.predictions["prob"].to_numpy())})
    write_json_atomic(args.out / "metrics.json", run.metrics)
    print_summary(BASELINE_LABEL, run.metrics, run.metrics["threshold"])


if __name__ == "__main__":
    main()
