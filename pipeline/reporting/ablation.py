"""The SR ablation across DVC experiments: one row per dataset x setting x backbone x input
(x SR generator), and sr paired with raw, bicubic and hr where the two cells share every
other param (their setting less the input axes), at crop and group level: each AUC, the
difference and a studentized rank permutation p-value over groups, Holm-adjusted across the
table, and the difference of the seed means against the pooled seed-to-seed sd. The
command that prints and writes them is pipeline.tools.ablation."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable

import pandas as pd

from pipeline.io import read_crop_table
from pipeline.reporting.compare import p_text, pooled_sd, with_holm
from pipeline.reporting.experiments import (
    CELL,
    Experiment,
    evaluation_rows,
    newest_per_cell,
    with_interval,
    with_spread,
)
from pipeline.reporting.labels import classifier_label
from pipeline.stats import LEVELS, GroupMismatchError, paired_comparison

TABLE_COLUMNS = [
    "dataset", "raw_dir", "acquire_downsample", "manifest_sha256", "setting",
    "ablation_setting", "lr", "batch_size", "backbone", "input", "input_label", "generator",
    *[f"{level}_{key}" for level in LEVELS for key in (
        "auc", "auc_ci_low", "auc_ci_high", "balanced_accuracy", "balanced_accuracy_ci_low",
        "balanced_accuracy_ci_high", "auc_seed_mean", "auc_seed_sd",
        "balanced_accuracy_seed_mean", "balanced_accuracy_seed_sd")],
    "seeds", "test_groups", "experiment", "rev", "timestamp"]

PAIRED_COLUMNS = [
    "dataset", "ablation_setting", "lr", "batch_size", "backbone", "generator", "input_a",
    "input_b", "experiment_a", "experiment_b", "groups", "crops", "permutations",
    *[f"{level}_{key}" for level in LEVELS for key in (
        "auc_a", "auc_b", "difference", "p_value", "p_holm", "seed_difference", "seed_sd")],
    "note"]

# What sr is tested against: the acquired crop itself (is SR worth running at all?),
# bicubic (does the generator beat plain interpolation?) and hr (how much is left?).
BASELINES = ("raw", "bicubic", "hr")

PredictionsReader = Callable[[str, str], pd.DataFrame]  # (rev, backbone) -> predictions.csv


def ablation_table(experiments: list[Experiment]) -> tuple[pd.DataFrame, int]:
    """One row per cell; and how many repeats were dropped. A cell run more than once (a
    rerun, or the workspace repeating the experiment applied to it) keeps the newest
    experiment by commit time, the workspace counting as newest."""
    rows = [row for experiment in experiments for row in evaluation_rows(experiment)]
    frame, duplicates = newest_per_cell(rows, CELL)
    return frame.reindex(columns=TABLE_COLUMNS), duplicates


def predictions_from_git(rev: str, backbone: str) -> pd.DataFrame:
    """An experiment's per-crop test predictions: git-tracked (DVC cache: false), so they
    are in each experiment's commit; the workspace's are read from disk."""
    path = f"reports/eval/{backbone}/predictions.csv"
    if rev == "workspace":
        return read_crop_table(path)
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if shown.returncode:
        raise FileNotFoundError(f"{path} not in commit {rev[:12]}: {shown.stderr.strip()}")
    return read_crop_table(io.StringIO(shown.stdout))


def paired_table(table: pd.DataFrame, read_predictions: PredictionsReader, permutations: int,
                 seed: int) -> pd.DataFrame:
    """sr (each generator) against each baseline input trained the same way (one ablation
    setting), per dataset and backbone, on the same test crops; Holm across the table."""
    rows = []
    for (dataset, setting, backbone), part in table.groupby(
            ["dataset", "ablation_setting", "backbone"], sort=True):
        by_input = {source: cells for source, cells in part.groupby("input")}
        for sr in by_input.get("sr", pd.DataFrame()).to_dict("records"):
            for baseline in BASELINES:
                if baseline not in by_input:
                    continue
                other = by_input[baseline].iloc[0]
                row = {"dataset": dataset, "ablation_setting": setting, "lr": sr["lr"],
                       "batch_size": sr["batch_size"], "backbone": backbone,
                       "generator": sr["generator"], "input_a": "sr", "input_b": baseline,
                       "experiment_a": sr["experiment"], "experiment_b": other["experiment"],
                       "note": ""}
                try:
                    row |= paired_comparison(read_predictions(sr["rev"], backbone),
                                             read_predictions(other["rev"], backbone),
                                             permutations, seed)
                except GroupMismatchError as exc:
                    row["note"] = f"not paired: {exc}; the two ran on different test splits"
                except (ValueError, OSError) as exc:  # too few groups, predictions missing
                    row["note"] = f"not tested: {exc}"
                for level in LEVELS:
                    row[f"{level}_seed_difference"] = (sr[f"{level}_auc_seed_mean"]
                                                       - other[f"{level}_auc_seed_mean"])
                    row[f"{level}_seed_sd"] = pooled_sd(
                        *(None if pd.isna(v) else v for v in (sr[f"{level}_auc_seed_sd"],
                                                              other[f"{level}_auc_seed_sd"])))
                rows.append(row)
    counts = {"groups": "Int64", "crops": "Int64", "permutations": "Int64"}
    return with_holm(pd.DataFrame(rows, columns=PAIRED_COLUMNS).astype(counts))


def run_ablation(experiments: list[Experiment], read_predictions: PredictionsReader,
                 permutations: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(table, paired, duplicates dropped) for the finished experiments."""
    table, duplicates = ablation_table(experiments)
    return table, paired_table(table, read_predictions, permutations, seed), duplicates


