"""The SR ablation across DVC experiments: one row per dataset x backbone x input (x SR
generator), and sr paired with raw, bicubic and hr on the same test samples, at sample
level (DeLong, paired bootstrap) and at crop level (a paired bootstrap that draws whole
samples, each with all its crops, since a sample's crops are correlated). The command that
prints and writes them is pipeline.tools.ablation."""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable

import pandas as pd
from sklearn.metrics import roc_auc_score

from pipeline.io import read_crop_table
from pipeline.reporting.experiments import Experiment, evaluation_rows, newest_per_cell

# _crop_auc_per_draw and _percentile_interval are what evaluate's crop-level intervals
# use; shared rather than rewritten, so both kinds of interval resample the same way.
from pipeline.stats import (
    SampleMismatchError,
    _crop_auc_per_draw,
    _percentile_interval,
    paired_sample_comparison,
    sample_level,
    stratified_sample_draws,
)

# lr and batch size are part of a cell: the study's grid runs in the same project, and
# an input is only compared with another trained the same way.
CELL = ["dataset", "lr", "batch_size", "backbone", "input", "generator"]

TABLE_COLUMNS = [
    "dataset", "raw_dir", "acquire_downsample", "manifest_sha256", "lr", "batch_size",
    "backbone", "input", "input_label", "generator",
    "sample_auc", "sample_auc_ci_low", "sample_auc_ci_high", "sample_balanced_accuracy",
    "sample_balanced_accuracy_ci_low", "sample_balanced_accuracy_ci_high",
    "crop_auc", "crop_auc_ci_low", "crop_auc_ci_high", "crop_balanced_accuracy",
    "crop_balanced_accuracy_ci_low", "crop_balanced_accuracy_ci_high",
    "test_samples", "experiment", "rev", "timestamp"]

PAIRED_COLUMNS = [
    "dataset", "lr", "batch_size", "backbone", "generator", "input_a", "input_b",
    "experiment_a", "experiment_b",
    "samples", "auc_a", "auc_b", "auc_difference", "difference_ci_low", "difference_ci_high",
    "bootstrap_resamples", "delong_se", "delong_z", "delong_p_value",
    "crops", "crop_auc_a", "crop_auc_b", "crop_auc_difference", "crop_difference_ci_low",
    "crop_difference_ci_high", "note"]

# What sr is tested against: the acquired crop itself (is SR worth running at all?),
# bicubic (does the generator beat plain interpolation?) and hr (how much is left?).
BASELINES = ("raw", "bicubic", "hr")

PredictionsReader = Callable[[str, str], pd.DataFrame]  # (rev, backbone) -> predictions.csv


def ablation_table(experiments: list[Experiment]) -> tuple[pd.DataFrame, int]:
    """One row per dataset x backbone x input x generator; and how many repeats were dropped.

    A cell run more than once (a rerun, or the workspace repeating the experiment applied
    to it) keeps the newest experiment by commit time, the workspace counting as newest.
    """
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


def paired_crop_comparison(predictions_a: pd.DataFrame, predictions_b: pd.DataFrame,
                           resamples: int, seed: int, alpha: float = 0.05) -> dict:
    """Crop-level AUC of a against b on the same test crops, with a paired bootstrap
    interval of the difference that resamples samples (stratified by class).

    Raises SampleMismatchError when the two cover different crops, or place or label a
    crop differently.
    """
    keys = ["crop_id", "group", "label"]
    left = predictions_a.sort_values("crop_id").reset_index(drop=True)
    right = predictions_b.sort_values("crop_id").reset_index(drop=True)
    if len(left) != len(right) or not left[keys].equals(right[keys]):
        only_a = sorted(set(left["crop_id"]) - set(right["crop_id"]))
        only_b = sorted(set(right["crop_id"]) - set(left["crop_id"]))
        detail = (f"{len(only_a)} crops only in the first, {len(only_b)} only in the second"
                  if only_a or only_b else "the same crops in other samples or classes")
        raise SampleMismatchError(f"different test crops ({detail})")
    samples = sample_level(left)
    draws, negatives = stratified_sample_draws(samples["label"].to_numpy(), resamples, seed)
    differences = (_crop_auc_per_draw(left, samples["group"], draws, negatives)
                   - _crop_auc_per_draw(right, samples["group"], draws, negatives))
    interval = _percentile_interval(differences, alpha)
    auc_a = float(roc_auc_score(left["label"], left["prob"]))
    auc_b = float(roc_auc_score(right["label"], right["prob"]))
    return {"crops": len(left), "crop_auc_a": auc_a, "crop_auc_b": auc_b,
            "crop_auc_difference": auc_a - auc_b, "crop_difference_ci_low": interval.low,
            "crop_difference_ci_high": interval.high}


def paired_table(table: pd.DataFrame, read_predictions: PredictionsReader, resamples: int,
                 seed: int) -> pd.DataFrame:
    """sr (each generator) against each baseline input, per dataset and backbone: at
    sample level (DeLong, paired bootstrap) and crop level (paired bootstrap)."""
    rows = []
    for (dataset, lr, batch_size, backbone), part in table.groupby(
            ["dataset", "lr", "batch_size", "backbone"], sort=True):
        by_input = {source: cells for source, cells in part.groupby("input")}
        for sr in by_input.get("sr", pd.DataFrame()).itertuples(index=False):
            for baseline in BASELINES:
                if baseline not in by_input:
                    continue
                other = by_input[baseline].iloc[0]
                row = {"dataset": dataset, "lr": lr, "batch_size": batch_size,
                       "backbone": backbone, "generator": sr.generator,
                       "input_a": "sr", "input_b": baseline, "experiment_a": sr.experiment,
                       "experiment_b": other["experiment"], "note": ""}
                try:
                    predictions_sr = read_predictions(sr.rev, backbone)
                    predictions_other = read_predictions(other["rev"], backbone)
                    row |= paired_sample_comparison(predictions_sr, predictions_other,
                                                    resamples, seed)
                    row |= paired_crop_comparison(predictions_sr, predictions_other,
                                                  resamples, seed)
                except SampleMismatchError as exc:
                    row["note"] = f"not paired: {exc}; the two ran on different test splits"
                except (ValueError, OSError) as exc:  # too few samples, predictions missing
                    row["note"] = f"not tested: {exc}"
                rows.append(row)
    # Counts stay integers in the CSV although a row that could not be paired has none.
    counts = {"samples": "Int64", "crops": "Int64", "bootstrap_resamples": "Int64"}
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS).astype(counts)


def run_ablation(experiments: list[Experiment], read_predictions: PredictionsReader,
                 resamples: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(table, paired, duplicates dropped) for the finished experiments."""
    table, duplicates = ablation_table(experiments)
    return table, paired_table(table, read_predictions, resamples, seed), duplicates
