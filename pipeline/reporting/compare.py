"""Compare backbones on the same test samples: one table (CSV, Markdown, console), paired
tests and a ROC overlay, test split only."""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
from rich.table import Table

from pipeline.cli import PipelineError, console
from pipeline.io import atomic_path, read_crop_table, read_json
from pipeline.reporting.labels import input_label
from pipeline.stats import (
    SampleMismatchError,
    caveats,
    paired_sample_comparison,
    roc_points,
    sample_level,
)

COLUMNS = [
    ("crop", "auc"), ("crop", "auc_ci_low"), ("crop", "auc_ci_high"), ("crop", "accuracy"),
    ("crop", "balanced_accuracy"), ("crop", "sensitivity"), ("crop", "specificity"),
    ("crop", "f1"), ("crop", "ece"),
    ("sample", "auc"), ("sample", "auc_ci_low"), ("sample", "auc_ci_high"),
    ("sample", "accuracy"), ("sample", "balanced_accuracy"), ("sample", "sensitivity"),
    ("sample", "specificity"),
]

PAIRED_COLUMNS = ["backbone_a", "backbone_b", "level", "samples", "auc_a", "auc_b",
                  "auc_difference", "difference_ci_low", "difference_ci_high",
                  "bootstrap_resamples", "delong_se", "delong_z", "delong_p_value"]

COSTS = ["train_seconds", "peak_memory_mb", "params_millions", "infer_ms_per_image",
         "infer_images_per_s"]


def comparison_table(eval_dir: Path, backbones: list[str], sr_metrics: dict) -> pd.DataFrame:
    """One row per backbone from its evaluation; an sr input is labelled by what train_sr
    recorded of the generator (`sr_metrics`, reports/sr/metrics.json)."""
    rows = []
    for backbone in backbones:
        path = eval_dir / backbone / "metrics.json"
        if not path.is_file():
            raise PipelineError(f"{path}: missing; run the evaluate stage for {backbone}")
        metrics = read_json(path)
        row = {"backbone": backbone,
               "input": input_label(metrics["input"], sr_metrics.get("sr_better_than_bicubic"))}
        row |= {f"{level}_{key}": metrics[level][key] for level, key in COLUMNS}
        # the cut each level was decided at (chosen on validation), and what 0.5 would give
        row |= {"threshold_rule": metrics["threshold"]["rule"]}
        for level in ("crop", "sample"):
            row[f"{level}_threshold"] = metrics["threshold"][level]
            row[f"{level}_balanced_accuracy_at_0_5"] = \
                metrics["at_0_5"][level]["balanced_accuracy"]
        row |= {key: metrics[key] for key in COSTS}
        row["caveat"] = caveats(metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    """The frame as a Markdown table: 3 decimals, p-values to 3 significant digits, and an
    empty cell where a figure is not estimable."""
    shown = frame.astype(object).copy()
    for column in shown.columns:
        style = "{:.3g}" if column.endswith("p_value") else "{:.3f}"
        shown[column] = [
            "" if value is None or (isinstance(value, float) and pd.isna(value))
            else style.format(value) if isinstance(value, float) else str(value)
            for value in frame[column]]
    return shown.to_markdown(index=False, tablefmt="pipe", disable_numparse=True) + "\n"


def paired_comparisons(eval_dir: Path, backbones: list[str], resamples: int,
                       seed: int) -> pd.DataFrame:
    """Every pair of backbones on the same test samples: AUC difference, paired bootstrap
    95% interval and DeLong's p-value, at sample level (the patient is the unit).

    delong_z and delong_p_value are empty where DeLong's variance is zero (not estimable).
    """
    predictions = {b: read_crop_table(eval_dir / b / "predictions.csv") for b in backbones}
    rows = []
    for a, b in itertools.combinations(backbones, 2):
        try:
            result = paired_sample_comparison(predictions[a], predictions[b], resamples, seed)
        except SampleMismatchError as exc:
            raise PipelineError(f"{a} and {b}: {exc}") from None
        except ValueError as exc:  # too few samples of a class
            console.print(f"[yellow]paired test {a} vs {b} skipped: {exc}[/]")
            continue
        rows.append({"backbone_a": a, "backbone_b": b, "level": "sample", **result})
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def describe_p_value(p_value: float | None) -> str:
    """DeLong's p for the console; empty (None or NaN from a CSV) means not estimable."""
    return "not estimable" if p_value is None or pd.isna(p_value) else f"{p_value:.3g}"


def plot_roc_overlay(eval_dir: Path, backbones: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for level, ax in zip(("crop", "sample"), axes):
        for backbone in backbones:
            predictions = read_crop_table(eval_dir / backbone / "predictions.csv")
            if level == "sample":
                predictions = sample_level(predictions)
            points = roc_points(predictions["label"].to_numpy(), predictions["prob"].to_numpy())
            metrics = read_json(eval_dir / backbone / "metrics.json")[level]
            ax.plot([p["fpr"] for p in points], [p["tpr"] for p in points],
                    label=f"{backbone} (AUC {metrics['auc']:.3f})")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(title=f"ROC, test split, {level} level", xlabel="1 - specificity",
               ylabel="sensitivity")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def print_comparison(frame: pd.DataFrame, paired: pd.DataFrame, threshold_rule) -> None:
    """The comparison on the console: one row per backbone, then the paired tests."""
    table = Table(title="Backbones on the held-out test split (samples never seen in training)")
    for column in ("backbone", "crop AUC [95% CI]", "cut", "crop acc", "bal. acc", "sens",
                   "spec", "sample AUC", "cut", "sample acc", "train s", "peak MB", "ms/img",
                   "caveat"):
        table.add_column(column)
    for row in frame.itertuples(index=False):
        table.add_row(row.backbone,
                      f"{row.crop_auc:.3f} [{row.crop_auc_ci_low:.2f}, {row.crop_auc_ci_high:.2f}]",
                      f"{row.crop_threshold:.3g}",
                      f"{row.crop_accuracy:.3f}", f"{row.crop_balanced_accuracy:.3f}",
                      f"{row.crop_sensitivity:.3f}", f"{row.crop_specificity:.3f}",
                      f"{row.sample_auc:.3f}", f"{row.sample_threshold:.3g}",
                      f"{row.sample_accuracy:.3f}",
                      f"{row.train_seconds:.0f}", f"{row.peak_memory_mb:.0f}",
                      f"{row.infer_ms_per_image:.1f}", str(row.caveat or ""))
    console.print(table)
    console.print(f"cut: the threshold each level is decided at, chosen on the validation "
                  f"split ({threshold_rule}); *_at_0_5 in table.csv: at 0.5")
    for row in paired.itertuples(index=False):
        console.print(f"{row.backbone_a} vs {row.backbone_b} (sample level, {row.samples} "
                      f"samples): AUC difference {row.auc_difference:+.3f} "
                      f"[{row.difference_ci_low:+.3f}, {row.difference_ci_high:+.3f}], "
                      f"DeLong p = {describe_p_value(row.delong_p_value)}")

