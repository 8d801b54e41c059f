"""Compare backbones on the same held-out test groups: one table (CSV with every figure,
Markdown and console with human headers), paired tests over groups with Holm's adjustment,
and a ROC overlay. Every AUC is read from evaluate's metrics (stats.level_auc) or computed
by the same function, so the table, the paired table and the figure agree."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import PipelineError, console, print_frame
from pipeline.io import atomic_path, read_crop_table, read_json
from pipeline.reporting.labels import BASELINE, classifier_label, input_label
from pipeline.stats import (
    LEVELS,
    GroupMismatchError,
    at_level,
    caveats,
    holm,
    paired_comparison,
    roc_points,
)

WITH_INTERVALS = ("auc", "balanced_accuracy", "sensitivity", "specificity", "accuracy")
COSTS = ["train_seconds", "peak_memory_mb", "params_millions", "infer_ms_per_image",
         "infer_images_per_s"]
PAIRED_COLUMNS = ["backbone_a", "backbone_b", "groups", "crops", "permutations"] + [
    f"{level}_{key}" for level in LEVELS for key in (
        "auc_a", "auc_b", "difference", "p_value", "p_holm", "seed_difference", "seed_sd")]


def comparison_table(eval_dir: Path, backbones: list[str], sr_metrics: dict) -> pd.DataFrame:
    """One row per backbone from its evaluation: each level's figures with their 95%
    intervals, the cut chosen on validation (and its range), the spread over training
    seeds, the costs. An sr input is labelled by what train_sr recorded of the generator
    (`sr_metrics`, reports/sr/metrics.json)."""
    rows = []
    for backbone in backbones:
        path = eval_dir / backbone / "metrics.json"
        if not path.is_file():
            raise PipelineError(f"{path}: missing; run the evaluate stage for {backbone}")
        metrics = read_json(path, required=True)
        row = {"backbone": classifier_label(backbone),
               "input": input_label(metrics["input"], sr_metrics.get("sr_better_than_bicubic")),
               "threshold_rule": metrics["threshold"]["rule"],
               "seeds": len(metrics["seeds"]["seeds"]), "precision": metrics.get("precision")}
        for level in LEVELS:
            figures = metrics[level]
            for key in WITH_INTERVALS:
                row[f"{level}_{key}"] = figures[key]
                row[f"{level}_{key}_ci_low"] = figures[f"{key}_ci_low"]
                row[f"{level}_{key}_ci_high"] = figures[f"{key}_ci_high"]
            row[f"{level}_auc_ci_method"] = figures["auc_ci_method"]
            row[f"{level}_threshold"] = metrics["threshold"][level]
            row[f"{level}_threshold_low"], row[f"{level}_threshold_high"] = \
                metrics["threshold"][f"{level}_range"]
            row[f"{level}_balanced_accuracy_at_0_5"] = \
                metrics["at_0_5"][level]["balanced_accuracy"]
            for figure in ("auc", "balanced_accuracy"):
                spread = metrics["seeds"][f"{level}_{figure}"]
                row[f"{level}_{figure}_seed_mean"] = spread["mean"]
                row[f"{level}_{figure}_seed_sd"] = spread["sd"]
        row |= {key: metrics[key] for key in COSTS}
        row["caveat"] = caveats(metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_comparisons(eval_dir: Path, backbones: list[str], permutations: int,
                       seed: int) -> pd.DataFrame:
    """Every pair of backbones on the same test crops, at crop and group level: both AUCs,
    their difference, a studentized rank permutation p-value over groups, and Holm's adjustment
    across every p-value of the table; beside them the difference of the seed means and
    the pooled seed-to-seed sd, which a difference must exceed to be more than the seed's."""
    predictions = {b: read_crop_table(eval_dir / b / "predictions.csv") for b in backbones}
    spreads = {b: read_json(eval_dir / b / "metrics.json", required=True)["seeds"]
               for b in backbones}
    rows = []
    for a, b in itertools.combinations(backbones, 2):
        try:
            result = paired_comparison(predictions[a], predictions[b], permutations, seed)
        except GroupMismatchError as exc:
            raise PipelineError(f"{a} and {b}: {exc}") from None
        except ValueError as exc:  # too few groups of a class
            console.print(f"[yellow]paired test {a} vs {b} skipped: {exc}[/]")
            continue
        for level in LEVELS:
            first, second = spreads[a][f"{level}_auc"], spreads[b][f"{level}_auc"]
            result[f"{level}_seed_difference"] = first["mean"] - second["mean"]
            result[f"{level}_seed_sd"] = pooled_sd(first["sd"], second["sd"])
        rows.append({"backbone_a": classifier_label(a), "backbone_b": classifier_label(b),
                     **result})
    return with_holm(pd.DataFrame(rows, columns=PAIRED_COLUMNS))


def pooled_sd(first: float | None, second: float | None) -> float | None:
    """The seed-to-seed sd of two cells together (None where a cell ran one seed)."""
    if first is None or second is None:
        return None
    return float(np.sqrt((first ** 2 + second ** 2) / 2))


def with_holm(frame: pd.DataFrame) -> pd.DataFrame:
    """`<level>_p_holm` for every `<level>_p_value` of the frame: one family per table."""
    columns = [f"{level}_p_value" for level in LEVELS if f"{level}_p_value" in frame]
    flat = [None if pd.isna(v) else float(v) for c in columns for v in frame[c]]
    adjusted = holm(flat)
    frame = frame.copy()
    for index, column in enumerate(columns):
        values = adjusted[index * len(frame):(index + 1) * len(frame)]
        frame[column.replace("p_value", "p_holm")] = values
    return frame


