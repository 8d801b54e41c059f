"""The run's report says what ran, draws figures that do not mislead, and shows only this
run's results (reports of backbones no longer in classifier.backbones are removed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime

import pandas as pd
import pytest
import yaml

from pipeline.config import load_params
from pipeline.reporting import html
from pipeline.reporting.provenance import code_state, run_facts
from pipeline.reporting.stale import remove_stale_backbone_reports
from tests.conftest import write_params


def write_json(path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_header_names_profile_departures_data_date_machine_and_precision(tmp_path,
                                                                          monkeypatch):
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    params_file = write_params(tmp_path / "params.yaml")
    params = load_params(params_file)
    reports = tmp_path / "reports"
    write_json(reports / "ingest" / "metrics.json",
               {"manifest_sha256": "0123456789ab" + "f" * 52})
    write_json(reports / "environment" / "train_classifier-mobilenet_v3_small.json",
               {"platform": "Linux-x", "torch": "2.4", "device": "cpu",
                "device_name": "x86_64", "cpu_threads": 2, "cpu_capability": "AVX2"})
    write_json(reports / "train" / "mobilenet_v3_small" / "metrics.json", {"precision": "fp32"})
    write_json(reports / "sr" / "metrics.json", {"precision": "bf16"})
    facts = dict(run_facts(reports, params, yaml.safe_load(params_file.read_text()),
                           now=datetime(2026, 3, 4, 10, 5, tzinfo=UTC), root=tmp_path))
    assert facts["Profile"].startswith("demo; params that differ from it: ")
    assert "epochs: 1 (profile: 3)" in facts["Profile"]  # the tests' shrunken config
    assert "device: 'cpu' (profile: 'auto')" in facts["Profile"]  # a key of config.yaml
    assert facts["Data"] == "data/demo_raw (manifest 0123456789ab)"
    assert facts["Code"] == "not a git checkout"
    assert facts["Date"] == "2026-03-04 10:05 UTC"
    assert facts["Machine (classifier training)"] == ("cpu: x86_64, 2 threads, AVX2; Linux-x; "
                                                      "torch 2.4")
    assert facts["Precision"] == "classifier training fp32; SR training bf16"
    page = html.build_report(tmp_path / "empty", tmp_path / "split.csv", ["mobilenet_v3_small"],
                             False, list(facts.items()))
    assert page.index("<table class='facts'>") < page.index("All figures come from")
    assert "<th>Code</th><td>not a git checkout</td>" in page


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_code_state_names_the_commit_a_dirty_tree_and_an_experiments_base(tmp_path,
                                                                          monkeypatch):
    monkeypatch.delenv("DVC_EXP_BASELINE_REV", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=tmp_path, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "--short", "HEAD").strip()
    assert code_state(tmp_path) == f"commit {head}, clean"
    (tmp_path / "a.py").write_text("x = 2\n")
    (tmp_path / "new.txt").write_text("untracked counts too\n")
    assert code_state(tmp_path) == f"commit {head}, dirty: 2 changed paths (a.py, new.txt)"
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abcdef0123456789")
    assert code_state(tmp_path) == "commit abcdef0 (the experiment's base)"
    monkeypatch.setenv("DVC_EXP_NAME", "lucid-kiwi")
    assert code_state(tmp_path).startswith("commit abcdef0 (the base of experiment lucid-kiwi")


def test_training_curves_keep_the_legend_off_the_lines_and_label_the_loss(tmp_path,
                                                                         monkeypatch):
    for backbone in ("vgg16", "resnet50"):
        path = tmp_path / "train" / backbone / "curves.csv"
        path.parent.mkdir(parents=True)
        path.write_text("epoch,train_loss,val_loss,val_auc\n1,0.7,0.69,0.6\n2,0.6,0.65,0.7\n")
    drawn = []
    monkeypatch.setattr(html, "_png", lambda fig: drawn.append(fig) or "")
    html.curves_section(tmp_path, ["vgg16", "resnet50"])
    (fig,) = drawn
    loss, auc = fig.axes
    assert loss.get_ylabel() == "cross-entropy loss"
    assert loss.get_legend() is None and auc.get_legend() is None  # no legend on a panel
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "vgg16 train", "vgg16 validation", "resnet50 train", "resnet50 validation"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    right_of_panels = max(ax.get_window_extent(renderer).x1 for ax in fig.axes)
    assert legend.get_window_extent(renderer).x0 >= right_of_panels


def test_sr_section_names_the_ablation_when_the_run_did_not_test_sr():
    untested = html.sr_classifier_note("sr", 0, ablation_below=False)
    assert "was not tested in this run" in untested
    assert "dvc exp run --queue -S classifier.input=raw,bicubic</code>" in untested
    assert "python -m pipeline.tools.ablation" in untested
    assert "needs data.acquire_downsample &gt; 0" in untested
    acquired = html.sr_classifier_note("sr", 4, ablation_below=False)
    assert "classifier.input=raw,bicubic,hr</code>" in acquired and "needs" not in acquired
    assert "classifier.input=bicubic,sr,hr" in html.sr_classifier_note("raw", 4, False)
    assert "not tested" not in html.sr_classifier_note("sr", 4, ablation_below=True)


def test_report_page_puts_the_ablation_sentence_in_the_sr_section(tmp_path):
    write_json(tmp_path / "sr" / "metrics.json", {
        "psnr_bicubic": 30.0, "ssim_bicubic": 0.8, "psnr_phase1": 31.0, "ssim_phase1": 0.82,
        "generator": "psnr", "iterations": 80, "train_seconds": 12.0})
    page = html.build_report(tmp_path, tmp_path / "split.csv", ["vgg16"],
                             with_experiments=False)
    sentence = page.index("was not tested in this run")
    assert page.index("<h2>Super-resolution") < sentence < page.index("<h2>Training curves")


def test_compare_removes_the_reports_of_backbones_no_longer_run(tmp_path, monkeypatch):
    """After `-S 'classifier.backbones=[resnet50]'` the demo's VGG16 reports stay on disk
    (DVC leaves a dropped stage's outputs); compare removes them, and nothing else."""
    from rich.console import Console

    from pipeline.stages import compare
    from tests.test_metrics_stats import random_predictions, write_eval

    reports = tmp_path / "reports"
    for name in ("resnet50", "vgg16", "baseline"):
        write_eval(reports / "eval", name, random_predictions(0))
    for folder in ("train", "export"):
        for name in ("resnet50", "vgg16"):
            write_json(reports / folder / name / "metrics.json", {})
    for name in ("train_classifier-vgg16", "evaluate-vgg16", "evaluate-resnet50", "ingest"):
        write_json(reports / "environment" / f"{name}.json", {})
    write_json(reports / "eval" / "notes" / "mine.json", {})  # not a backbone: not touched
    params = write_params(tmp_path / "params.yaml", classifier={"backbones": ["resnet50"]})
    recorder = Console(record=True, width=300)
    monkeypatch.setattr("pipeline.cli.console", recorder)
    monkeypatch.setattr(sys, "argv", [
        "compare", "--eval-dir", str(reports / "eval"), "--sr-metrics",
        str(reports / "sr" / "metrics.json"), "--out", str(reports / "compare"),
        "--shortcut", str(reports / "compare" / "shortcut.json"), "--per-backbone",
        str(reports / "train"), str(reports / "export"), "--environment-dir",
        str(reports / "environment"), "--params", str(params)])
    monkeypatch.setattr(compare, "console", recorder)
    compare.main()
    left = sorted(p.relative_to(reports).as_posix() for p in reports.rglob("*.json"))
    assert not [p for p in left if "vgg16" in p], left
    assert {"eval/baseline/metrics.json", "eval/resnet50/metrics.json", "eval/notes/mine.json",
            "train/resnet50/metrics.json", "export/resnet50/metrics.json",
            "environment/evaluate-resnet50.json", "environment/ingest.json"} <= set(left)
    said = recorder.export_text()
    assert "removed the reports of backbones no longer in classifier.backbones" in said
    assert str(reports / "eval" / "vgg16") in said
    table = pd.read_csv(reports / "compare" / "table.csv")
    assert set(table["backbone"]) == {"resnet50", "baseline (simple features)"}
    assert remove_stale_backbone_reports([reports / "eval"], None, ["resnet50"]) == []


def test_the_evaluate_console_line_keeps_a_not_estimable_interval():
    # rich reads "[not estimable]" as a markup tag; unescaped it vanished from the line
    from pipeline.classify.scoring import print_summary
    from pipeline.cli import console

    metrics = {"crop": {"auc": 0.9, "balanced_accuracy": 0.8, "auc_ci_low": None,
                        "auc_ci_high": None},
               "group": {}, "group_level_estimable": False, "collapsed": False,
               "prob_spread": 0.5, "seeds": {"seeds": [1], "group_auc": {"sd": None}}}
    with console.capture() as captured:
        print_summary("vgg16", metrics, {"crop": 0.5, "group": 0.5, "rule": "youden"})
    assert "crop AUC 0.900 [not estimable]" in captured.get()


def test_the_report_escapes_what_it_reads_from_files_and_params(tmp_path):
    """The templates autoescape: a class name, a data path or an acquisition value with
    markup in it is shown as text, never run as a script."""
    reports = tmp_path / "reports"
    write_json(reports / "ingest" / "metrics.json",
               {"crops": 4, "groups": 2, "positive_class": "<script>alert(1)</script>",
                "acquisition": {"format": {"A": "tiff", "B": "<b>png</b>"}},
                "acquisition_confounds": "format <i>"})
    write_json(reports / "split" / "metrics.json", {"groups_in_two_splits": 0})
    write_json(reports / "eval" / "baseline" / "metrics.json", {"chosen_c": 1.0})
    page = html.build_report(reports, tmp_path / "split.csv", ["mobilenet_v3_small"], False,
                             [("Data", "/data/<img src=x onerror=alert(1)>")])
    for raw in ("<script>", "<b>png</b>", "format <i>", "<img src=x"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "/data/&lt;img src=x onerror=alert(1)&gt;" in page


def test_a_value_the_code_forgets_to_pass_fails_the_report():
    # StrictUndefined: a missing value raises instead of leaving a blank in the page
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        html._environment().get_template("sections.html.j2").module.grid("none left out", 0)
