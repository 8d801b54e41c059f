"""Print the study's lr x batch_size grid: test AUC and balanced accuracy, crop and sample level.

Reads `dvc exp show --json`, so it shows whatever experiments exist (for example the
queue from `dvc exp run --queue -S lr=... -S batch_size=...`): one table per dataset,
backbone and classifier input, like the study's Figures 11, 13 and 15 but on held-out
samples. The experiment collection here (dataset grouping, failed and queued runs left
out, newest duplicate kept) is shared with pipeline.tools.ablation (pipeline.reporting.experiments).
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
)
from pipeline.reporting.labels import NO_GAIN


def print_grid(frame: pd.DataFrame) -> None:
    if frame.empty:
        console.print("no experiments with evaluation metrics found")
        return
    for (dataset, backbone, source, generator), part in frame.groupby(
            ["dataset", "backbone", "input", "generator"], sort=True, dropna=False):
        lrs, sizes = sorted(part["lr"].unique()), sorted(part["batch_size"].unique())
        shown_input = f"{source} ({generator})" if generator else source
        table = Table(title=f"{backbone}, input {shown_input}: test AUC / balanced accuracy\n"
                            f"data: {dataset}")
        table.add_column("lr \\ batch")
        for size in sizes:
            table.add_column(str(size), justify="center")
        for lr in lrs:
            cells = []
            for size in sizes:
                hit = part[(part["lr"] == lr) & (part["batch_size"] == size)]
                no_gain = not hit.empty and hit["input_label"].iloc[0] == NO_GAIN
                cells.append("" if hit.empty else "\n".join(
                    f"{level} {hit[f'{level}_auc'].iloc[0]:.3f} / "
                    f"{hit[f'{level}_balanced_accuracy'].iloc[0]:.3f}" for level in LEVELS)
                    + ("\n(no SR gain)" if no_gain else ""))
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
                  "(same data, backbone, input, lr, batch size): the newest kept")


if __name__ == "__main__":
    main()