def cell(value, low, high, digits: int = 3) -> str:
    """'0.912 [0.850, 0.970]', '0.912 [not estimable]' (bounds None or NaN), '' for a
    missing figure."""
    if value is None or pd.isna(value):
        return ""
    text = f"{value:.{digits}f}"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return text + " [not estimable]"
    return text + f" [{low:.{digits}f}, {high:.{digits}f}]"


def mean_sd(mean, sd) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.3f}" + ("" if sd is None or pd.isna(sd) else f" ± {sd:.3f}")


def p_text(p_value) -> str:
    return "" if p_value is None or pd.isna(p_value) else f"{p_value:.3g}"


def readable_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The comparison with human headers and one cell per figure, narrow enough for a page."""
    rows = []
    for row in frame.to_dict("records"):
        shown = {"Backbone": row["backbone"], "Input": row["input"]}
        for level, name in (("group", "Group"), ("crop", "Crop")):
            shown[f"{name} AUC [95% CI]"] = cell(row[f"{level}_auc"],
                                                 row[f"{level}_auc_ci_low"],
                                                 row[f"{level}_auc_ci_high"])
            shown[f"{name} bal. acc. [95% CI] at cut"] = (
                cell(row[f"{level}_balanced_accuracy"], row[f"{level}_balanced_accuracy_ci_low"],
                     row[f"{level}_balanced_accuracy_ci_high"])
                + f" at {row[f'{level}_threshold']:.2f}")
        # one column for every row: the baseline is deterministic and runs once
        shown["Group AUC over seeds (n)"] = (mean_sd(row["group_auc_seed_mean"],
                                                     row["group_auc_seed_sd"])
                                             + f" ({row['seeds']})")
        shown["Caveat"] = row["caveat"] or ""
        rows.append(shown)
    return pd.DataFrame(rows)


def readable_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """The study's costs per backbone: training time (one seed), memory, size, inference."""
    return pd.DataFrame({
        "Backbone": frame["backbone"],
        "Train s (one seed)": frame["train_seconds"].map(lambda v: f"{v:.0f}"),
        "Peak memory MB": frame["peak_memory_mb"].map(lambda v: f"{v:.0f}"),
        "Parameters M": frame["params_millions"].map(lambda v: f"{v:.1f}"),
        "Inference ms/image": frame["infer_ms_per_image"].map(lambda v: f"{v:.1f}"),
        "Inference images/s": frame["infer_images_per_s"].map(lambda v: f"{v:.1f}"),
        "Precision": frame.get("precision", pd.Series(index=frame.index, dtype=object))
        .astype(object).fillna("not recorded")})


def readable_paired(paired: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons with human headers: AUCs, difference, p (Holm), seed spread."""
    rows = []
    for row in paired.to_dict("records"):
        shown = {"Comparison": f"{row['backbone_a']} vs {row['backbone_b']}",
                 "Groups": row["groups"]}
        for level, name in (("group", "Group"), ("crop", "Crop")):
            first, second = row[f"{level}_auc_a"], row[f"{level}_auc_b"]
            shown[f"{name} AUC a / b"] = f"{first:.3f} / {second:.3f}"
            shown[f"{name} difference (p, Holm p)"] = (
                f"{row[f'{level}_difference']:+.3f} ({p_text(row[f'{level}_p_value'])}, "
                f"{p_text(row[f'{level}_p_holm'])})")
        shown["Group: seed-mean difference (seed sd)"] = (
            f"{row['group_seed_difference']:+.3f}" + (
                "" if row["group_seed_sd"] is None or pd.isna(row["group_seed_sd"])
                else f" ({row['group_seed_sd']:.3f})"))
        rows.append(shown)
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    """A frame of text cells as a Markdown table."""
    return frame.astype(str).to_markdown(index=False, tablefmt="pipe",
                                         disable_numparse=True) + "\n"


def plot_roc_overlay(eval_dir: Path, backbones: list[str], path: Path) -> None:
    """ROC curves of every backbone at both levels; the legend's AUC is evaluate's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for level, ax in zip(LEVELS, axes):
        for backbone in backbones:
            rows = at_level(read_crop_table(eval_dir / backbone / "predictions.csv"), level)
            points = roc_points(rows["label"].to_numpy(), rows["prob"].to_numpy())
            auc = read_json(eval_dir / backbone / "metrics.json", required=True)[level]["auc"]
            ax.plot([p["fpr"] for p in points], [p["tpr"] for p in points],
                    label=f"{classifier_label(backbone)} (AUC {auc:.3f})",
                    **({"ls": ":", "color": "0.35"} if backbone == BASELINE else {}))
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set(title=f"ROC, test split, {level} level", xlabel="1 - specificity",
               ylabel="sensitivity")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def print_comparison(frame: pd.DataFrame, paired: pd.DataFrame) -> None:
    """The comparison on the console: one row per backbone, then the paired tests."""
    for title, shown in (("Backbones on the held-out test groups (never seen in training)",
                          readable_table(frame)),
                         ("Costs", readable_costs(frame)),
                         ("Paired comparisons on the same test groups (studentized rank "
                          "permutation over groups; Holm across the table)",
                          readable_paired(paired))):
        print_frame(title, shown)
    console.print("A group is one patient sample (all its crop folders); cut: the threshold "
                  "chosen on the validation groups. table.csv has every figure and interval.")