def readable_cells(part: pd.DataFrame) -> pd.DataFrame:
    """One dataset's cells with human headers: figures of the first seed's model with their
    95% intervals, and the group AUC's mean and sd over the seeds."""
    return pd.DataFrame({
        "Backbone": part["backbone"].map(classifier_label),
        "Input": part["input_label"].astype(object).fillna(part["input"]),
        "Generator": part["generator"].astype(object).fillna("").replace("", "-"),
        "Group AUC [95% CI]": part.apply(lambda r: with_interval(r, "group_auc"), axis=1),
        "Group bal. acc. [95% CI]": part.apply(
            lambda r: with_interval(r, "group_balanced_accuracy"), axis=1),
        "Crop AUC [95% CI]": part.apply(lambda r: with_interval(r, "crop_auc"), axis=1),
        "Group AUC over seeds": part.apply(lambda r: with_spread(r, "group_auc"), axis=1),
        "Test groups": part["test_groups"], "Experiment": part["experiment"]})


def readable_pairs(rows: pd.DataFrame) -> pd.DataFrame:
    """sr against each baseline with human headers: difference, p and Holm's p per level,
    and the seed-mean difference beside the pooled seed sd."""
    def level_text(row, level: str) -> str:
        if pd.isna(row[f"{level}_difference"]):
            return ""
        return (f"{row[f'{level}_difference']:+.3f} (p {p_text(row[f'{level}_p_value'])}, "
                f"Holm {p_text(row[f'{level}_p_holm'])})")

    def seed_text(row) -> str:
        sd = row["group_seed_sd"]
        if pd.isna(row["group_seed_difference"]):
            return ""
        return f"{row['group_seed_difference']:+.3f}" + ("" if pd.isna(sd) else f" (sd {sd:.3f})")

    return pd.DataFrame({
        "Backbone": rows["backbone"],
        "Comparison": "sr (" + rows["generator"].fillna("").astype(str) + ") vs "
                      + rows["input_b"].astype(str),
        "Groups": rows["groups"],
        "Group AUC difference": rows.apply(lambda r: level_text(r, "group"), axis=1),
        "Crop AUC difference": rows.apply(lambda r: level_text(r, "crop"), axis=1),
        "Group AUC, seed means": rows.apply(seed_text, axis=1),
        "Note": rows["note"].fillna("")})
