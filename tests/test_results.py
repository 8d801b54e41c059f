"""What a terminal shows: pipeline.tools.results at 120 columns, with the caveats that keep a
figure from being a finding (the 6-group folder's collapsed model)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from rich.console import Console

from pipeline.classify.scoring import reliability
from pipeline.reporting.compare import comparison_table
from pipeline.stats import evaluation_report
from pipeline.tools.results import results_table


def write_evaluation(reports: Path, backbone: str, predictions: pd.DataFrame) -> None:
    metrics = {"backbone": backbone, "input": "sr",
               "threshold": {"rule": "youden", "crop": 0.5, "group": 0.5,
                             "crop_range": [0.5, 0.5], "group_range": [0.5, 0.5]},
               **evaluation_report(predictions.assign(crop_id=range(len(predictions)))),
               **reliability(predictions),
               "seeds": {"seeds": [0], **{f"{lvl}_{f}": {"values": [0.5], "mean": 0.5,
                                                          "sd": None}
                                          for lvl in ("crop", "group")
                                          for f in ("auc", "balanced_accuracy")}},
               "train_seconds": 1.0, "peak_memory_mb": 10.0, "params_millions": 1.0,
               "infer_ms_per_image": 1.0, "infer_images_per_s": 1.0}
    path = reports / "eval" / backbone / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))


def test_results_fit_120_columns_and_name_a_collapsed_model(tmp_path):
    reports = tmp_path / "reports"
    # the finding: a 1/1/1 split of 3 groups per class, every test crop at p = 0.5419
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
    assert "not evaluated" in rows["vgg16"] and "1.000 [0." in rows["resnet50"]
    assert "[1.00,1.00]" not in rows["resnet50"]  # perfect separation: a bound, not a point
    # one group per class: no interval, and the table says so (rich once swallowed the
    # bracketed "[n.e.]" as markup)
    assert "0.750 [not estimable]" in rows["mobilenet_v3_large *"]
    assert notes == ["* mobilenet_v3_large: collapsed, group level not estimable"]
    table = comparison_table(reports / "eval", ["resnet50", "mobilenet_v3_large"], {})
    assert list(table["caveat"]) == ["", "collapsed, group level not estimable"]


def test_an_sr_input_without_gain_is_labelled_so_in_every_table(tmp_path):
    """When train_sr found no gain over bicubic, the comparison, the terminal table and the
    report call the input `sr (no gain over bicubic)`, and the report's SR section says so
    in a banner; with a gain they say `sr`."""
    from pipeline.reporting.html import sr_section

    reports = tmp_path / "reports"
    write_evaluation(reports, "resnet50", pd.DataFrame({
        "group": ["a", "a", "b", "c", "d", "d"], "label": [1, 1, 1, 0, 0, 0],
        "prob": [0.9, 0.8, 0.7, 0.2, 0.3, 0.4]}))
    sr = {"psnr_bicubic": 30.0, "ssim_bicubic": 0.8, "psnr_phase1": 30.0, "ssim_phase1": 0.8,
          "psnr_gan": None, "generator": "psnr", "psnr": 30.0, "ssim": 0.8, "iterations": 8,
          "train_seconds": 1.0, "perceptual_loss": "off", "sr_gain_db": 0.02,
          "sr_gain_pairs": "test", "psnr_test": 29.02, "ssim_test": 0.8,
          "psnr_bicubic_test": 29.0, "ssim_bicubic_test": 0.8}
    for better, label in ((False, "sr (no gain over bicubic)"), (True, "sr")):
        (reports / "sr").mkdir(parents=True, exist_ok=True)
        (reports / "sr" / "metrics.json").write_text(json.dumps(
            sr | {"sr_better_than_bicubic": better}))
        table = comparison_table(reports / "eval", ["resnet50"],
                                 sr | {"sr_better_than_bicubic": better})
        assert list(table["input"]) == [label]
        console = Console(width=120, record=True)
        console.print(results_table(reports, ["resnet50"], better)[0])
        assert label in console.export_text()
        section = sr_section(reports)
        assert ("SR does no better than bicubic here" in section) is (not better)
        assert "Held-out test pairs" in section


def test_seed_spread_is_shown_for_every_classifier(tmp_path):
    from pipeline.tools.results import seed_table

    reports = tmp_path / "reports"
    write_evaluation(reports, "resnet50", pd.DataFrame({
        "group": ["a", "b", "c", "d"], "label": [1, 1, 0, 0], "prob": [0.9, 0.8, 0.2, 0.1]}))
    path = reports / "eval" / "resnet50" / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["seeds"] = {"seeds": [0, 1, 2], **{
        f"{lvl}_{f}": {"values": [0.9, 0.8, 0.7], "mean": 0.8, "sd": 0.1}
        for lvl in ("crop", "group") for f in ("auc", "balanced_accuracy")}}
    path.write_text(json.dumps(metrics))
    console = Console(width=120, record=True)
    console.print(seed_table(reports, ["resnet50", "missing"]))
    text = console.export_text()
    assert text.count("0.800 ± 0.100") == 4 and "resnet50" in text and "missing" not in text
