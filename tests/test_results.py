"""What a terminal shows: pipeline.results at 120 columns, with the caveats that keep a
figure from being a finding (the 6-sample folder's collapsed model)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from rich.console import Console

from pipeline.classify.evaluation import reliability
from pipeline.reporting.compare import comparison_table
from pipeline.stats import evaluation_report
from pipeline.tools.results import results_table


def write_evaluation(reports: Path, backbone: str, predictions: pd.DataFrame) -> None:
    metrics = {"backbone": backbone, "input": "sr",
               "threshold": {"rule": "youden", "crop": 0.5, "sample": 0.5},
               **evaluation_report(predictions, 100, 0), **reliability(predictions),
               "train_seconds": 1.0, "peak_memory_mb": 10.0, "params_millions": 1.0,
               "infer_ms_per_image": 1.0, "infer_images_per_s": 1.0}
    path = reports / "eval" / backbone / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))


def test_results_fit_120_columns_and_name_a_collapsed_model(tmp_path):
    reports = tmp_path / "reports"
    # the finding: a 1/1/1 split of 3 samples per class, every test crop at p = 0.5419
    write_evaluation(reports, "mobilenet_v3_large", pd.DataFrame({
        "group": ["a", "a", "b", "b"], "label": [1, 1, 0, 0],
        "prob": [0.54191, 0.54190, 0.54190, 0.54190]}))
    write_evaluation(reports, "resnet50", pd.DataFrame({
        "group": ["a", "a", "b", "c", "d", "d"], "label": [1, 1, 1, 0, 0, 0],
        "prob": [0.9, 0.8, 0.7, 0.2, 0.3, 0.4]}))
    console = Console(width=120, record=True)
    table, notes = results_table(reports, ["vgg16", "resnet50", "mobilenet_v3_large"])
    console.print(table)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 120
    rows = {line.split("│")[1].strip(): line for line in lines if line.startswith("│")}
    assert set(rows) == {"vgg16", "resnet50", "mobilenet_v3_large *"}  # one line each
    assert "not evaluated" in rows["vgg16"] and "1.000 [1.00,1.00]" in rows["resnet50"]
    assert notes == ["* mobilenet_v3_large: collapsed, sample level not estimable"]
    table = comparison_table(reports / "eval", ["resnet50", "mobilenet_v3_large"])
    assert list(table["caveat"]) == ["", "collapsed, sample level not estimable"]
