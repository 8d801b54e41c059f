"""Print the study's lr x batch_size grid of test AUC and accuracy per backbone.

Reads `dvc exp show --json`, so it shows whatever experiments exist (for example the
queue from `dvc exp run --queue -S lr=... -S batch_size=...`), one table per backbone
and metric level, like the study's Figures 11, 13 and 15 but on held-out samples.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from rich.table import Table

from pipeline.common import console


def _walk(node, out: list[dict]) -> None:
    """Collect {name, params, metrics} from dvc exp show --json (nested by baseline)."""
    if isinstance(node, list):
        for item in node:
            _walk(item, out)
        return
    if not isinstance(node, dict):
        return
    data = node.get("data")
    if isinstance(data, dict) and "params" in data:
        params = data.get("params", {}).get("params.yaml", {}).get("data", {})
        metrics = {path: m.get("data", {}) for path, m in (data.get("metrics") or {}).items()}
        out.append({"name": node.get("name") or data.get("name") or data.get("rev"),
                    "params": params, "metrics": metrics})
    for child in node.get("experiments") or []:
        _walk(child, out)
    for key in ("revs",):
        for child in node.get(key) or []:
            _walk(child, out)


def grid_table(experiments: list[dict], level: str = "crop") -> pd.DataFrame:
    """Rows: one per experiment and backbone, with lr, batch_size, AUC and accuracy."""
    rows = []
    for exp in experiments:
        params = exp["params"]
        for path, metrics in exp["metrics"].items():
            parts = Path(path).parts
            if len(parts) == 4 and parts[:2] == ("reports", "eval") and level in metrics:
                rows.append({"experiment": exp["name"], "backbone": parts[2],
                             "lr": params.get("lr"), "batch_size": params.get("batch_size"),
                             "auc": metrics[level].get("auc"),
                             "accuracy": metrics[level].get("accuracy")})
    return pd.DataFrame(rows, columns=["experiment", "backbone", "lr", "batch_size", "auc",
                                       "accuracy"])


def print_grid(frame: pd.DataFrame, level: str) -> None:
    if frame.empty:
        console.print("no experiments with evaluation metrics found")
        return
    for backbone, part in frame.groupby("backbone"):
        # Last experiment wins where one lr x batch_size cell was run more than once.
        part = part.drop_duplicates(["lr", "batch_size"], keep="first")
        lrs, sizes = sorted(part["lr"].unique()), sorted(part["batch_size"].unique())
        table = Table(title=f"{backbone}: test {level}-level AUC / accuracy")
        table.add_column("lr \\ batch")
        for size in sizes:
            table.add_column(str(size), justify="center")
        for lr in lrs:
            cells = []
            for size in sizes:
                hit = part[(part["lr"] == lr) & (part["batch_size"] == size)]
                cells.append("" if hit.empty else
                             f"{hit['auc'].iloc[0]:.3f} / {hit['accuracy'].iloc[0]:.3f}")
            table.add_row(f"{lr:g}", *cells)
        console.print(table)


def experiments_from_dvc(json_file: Path | None = None) -> list[dict]:
    """[{name, params, metrics}] for the workspace, its baseline and every experiment."""
    if json_file is not None:
        raw = json.loads(json_file.read_text())
    else:
        env = os.environ | {"DVC_NO_ANALYTICS": "1"}
        dvc = str(Path(sys.executable).with_name("dvc"))
        result = subprocess.run([dvc, "exp", "show", "--json"], capture_output=True, text=True,
                                env=env)
        if result.returncode:
            raise RuntimeError(f"dvc exp show failed: {result.stderr.strip()}")
        raw = json.loads(result.stdout)
    experiments: list[dict] = []
    _walk(raw, experiments)
    return experiments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", choices=("crop", "sample"), default="crop")
    parser.add_argument("--json", type=Path, help="read this file instead of running dvc")
    args = parser.parse_args()
    try:
        experiments = experiments_from_dvc(args.json)
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/]")
        sys.exit(1)
    print_grid(grid_table(experiments, args.level), args.level)


if __name__ == "__main__":
    main()
