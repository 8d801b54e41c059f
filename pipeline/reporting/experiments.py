"""DVC experiments side by side: the finished ones (what `dvc exp show --json` prints, read
through DVC's Python API; failed and queued runs left out, the newest of repeated cells
kept), grouped by the data they ran on, one row per evaluated backbone. The lr x batch grid
and the SR ablation read them here."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.cli import PipelineError
from pipeline.config import flatten
from pipeline.reporting.labels import BASELINE, input_label

# Executor states of `dvc exp show --json` (dvc/repo/experiments/serialize.py ExpExecutor)
# whose metrics are not the experiment's own: a queued run has none yet, a running one
# is unfinished, and a failed one carries the workspace's metrics from when it was queued.
NOT_FINISHED = ("queued", "running", "failed")

LEVELS = ("crop", "group")

FIGURES = ("auc", "auc_ci_low", "auc_ci_high", "balanced_accuracy", "balanced_accuracy_ci_low",
           "balanced_accuracy_ci_high")

# Params that do not change a trained model's test figures: where outputs go, how work is
# scheduled or batched at inference, which other backbones ran, new-patient folders. Every
# other key of params.yaml is part of a cell's setting (tests/test_ablation_grid.py changes
# each one and checks that the setting changes).
NOT_IN_SETTING = ("profile", "device", "distributed", "predict", "classifier.backbones",
                  "classifier.eval_batch_size", "classifier.compile", "classifier.permutations",
                  "sr.infer_batch", "sr.tile", "sr.tile_overlap", "sr.checkpoint_every",
                  "sr.min_gain_db", "demo", "runtime", "classifier.cache_on_device")


@dataclass(frozen=True)
class Experiment:
    """One finished experiment (or the workspace, or a baseline commit) from dvc exp show."""

    name: str
    rev: str                 # commit SHA, or "workspace"
    timestamp: str | None    # ISO commit time; None for the workspace
    params: dict             # params.yaml, nested as in the file
    metrics: dict[str, dict]  # metrics file path -> its data (unreadable files left out)


@dataclass
class Experiments:
    finished: list[Experiment]
    left_out: Counter = field(default_factory=Counter)  # reason -> number of experiments


def _experiment(state: dict, name: str | None) -> Experiment | None:
    """An ExpState ({rev, name, data, error, experiments}) as an Experiment, None if errored."""
    data = state.get("data")
    if state.get("error") or not isinstance(data, dict):
        return None
    params = (data.get("params") or {}).get("params.yaml", {}).get("data") or {}
    metrics = {path: result["data"] for path, result in (data.get("metrics") or {}).items()
               if isinstance(result, dict) and isinstance(result.get("data"), dict)}
    return Experiment(name=name or state.get("name") or state["rev"], rev=state["rev"],
                      timestamp=data.get("timestamp"), params=params, metrics=metrics)


def _running_in_workspace(raw: list[dict]) -> bool:
    """Whether `dvc exp run` (not queued) is running in the workspace right now."""
    return any((exp_range.get("executor") or {}).get("name") == "workspace"
               and (exp_range.get("executor") or {}).get("state") == "running"
               for state in raw for exp_range in state.get("experiments") or [])


def collect_experiments(raw: list[dict]) -> Experiments:
    """Finished experiments from dvc 3's `exp show --json`, and how many were left out why.

    The JSON is a list of ExpState: the workspace, then each baseline commit with its
    experiments as ExpRange {revs: [ExpState, ...], executor: {state}, name}; revs[0] is
    the experiment's newest commit.
    """
    collected = Experiments(finished=[])
    for state in raw:
        experiment = _experiment(state, state.get("name"))  # workspace: name null, rev set
        if experiment is None:
            collected.left_out["error"] += 1
        elif experiment.rev == "workspace" and _running_in_workspace(raw):
            # Its params.yaml is the running experiment's, its metrics the previous run's.
            collected.left_out["workspace (an experiment is running in it)"] += 1
        else:
            collected.finished.append(experiment)
        for exp_range in state.get("experiments") or []:
            status = (exp_range.get("executor") or {}).get("state")
            if status in NOT_FINISHED:
                collected.left_out[status] += 1
                continue
            revs = exp_range.get("revs") or []
            experiment = _experiment(revs[0], exp_range.get("name")) if revs else None
            if experiment is None:
                collected.left_out["error"] += 1
            else:
                collected.finished.append(experiment)
    return collected


def experiments_from_dvc(json_file: Path | None = None, root: Path | None = None) -> Experiments:
    """Experiments of the workspace, its baseline and every experiment (or of a saved JSON)."""
    if json_file is not None:
        return collect_experiments(json.loads(json_file.read_text()))
    return collect_experiments(exp_show_states(root))


def exp_show_states(root: Path | None = None) -> list[dict]:
    """What `dvc exp show --json` prints, from DVC's Python API in this process.

    Not `dvc.api.exp_show`: it flattens the states into display columns, each named by its
    metric's key and prefixed with the metrics file only where two files share that key,
    with short revs, display times and every value turned into text, so a metric could not
    be traced back to its file nor a param keep its type."""
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.utils.serialize import encode_exception

    def as_json(item):  # the CLI's encoding: dates as ISO text, errors as {type, msg}
        return item.isoformat() if isinstance(item, (date, datetime)) else encode_exception(item)

    try:
        with Repo(None if root is None else str(root)) as repo:
            states = repo.experiments.show()
    except DvcException as exc:
        raise PipelineError(f"dvc exp show failed: {exc}") from exc
    return json.loads(json.dumps([state.dumpd() for state in states], default=as_json))


def describe_left_out(left_out: Counter) -> str:
    if not left_out:
        return "no experiment left out"
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(left_out.items()))
    return f"left out (no results of their own): {parts}"


def dataset_of(experiment: Experiment) -> dict:
    """The data an experiment ran on: raw folder, acquisition setting, manifest digest."""
    data = experiment.params.get("data") or {}
    ingest = experiment.metrics.get("reports/ingest/metrics.json") or {}
    # Experiments from before data.acquire_downsample existed used the crops as they are (0).
    raw_dir, downsample = str(data.get("raw_dir")), int(data.get("acquire_downsample") or 0)
    digest = ingest.get("manifest_sha256")
    label = raw_dir + (f", acquired at 1/{downsample}" if downsample else ", crops as they are")
    label += f", manifest {digest[:12]}" if digest else ", manifest digest not recorded"
    return {"dataset": label, "raw_dir": raw_dir, "acquire_downsample": downsample,
            "manifest_sha256": digest}


def setting_key(params: dict, free: tuple[str, ...] = ()) -> str:
    """A short hash of every param that changes a cell's figures, less the `free` ones (a
    table's own axes): two cells with one key differ in those axes only."""
    import hashlib
    import json

    skipped = NOT_IN_SETTING + free
    kept = {key: value for key, value in sorted(flatten(params).items())
            if not any(key == s or key.startswith(s + ".") for s in skipped)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


# A table's axes: the grid varies lr and batch size, the ablation the classifier's input.
GRID_AXES = ("lr", "batch_size")
ABLATION_AXES = ("classifier.input", "sr.generator")
# What the shortcut baseline's figures depend on (dvc.yaml's baseline stage, and the data
# and split before it): experiments that differ only in other params share one baseline.
BASELINE_SETTING = ("seed", "baseline", "classifier.threshold", "classifier.bootstrap", "data",
                    "split")


def baseline_setting(params: dict) -> str:
    """setting_key's hash over only the params the baseline's figures depend on."""
    import hashlib

    kept = {key: value for key, value in sorted(flatten(params).items())
            if any(key == s or key.startswith(s + ".") for s in BASELINE_SETTING)}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def evaluation_rows(experiment: Experiment) -> list[dict]:
    """One row per evaluated backbone: its setting (every param that changes its figures),
    the same less each table's axes, its dataset, lr, batch size and test figures with their
    intervals and their mean and sd over the training seeds. Only the backbones of the
    experiment's classifier.backbones and the baseline: an earlier run's reports/eval/<x>
    of a backbone since dropped are not this experiment's results."""
    params = experiment.params
    classifier, sr = params.get("classifier") or {}, params.get("sr") or {}
    ran = classifier.get("backbones")
    rows = []
    for path, metrics in experiment.metrics.items():
        parts = Path(path).parts
        if len(parts) != 4 or parts[:2] != ("reports", "eval") or "group" not in metrics:
            continue
        if ran is not None and parts[2] not in [*ran, BASELINE]:
            continue
        # What was evaluated is in the metrics; params are the fallback.
        source = metrics.get("input") or classifier.get("input")
        generator = metrics.get("generator") or sr.get("generator") or "not recorded"
        row = dataset_of(experiment) | {
            "backbone": parts[2], "input": source, "generator": generator if source == "sr"
            else "", "lr": params.get("lr"), "batch_size": params.get("batch_size"),
            "setting": setting_key(params), "grid_setting": setting_key(params, GRID_AXES),
            "ablation_setting": setting_key(params, ABLATION_AXES)}
        if parts[2] == BASELINE:  # one cell per data set: lr, batch and input do not apply
            row |= {"lr": np.nan, "batch_size": np.nan, "setting": baseline_setting(params),
                    "grid_setting": baseline_setting(params),
                    "ablation_setting": baseline_setting(params)}
        for level in LEVELS:
            row |= {f"{level}_{key}": (metrics.get(level) or {}).get(key, np.nan)
                    for key in FIGURES}
            for figure in ("auc", "balanced_accuracy"):
                spread = (metrics.get("seeds") or {}).get(f"{level}_{figure}") or {}
                row[f"{level}_{figure}_seed_mean"] = spread.get("mean", np.nan)
                row[f"{level}_{figure}_seed_sd"] = spread.get("sd", np.nan)
        sr_metrics = experiment.metrics.get("reports/sr/metrics.json") or {}
        # DVC's exp show drops lists from metrics: the seed list is there in the file, not
        # here, so the count comes from the params evaluate ran with.
        seed_list = (metrics.get("seeds") or {}).get("seeds")
        seeds = 1 if parts[2] == BASELINE else int(classifier.get("seeds") or 1)
        row |= {"seeds": len(seed_list) if seed_list else seeds,
                "test_groups": metrics.get("test_groups"), "experiment": experiment.name,
                "rev": experiment.rev, "timestamp": experiment.timestamp,
                "input_label": input_label(source, sr_metrics.get("sr_better_than_bicubic"))}
        rows.append(row)
    return rows


def newest_per_cell(rows: list[dict], cell: list[str]) -> tuple[pd.DataFrame, int]:
    """Rows with one per cell, the newest experiment's (the workspace counts as newest:
    it is at least as new as its baseline commit); and how many duplicates were dropped."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, 0
    newest_first = frame.assign(_order=frame["timestamp"].fillna("9999")).sort_values(
        "_order", ascending=False, kind="stable")
    kept = newest_first.drop_duplicates(cell, keep="first").drop(columns="_order")
    return kept.sort_values(cell, kind="stable").reset_index(drop=True), len(frame) - len(kept)

# A cell is a backbone at one setting; the readable columns come along for the tables.
CELL = ["dataset", "setting", "backbone"]


def grid_table(experiments: list[Experiment]) -> tuple[pd.DataFrame, int]:
    """One row per cell (dataset, setting, backbone) with crop and group figures."""
    rows = [row for experiment in experiments for row in evaluation_rows(experiment)]
    return newest_per_cell(rows, CELL)


def format_lr(lr: float) -> str:
    """A learning rate as written in params.yaml (0.0001, not 1e-04 or 0.000); '-' for the
    baseline, which has none."""
    if lr is None or pd.isna(lr):
        return "-"
    return np.format_float_positional(float(lr), trim="-")


def with_interval(row, key: str) -> str:
    """'0.912 [0.850, 0.970]', '0.912 [not estimable]' where the evaluation found none."""
    value, low, high = row[key], row[f"{key}_ci_low"], row[f"{key}_ci_high"]
    if pd.isna(value):
        return ""
    if pd.isna(low) or pd.isna(high):
        return f"{value:.3f} [not estimable]"
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def with_spread(row, key: str) -> str:
    """'0.905 ± 0.012 (3 seeds)' from a row's seed mean and sd of `key`."""
    mean, sd = row.get(f"{key}_seed_mean"), row.get(f"{key}_seed_sd")
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.3f}" + ("" if sd is None or pd.isna(sd) else f" ± {sd:.3f}") + \
        f" ({int(row.get('seeds') or 1)} seeds)"
