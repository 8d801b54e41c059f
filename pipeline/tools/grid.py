"""Print the study's lr x batch_size grid: test AUC and balanced accuracy, crop and group level.

Reads `dvc exp show --json`, so it shows whatever experiments exist (for example the
queue from `dvc exp run --queue -S lr=... -S batch_size=...`): one table per dataset,
setting and backbone, like the study's Figures 11, 13 and 15 but on held-out groups. The
experiment collection (dataset grouping, failed and queued runs left out, newest duplicate
kept) is pipeline.reporting.experiments, shared with pipeline.tools.ablation.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from pipeline.cli import console, stage_main, stage_parser
from pipeline.reporting.experiments import (
    LEVELS,
    describe_left_out,
    experiments_from_dvc,
    format_lr,
    grid_table,
    with_spread,
)
from pipeline.reporting.labels import BASELINE, BASELINE_LABEL, NO_GAIN


def print_grid(frame: pd.DataFrame) -> None:
    if frame.empty:
        console.print("no experiments with evaluation metrics found")
        return
    for (dataset, setting, backbone), part in frame.groupby(
            ["dataset", "grid_setting", "backbone"], sort=True, dropna=False):
        if backbone == BASELINE:  # lr and batch size do not apply: one line per data set
            row = part.iloc[0]
            console.print(f"{BASELINE_LABEL} (no lr or batch size; data: {dataset}): "
                          + ", ".join(f"{level} AUC {row[f'{level}_auc']:.3f} / balanced "
                                      f"accuracy {row[f'{level}_balanced_accuracy']:.3f}"
                                      for level in LEVELS), highlight=False)
            continue
        lrs, sizes = sorted(part["lr"].unique()), sorted(part["batch_size"].unique())
        first = part.iloc[0]
        shown_input = first["input_label"] + (f" ({first['generator']})"
                                              if first["generator"] else "")
        table = Table(title=f"{backbone}, input {shown_input}: test AUC / balanced accuracy "
                            f"(first seed; group AUC mean ± sd over seeds)\n"
                            f"data: {dataset}, setting {setting}")
        table.add_column("lr \\ batch")
        for size in sizes:
            table.add_column(str(size), justify="center")
        for lr in lrs:
            cells = []
            for size in sizes:
                hit = part[(part["lr"] == lr) & (part["batch_size"] == size)]
                if hit.empty:
                    cells.append("")
                    continue
                row = hit.iloc[0]
                cells.append("\n".join(
                    f"{level} {row[f'{level}_auc']:.3f} / {row[f'{level}_balanced_accuracy']:.3f}"
                    for level in LEVELS) + f"\n{with_spread(row, 'group_auc')}"
                    + ("\n(no SR gain)" if row["input_label"] == NO_GAIN else ""))
            table.add_row(format_lr(lr), *cells)
        console.print(table)


@stage_main
def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--json", type=Path, help="read this dvc exp show --json file")
    args = parser.parse_args()
    collected = experiments_from_dvc(args.json)
    frame, duplicates = grid_table(collected.finished)
    print_grid(frame)
    console.print(f"{describe_left_out(collected.left_out)}; {duplicates} repeated cells "
                  "(same data, setting and backbone): the newest kept")


if __name__ == "__main__":
    main()
