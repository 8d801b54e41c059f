"""Does super-resolution help? Test sample-level AUC and balanced accuracy per backbone and input.

Reads DVC experiments run over classifier.input, e.g.

    dvc exp run --queue -S classifier.input=raw,bicubic,sr
    dvc queue start
    python -m pipeline.ablation

and prints one row per backbone x input with 95% bootstrap intervals over samples, so
"SR helps" is an interval comparison, not a single number.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from rich.table import Table

from pipeline.common import console
from pipeline.grid import experiments_from_dvc


def ablation_table(experiments: list[dict]) -> pd.DataFrame:
    rows = []
    for exp in experiments:
        for path, metrics in exp["metrics"].items():
            parts = Path(path).parts
            if len(parts) != 4 or parts[:2] != ("reports", "eval") or "sample" not in metrics:
                continue
            sample = metrics["sample"]
            rows.append({
                "backbone": parts[2], "input": metrics.get("input"),
                "sample_auc": sample.get("auc"), "auc_ci_low": sample.get("auc_ci_low"),
                "auc_ci_high": sample.get("auc_ci_high"),
                "balanced_accuracy": sample.get("balanced_accuracy"),
                "bal_acc_ci_low": sample.get("balanced_accuracy_ci_low"),
                "bal_acc_ci_high": sample.get("balanced_accuracy_ci_high"),
                "test_samples": metrics.get("test_samples"), "experiment": exp["name"]})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    # The workspace repeats the experiment applied to it: keep one row per cell.
    return (frame.drop_duplicates(["backbone", "input"])
            .sort_values(["backbone", "input"]).reset_index(drop=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="read this dvc exp show --json file")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    args = parser.parse_args()
    try:
        frame = ablation_table(experiments_from_dvc(args.json))
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        sys.exit(1)
    if frame.empty:
        console.print("no experiments with evaluation metrics found")
        return
    table = Table(title="Ablation on held-out test samples: sample-level AUC and balanced "
                        "accuracy [95% CI]")
    for column in ("backbone", "input", "AUC [95% CI]", "balanced acc. [95% CI]", "samples"):
        table.add_column(column)
    for row in frame.itertuples(index=False):
        table.add_row(row.backbone, str(row.input),
                      f"{row.sample_auc:.3f} [{row.auc_ci_low:.3f}, {row.auc_ci_high:.3f}]",
                      f"{row.balanced_accuracy:.3f} [{row.bal_acc_ci_low:.3f}, "
                      f"{row.bal_acc_ci_high:.3f}]", str(row.test_samples))
    console.print(table)
    if args.csv:
        frame.to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
