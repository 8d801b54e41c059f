"""Does super-resolution help? The input ablation as tables, with paired tests on the same groups.

Reads DVC experiments run over classifier.input (and sr.generator), e.g.

    dvc exp run --queue -S classifier.input=raw,bicubic,sr,hr -S sr.generator=psnr,gan
    dvc queue start
    python -m pipeline.tools.ablation

and writes reports/ablation/table.csv, one row per dataset x setting x backbone x input (x
SR generator) with AUC and balanced accuracy [95% intervals, the group as the unit] at
group and crop level and their spread over the training seeds, and
reports/ablation/paired.csv: sr against raw, bicubic and hr trained the same way, each
level's AUC difference with a studentized rank permutation p-value over groups (Holm-adjusted
across the table) and the seed-mean difference beside the seed-to-seed sd. "SR helps" is
then a paired test and a spread, not two numbers side by side.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.cli import console, print_frame, stage_main, stage_parser
from pipeline.config import load_params
from pipeline.io import write_csv_atomic
from pipeline.reporting.ablation import (
    predictions_from_git,
    readable_cells,
    readable_pairs,
    run_ablation,
)
from pipeline.reporting.experiments import describe_left_out, experiments_from_dvc


def print_ablation(table: pd.DataFrame, paired: pd.DataFrame) -> None:
    for dataset, part in table.groupby("dataset", sort=True):
        for title, shown in ((f"Ablation on held-out test groups, data: {dataset}",
                              readable_cells(part)),
                             ("sr against each baseline on the same test groups (studentized "
                              "rank permutation over groups; Holm across the table)",
                              readable_pairs(paired[paired["dataset"] == dataset]))):
            print_frame(title, shown)


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
                                             params.classifier.permutations, params.seed)
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
