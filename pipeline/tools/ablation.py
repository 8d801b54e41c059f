"""Does super-resolution help? The input ablation as tables, with paired tests on the same samples.

Reads DVC experiments run over classifier.input (and sr.generator), e.g.

    dvc exp run --queue -S classifier.input=raw,bicubic,sr,hr -S sr.generator=psnr,gan
    dvc queue start
    python -m pipeline.tools.ablation

and writes reports/ablation/table.csv, one row per dataset x backbone x input (x SR
generator) with AUC and balanced accuracy [95% intervals over samples] at sample and
crop level, and reports/ablation/paired.csv: sr against raw, bicubic and hr per backbone
and generator, the sample-level AUC difference with DeLong's test and a paired bootstrap,
and the crop-level AUC difference with a paired bootstrap over samples. "SR helps" is
then a paired interval, not two numbers side by side.

The crop level matters where every input ranks the test samples perfectly (sample AUC
1.000 for all, DeLong not estimable): differences can then only show in how the crops
rank. A sample's crops are correlated, so the crop-level interval resamples samples
(stratified by class) and takes each drawn sample's crops along, the same draws for both
inputs; crop-level DeLong would treat the crops as independent and is not reported.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from pipeline.cli import console, stage_main, stage_parser
from pipeline.config import load_params
from pipeline.io import write_csv_atomic
from pipeline.reporting.ablation import predictions_from_git, run_ablation
from pipeline.reporting.compare import describe_p_value
from pipeline.reporting.experiments import (
    describe_left_out,
    experiments_from_dvc,
    format_lr,
    with_interval,
)


def print_ablation(table: pd.DataFrame, paired: pd.DataFrame) -> None:
    for (dataset, lr, batch_size), part in table.groupby(["dataset", "lr", "batch_size"],
                                                         sort=True):
        shown = Table(title=f"Ablation on held-out test samples, data: {dataset}, lr "
                            f"{format_lr(lr)}, batch {batch_size}\n"
                            "AUC and balanced accuracy [95% CI, bootstrap over samples]")
        for column in ("backbone", "input", "generator", "sample AUC", "sample bal. acc.",
                       "crop AUC", "crop bal. acc.", "samples", "experiment"):
            shown.add_column(column)
        for _, row in part.iterrows():
            figures = [with_interval(row, f"{level}_{key}") for level in ("sample", "crop")
                       for key in ("auc", "balanced_accuracy")]
            shown.add_row(row["backbone"], str(row.get("input_label") or row["input"]),
                          row["generator"] or "-", *figures,
                          str(row["test_samples"]), str(row["experiment"]))
        console.print(shown)
        same = ((paired["dataset"] == dataset) & (paired["lr"] == lr)
                & (paired["batch_size"] == batch_size))
        for _, row in paired[same].iterrows():
            name = f"{row['backbone']}: sr ({row['generator']}) vs {row['input_b']}"
            if row["note"]:
                console.print(f"{name}: {row['note']}")
                continue
            console.print(f"{name} (sample level, {row['samples']} samples): AUC difference "
                          f"{row['auc_difference']:+.3f} [{row['difference_ci_low']:+.3f}, "
                          f"{row['difference_ci_high']:+.3f}], DeLong p = "
                          f"{describe_p_value(row['delong_p_value'])}; crop level "
                          f"({row['crops']} crops): {row['crop_auc_difference']:+.3f} "
                          f"[{row['crop_difference_ci_low']:+.3f}, "
                          f"{row['crop_difference_ci_high']:+.3f}]")


@stage_main
def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--json", type=Path, help="read this dvc exp show --json file")
    parser.add_argument("--out", type=Path, default=Path("reports/ablation"),
                        help="folder for table.csv and paired.csv")
    args = parser.parse_args()
    params = load_params(args.params)
    collected = experiments_from_dvc(args.json)
    table, paired, duplicates = run_ablation(collected.finished, predictions_from_git,
                                             params.classifier.bootstrap, params.seed)
    console.print(f"{describe_left_out(collected.left_out)}; {duplicates} repeated cells: "
                  "the newest kept")
    if table.empty:
        console.print("no experiments with evaluation metrics found")
        return
    print_ablation(table, paired)
    write_csv_atomic(args.out / "table.csv", table)
    write_csv_atomic(args.out / "paired.csv", paired)
    console.print(f"written: {args.out / 'table.csv'}, {args.out / 'paired.csv'}")


if __name__ == "__main__":
    main()
