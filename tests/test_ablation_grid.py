"""The ablation and the lr x batch_size grid from `dvc exp show --json`, and the report page.

The fake JSON has dvc 3.67's shape (dvc/repo/experiments/serialize.py, as written by
`dvc exp show --json`): a list of ExpState {rev, name, data, error, experiments}, where a
baseline's experiments are ExpRange {revs: [ExpState], executor: {state, ...} | null, name}.
A queued run has no metrics; a failed one has error {msg: "Experiment run failed"} and
the workspace's metrics from when it was queued, which must not be read as its own.
"""

import copy
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from pipeline.config import flatten
from pipeline.reporting import ablation, experiments, html
from pipeline.reporting.experiments import collect_experiments, grid_table
from pipeline.stages import report as report_stage
from pipeline.stats import GroupMismatchError, paired_comparison
from pipeline.tools import ablation as ablation_tool
from pipeline.tools import experiments_page
from pipeline.tools.grid import print_grid
from tests.conftest import REPO, write_params

DEMO = {"raw_dir": "data/demo_raw", "acquire_downsample": 0}
REAL = {"raw_dir": "/data/tdp43", "acquire_downsample": 4}
LABELS = {f"S{i:02d}": int(i >= 5) for i in range(12)}  # 5 control, 7 ALS groups


def predictions(strength: float, seed: int, groups=LABELS, noise: float = 0.3) -> pd.DataFrame:
    """Three crops per group; the noise is per group, as a patient's crops resemble."""
    rng = np.random.default_rng(seed)
    rows = []
    for g, y in groups.items():
        centre = 0.5 + strength * (y - 0.5) + rng.normal(0, noise)
        rows += [{"crop_id": f"{g}_{c}", "group": g, "label": y,
                  "prob": float(np.clip(centre + rng.normal(0, 0.05), 0, 1))} for c in range(3)]
    frame = pd.DataFrame(rows)
    return frame.assign(predicted=(frame["prob"] >= 0.5).astype(int))


def eval_metrics(source: str, auc: float, generator: str | None = None) -> dict:
    level = {"auc": auc, "auc_ci_low": auc - 0.1, "auc_ci_high": min(auc + 0.1, 1.0),
             "balanced_accuracy": auc - 0.05, "balanced_accuracy_ci_low": auc - 0.2,
             "balanced_accuracy_ci_high": auc, "accuracy": auc - 0.04}
    # As `dvc exp show --json` gives them: lists (the seeds, each seed's value) are dropped.
    spread = {"mean": auc, "sd": 0.02}
    out = {"backbone": "resnet50", "input": source, "crop": level, "group": dict(level),
           "test_groups": 12,
           "seeds": {f"{lvl}_{f}": dict(spread) for lvl in ("crop", "group")
                     for f in ("auc", "balanced_accuracy")}}
    return out | ({"generator": generator} if generator else {})


def state(rev, name, timestamp, data, source, auc, *, generator=None, lr=0.0001, batch=16,
          digest="d" * 64, error=None, with_metrics=True) -> dict:
    params = {"seed": 42, "lr": lr, "batch_size": batch, "data": data,
              "classifier": {"input": source, "backbones": ["resnet50"], "seeds": 3},
              "sr": {"generator": generator or "psnr"}}
    metrics = {"reports/ingest/metrics.json": {"data": {"crops": 40, "manifest_sha256": digest}},
               "reports/eval/resnet50/metrics.json": {"data": eval_metrics(source, auc,
                                                                           generator)},
               "reports/train/resnet50/metrics.json": {"error": {"type": "FileNotFoundError",
                                                                 "msg": "missing"}}}
    return {"rev": rev, "name": name, "error": error, "experiments": None,
            "data": {"rev": rev, "timestamp": timestamp,
                     "params": {"params.yaml": {"data": params}},
                     "metrics": metrics if with_metrics else {}, "deps": {}, "outs": {},
                     "meta": {}}}


def exp_range(exp_state: dict, executor: str | None) -> dict:
    return {"revs": [exp_state], "name": exp_state["name"],
            "executor": None if executor is None else {
                "state": executor, "name": "dvc-task",
                "local": {"root": None, "log": None, "pid": None, "returncode": None,
                          "task_id": exp_state["rev"]}}}


def fake_exp_show() -> list[dict]:
    t = "2026-03-0{}T10:00:00".format
    experiments = [
        exp_range(state("e1", "sr-gan", t(3), DEMO, "sr", 0.93, generator="gan"), "success"),
        exp_range(state("e2", "bicubic-new", t(4), DEMO, "bicubic", 0.80), "success"),
        exp_range(state("e3", "bicubic-old", t(2), DEMO, "bicubic", 0.70), None),
        exp_range(state("e4", "hr", t(3), DEMO, "hr", 0.95), "success"),
        # a failed run carries stale metrics claiming input raw: must not become a row
        exp_range(state("e5", "raw-failed", t(5), DEMO, "raw", 0.99,
                        error={"msg": "Experiment run failed", "type": ""}), "failed"),
        exp_range(state("e6", "raw-queued", t(6), DEMO, "raw", 0.5, with_metrics=False),
                  "queued"),
        # the other dataset: acquired at 1/4, its own manifest; bicubic on another split
        exp_range(state("f1", "real-sr", t(4), REAL, "sr", 0.75, generator="psnr",
                        digest="e" * 64), "success"),
        exp_range(state("f2", "real-bicubic", t(4), REAL, "bicubic", 0.70, digest="e" * 64),
                  "success"),
    ]
    workspace = state("workspace", None, None, DEMO, "sr", 0.91, generator="psnr")
    baseline = state("b0", "main", t(1), DEMO, "sr", 0.90, generator="psnr")
    return [workspace, baseline | {"experiments": experiments}]


READS = {("workspace", "resnet50"): predictions(0.4, 7), ("b0", "resnet50"): predictions(0.4, 7),
         ("e1", "resnet50"): predictions(0.9, 1, noise=0.01),  # perfect
         ("e2", "resnet50"): predictions(0.3, 2),
         ("e3", "resnet50"): predictions(0.1, 3),
         ("e4", "resnet50"): predictions(0.9, 4, noise=0.01),  # perfect too
         ("f1", "resnet50"): predictions(0.5, 5),
         ("f2", "resnet50"): predictions(0.5, 6, {f"T{i}": i % 2 for i in range(12)})}


def read_predictions(rev: str, backbone: str) -> pd.DataFrame:
    return READS[(rev, backbone)]


def test_collect_leaves_out_failed_and_queued_and_counts_them():
    collected = collect_experiments(json.loads(json.dumps(fake_exp_show())))
    names = {e.name for e in collected.finished}
    assert names == {"workspace", "main", "sr-gan", "bicubic-new", "bicubic-old", "hr",
                     "real-sr", "real-bicubic"}
    assert dict(collected.left_out) == {"failed": 1, "queued": 1}
    assert "1 failed, 1 queued" in experiments.describe_left_out(collected.left_out)


def test_rows_are_only_the_backbones_the_experiment_ran_and_the_baseline():
    """A run with classifier.backbones [resnet50] in a clone still holds the demo's
    reports/eval/vgg16 (DVC leaves a dropped stage's outputs): it is not this run's row."""
    raw = state("x1", "own-data", "2026-03-08T10:00:00", REAL, "sr", 0.8)
    metrics = raw["data"]["metrics"]
    metrics["reports/eval/vgg16/metrics.json"] = {"data": eval_metrics("sr", 0.99)}
    metrics["reports/eval/baseline/metrics.json"] = {"data": eval_metrics("sr", 0.7)}
    experiment = collect_experiments([raw]).finished[0]
    rows = experiments.evaluation_rows(experiment)
    assert sorted(row["backbone"] for row in rows) == ["baseline", "resnet50"]
    # an experiment from before classifier.backbones existed: every evaluation is its own
    del raw["data"]["params"]["params.yaml"]["data"]["classifier"]["backbones"]
    older = experiments.evaluation_rows(collect_experiments([raw]).finished[0])
    assert sorted(row["backbone"] for row in older) == ["baseline", "resnet50", "vgg16"]


def test_workspace_is_left_out_while_an_experiment_runs_in_it():
    """`dvc exp run` in the workspace: params.yaml already holds the running experiment's
    params (here lr 0.001) while the metrics are still the previous run's, so the workspace
    row would put old figures in the wrong cell (seen on the real-data grid)."""
    raw = fake_exp_show()
    running = exp_range(state("workspace", "next-cell", None, DEMO, "sr", 0.91, lr=0.001),
                        "running")
    running["executor"]["name"] = "workspace"
    raw[1]["experiments"].append(running)
    collected = collect_experiments(json.loads(json.dumps(raw)))
    assert "workspace" not in {e.name for e in collected.finished}
    assert collected.left_out["workspace (an experiment is running in it)"] == 1
    assert collected.left_out["running"] == 1
    assert {e.name for e in collect_experiments(fake_exp_show()).finished} >= {"workspace"}


def test_ablation_tables_per_dataset_with_paired_tests(capsys):
    collected = collect_experiments(fake_exp_show())
    table, paired, duplicates = ablation.run_ablation(collected.finished, read_predictions,
                                                      permutations=199, seed=0)
    assert list(table.columns) == ablation.TABLE_COLUMNS
    assert table["dataset"].nunique() == 2
    demo = table[table["raw_dir"] == "data/demo_raw"].set_index(["input", "generator"])
    real = table[table["raw_dir"] == "/data/tdp43"]
    assert sorted(demo.index) == [("bicubic", ""), ("hr", ""), ("sr", "gan"), ("sr", "psnr")]
    assert "raw" not in set(table["input"])  # the failed run's stale metrics are not a cell
    assert demo.loc[("bicubic", ""), "experiment"] == "bicubic-new"  # newest of two kept
    assert demo.loc[("sr", "psnr"), "experiment"] == "workspace"  # newer than its baseline
    assert duplicates == 2
    assert (real["acquire_downsample"] == 4).all()
    assert "acquired at 1/4" in real["dataset"].iloc[0]
    assert real["dataset"].iloc[0].endswith("manifest eeeeeeeeeeee")
    assert demo["group_balanced_accuracy_ci_high"].notna().all()
    assert demo["crop_auc_ci_low"].notna().all()
    assert (demo["seeds"] == 3).all() and (demo["group_auc_seed_sd"] == 0.02).all()

    rows = paired.set_index(["dataset", "generator", "input_b"])
    demo_name = demo["dataset"].iloc[0]
    for generator in ("gan", "psnr"):
        for baseline in ("bicubic", "hr"):
            row = rows.loc[(demo_name, generator, baseline)]
            assert row["note"] == "" and row["groups"] == 12 and row["crops"] == 36
            assert row["permutations"] == 4096  # 12 groups: every sign pattern, exact
            for level in ("crop", "group"):
                assert 0 < row[f"{level}_p_value"] <= row[f"{level}_p_holm"] <= 1
            assert row["group_seed_sd"] == pytest.approx(0.02)
    gan_vs_hr = rows.loc[(demo_name, "gan", "hr")]  # perfect crops on both sides
    assert gan_vs_hr["crop_auc_a"] == gan_vs_hr["crop_auc_b"] == 1.0
    assert gan_vs_hr["crop_difference"] == 0 and gan_vs_hr["crop_p_value"] == 1.0
    psnr_vs_bicubic = rows.loc[(demo_name, "psnr", "bicubic")]
    sr_crops, bicubic_crops = READS[("workspace", "resnet50")], READS[("e2", "resnet50")]
    assert psnr_vs_bicubic["crop_difference"] == pytest.approx(
        roc_auc_score(sr_crops["label"], sr_crops["prob"])
        - roc_auc_score(bicubic_crops["label"], bicubic_crops["prob"]))
    gan_vs_bicubic = rows.loc[(demo_name, "gan", "bicubic")]
    assert gan_vs_bicubic["experiment_a"] == "sr-gan"
    assert gan_vs_bicubic["experiment_b"] == "bicubic-new"
    mismatch = paired[paired["dataset"] == real["dataset"].iloc[0]]
    assert len(mismatch) == 1 and "different test splits" in mismatch["note"].iloc[0]
    assert pd.isna(mismatch["group_p_value"].iloc[0])

    ablation_tool.print_ablation(table, paired)
    out = capsys.readouterr().err
    assert out.count("Ablation on held-out test groups, data:") == 2
    assert "data/demo_raw, crops as they are" in out and "/data/tdp43, acquired at 1/4" in out
    assert "sr (gan) vs hr" in out and "different test splits" in out
    assert "Holm" in out and "(sd 0.020)" in out


def test_the_paired_test_flips_whole_groups_and_needs_the_same_crops():
    """A group's crops are swapped together: 12 groups give 2**12 patterns (crops as units
    would give 2**36), so crops of one field never count as independent evidence."""
    a, b = predictions(0.4, 11), predictions(0.3, 12)
    result = paired_comparison(a, b, permutations=99, seed=0)
    assert result["permutations"] == 2 ** 12 and result["crops"] == 36
    same = paired_comparison(a, a.sample(frac=1, random_state=0), 99, 0)
    assert same["crop_difference"] == 0 and same["crop_p_value"] == 1.0
    with pytest.raises(GroupMismatchError, match="1 crops only in the first"):
        paired_comparison(a, a.iloc[1:], 99, 0)
    relabelled = a.assign(group=a["group"].where(a.index != 0, "S11"))
    with pytest.raises(GroupMismatchError, match="other groups or classes"):
        paired_comparison(a, relabelled, 99, 0)


def test_every_param_that_changes_a_result_changes_the_cell_setting():
    """Every key of params.yaml but those that cannot move a test figure (NOT_IN_SETTING)
    is part of a cell's setting: changing any one of them changes it."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    flat = flatten(base)
    key = experiments.setting_key(base)
    checked = 0
    for name, value in flat.items():
        if any(name == s or name.startswith(s + ".") for s in experiments.NOT_IN_SETTING):
            continue
        changed = copy.deepcopy(base)
        node = changed
        *parents, leaf = name.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = (not value if isinstance(value, bool) else value + 1
                      if isinstance(value, (int, float)) else [*value, "x"]
                      if isinstance(value, list) else f"{value}-other")
        assert experiments.setting_key(changed) != key, name
        checked += 1
    assert checked > 60
    for name in ("epochs", "seed", "classifier.image_size", "augment.copies",
                 "classifier.pretrained", "classifier.precision", "preprocess.filter"):
        assert name in flat and not any(name.startswith(s) for s in experiments.NOT_IN_SETTING)
    # the axes of a table are left out of its own setting
    moved = copy.deepcopy(base) | {"lr": 0.123}
    assert experiments.setting_key(moved, experiments.GRID_AXES) == \
        experiments.setting_key(base, experiments.GRID_AXES)


def test_ablation_cli_writes_both_files(tmp_path, monkeypatch):
    show = tmp_path / "show.json"
    show.write_text(json.dumps(fake_exp_show()))
    params = write_params(tmp_path / "params.yaml")
    monkeypatch.setattr(ablation_tool, "predictions_from_git", read_predictions)
    monkeypatch.setattr(sys, "argv", ["ablation", "--json", str(show), "--out",
                                      str(tmp_path / "ablation"), "--params", str(params)])
    ablation_tool.main()
    table = pd.read_csv(tmp_path / "ablation" / "table.csv")
    paired = pd.read_csv(tmp_path / "ablation" / "paired.csv")
    assert len(table) == 6 and len(paired) == 5


def test_predictions_read_from_an_experiment_commit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "reports" / "eval" / "vgg16" / "predictions.csv"
    path.parent.mkdir(parents=True)
    predictions(0.5, 0).to_csv(path, index=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "exp"], check=True)
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    path.write_text("changed on disk afterwards\n")
    from_commit = ablation.predictions_from_git(rev, "vgg16")
    pd.testing.assert_frame_equal(from_commit, predictions(0.5, 0))
    assert list(ablation.predictions_from_git("workspace", "vgg16").columns) == [
        "changed on disk afterwards"]
    with pytest.raises(FileNotFoundError, match="not in commit"):
        ablation.predictions_from_git(rev, "resnet50")


def test_grid_has_both_levels_and_the_same_filtering(capsys):
    show = fake_exp_show()
    # Two lr x batch cells of the same sr/psnr input on the demo data.
    show[1]["experiments"].append(exp_range(
        state("g1", "lr-5e-4", "2026-03-07T10:00:00", DEMO, "sr", 0.88, generator="psnr",
              lr=0.0005, batch=32), "success"))
    collected = collect_experiments(show)
    frame, duplicates = grid_table(collected.finished)
    assert duplicates == 2
    for level in ("crop", "group"):
        for key in ("auc", "balanced_accuracy"):
            assert frame[f"{level}_{key}"].notna().all()
    assert "raw" not in set(frame["input"])
    sr = frame[(frame["input"] == "sr") & (frame["generator"] == "psnr") &
               (frame["raw_dir"] == "data/demo_raw")]
    assert sorted(zip(sr["lr"], sr["batch_size"])) == [(0.0001, 16), (0.0005, 32)]
    print_grid(frame)
    out = capsys.readouterr().err
    assert "crop 0.910 / 0.860" in out and "group 0.910 / 0.860" in out
    assert "0.910 ± 0.020 (3 seeds)" in out
    assert "0.0001" in out and "0.0005" in out
    assert experiments.format_lr(0.00005) == "0.00005"


# ------------------------------------------------------------------ report
def hand_made_reports(root, backbones) -> None:
    def write(relative, text):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    write("ingest/metrics.json", json.dumps({"crops": 36, "groups": 12, "positive_class": "ALS",
                                             "skipped_files": 0}))
    write("split/metrics.json", json.dumps({"train_crops_ALS": 10, "test_crops_ALS": 4,
                                            "groups_in_two_splits": 0}))
    write("sr/metrics.json", json.dumps({"psnr_bicubic": 30.0, "ssim_bicubic": 0.8,
                                         "psnr_phase1": 31.0, "ssim_phase1": 0.82,
                                         "psnr_gan": 30.5, "ssim_gan": 0.81,
                                         "generator": "psnr", "psnr": 31.0, "ssim": 0.82,
                                         "iterations": 80, "train_seconds": 12.0,
                                         "perceptual_loss": "off"}))
    from pipeline.reporting import compare
    from tests.test_metrics_stats import write_eval

    for index, backbone in enumerate(backbones):
        write(f"train/{backbone}/curves.csv",
              "epoch,train_loss,val_loss,val_auc\n1,0.7,0.69,0.6\n2,0.6,0.65,0.7\n")
        write_eval(root / "eval", backbone, predictions(0.6, index))
    frame = compare.comparison_table(root / "eval", backbones, {})
    write("compare/table.csv", frame.to_csv(index=False))
    write("compare/paired.csv", compare.paired_comparisons(root / "eval", backbones, 99,
                                                           0).to_csv(index=False))
    write("crossval/summary.csv", "backbone,folds,group_auc_mean\nvgg16,3,0.8\n")
    collected = collect_experiments(fake_exp_show())
    table, paired, _ = ablation.run_ablation(collected.finished, read_predictions, 99, 0)
    write("ablation/table.csv", table.to_csv(index=False))
    write("ablation/paired.csv", paired.to_csv(index=False))


def test_report_renders_every_section_with_the_ablation(tmp_path, monkeypatch):
    backbones = ["vgg16", "resnet50"]
    hand_made_reports(tmp_path / "reports", backbones)
    # The DVC stage's page reads only its declared deps: no ablation there.
    split = tmp_path / "split.csv"
    stage_page = html.build_report(tmp_path / "reports", split, backbones, with_experiments=False)
    assert "Does SR help?" not in stage_page
    monkeypatch.setattr(html, "experiments_section", lambda: "<h2>Experiments</h2>")
    page = html.build_report(tmp_path / "reports", split, backbones, with_experiments=True)
    for heading in ("<h2>Data</h2>", "<h2>Super-resolution", "<h2>Training curves",
                    "<h2>Backbones on the held-out", "<h3>Paired comparisons",
                    "<h2>Confusion matrices", "<h2>Grad-CAM", "<h2>Cross-validation",
                    "<h2>Does SR help? (ablation)</h2>"):
        assert heading in page, heading
    assert "last convolutional block of each backbone" in page
    # human headers, one "AUC [95% CI]" cell per figure, the cut beside its figure
    assert "<th>Group AUC [95% CI]</th>" in page and " at 0.50</td>" in page
    assert "<th>crop_auc_ci_low</th>" not in page  # no raw key names as headers
    assert "rule <code>youden</code>" in page
    assert "A <b>group</b> is one patient sample" in page
    assert "vgg16: <code>features.29" in page and "resnet50: <code>layer4" in page
    assert page.count("<h3>Data: ") == 2  # one ablation table per dataset
    assert "sr (gan) vs hr" in page and "different test splits" in page
    assert "Holm" in page and "<th>Group AUC difference</th>" in page
    assert "<h3>Costs" in page and "<th>Precision</th>" in page
    assert "Caveat <i>collapsed</i>: a model is collapsed when" in page  # defined by the table
    assert "What SR does for the classifier: the ablation below" in page
    section = page.split("Does SR help?")[1].split("<h2>")[0]
    assert "NaN" not in section and "nan" not in section and "None" not in section


def test_every_backbone_names_layers_its_model_has():
    """models.backbones is the one list of where each backbone's parts sit: the factory,
    Grad-CAM and the report all read it, so each path must exist in the real model."""
    from torchvision.models import get_model

    from models.backbones import BACKBONES
    from models.classifier import build_classifier

    for backbone, parts in BACKBONES.items():
        bare = get_model(backbone, weights=None)
        for path in (parts.first_conv, parts.head, parts.cam_layer):
            bare.get_submodule(path)  # raises AttributeError for a wrong path
        model, _ = build_classifier(backbone, "none")
        assert model.get_submodule(f"backbone.{parts.first_conv}").in_channels == 1
        assert model.get_submodule(f"backbone.{parts.head}").out_features == 2


def test_report_with_experiments_writes_its_own_page(tmp_path, monkeypatch):
    backbones = ["mobilenet_v3_small"]
    reports = tmp_path / "reports"
    hand_made_reports(reports, backbones)
    params = write_params(tmp_path / "params.yaml")
    show = fake_exp_show()
    show[1]["experiments"].append(exp_range(
        state("g1", "lr-5e-4", "2026-03-07T10:00:00", DEMO, "sr", 0.88, generator="psnr",
              lr=0.0005, batch=32), "success"))
    monkeypatch.setattr(experiments, "experiments_from_dvc", lambda: collect_experiments(show))
    pipeline_page = reports / "report.html"
    monkeypatch.setattr(sys, "argv", ["experiments_page", "--reports", str(reports), "--out",
                                      str(tmp_path / "experiments.html"), "--params",
                                      str(params)])
    experiments_page.main()
    assert not pipeline_page.exists()  # the DVC-tracked page is left alone
    page = (tmp_path / "experiments.html").read_text()
    assert "lr x batch_size grid" in page and "1 failed, 1 queued" in page
    grid_part = page.split("lr x batch_size grid")[1]
    assert "<td>0.0001</td>" in grid_part and "<td>0.0005</td>" in grid_part
    assert "<td>0.000</td>" not in grid_part
    monkeypatch.setattr(sys, "argv", ["experiments_page", "--reports", str(reports), "--out",
                                      str(pipeline_page), "--params", str(params)])
    with pytest.raises(SystemExit):
        experiments_page.main()
    assert not pipeline_page.exists()
    monkeypatch.setattr(sys, "argv", ["report", "--reports", str(reports), "--split",
                                      str(tmp_path / "split.csv"), "--out", str(pipeline_page),
                                      "--params", str(params)])
    report_stage.main()
    assert "lr x batch_size grid" not in pipeline_page.read_text()
    # what ran heads both pages
    assert "<th>Profile</th><td>demo; params that differ from it: " in page
    assert "<th>Profile</th><td>demo; params that differ from it: " in pipeline_page.read_text()


def test_a_grid_cell_at_another_lr_does_not_replace_the_ablation_cell():
    """The grid and the ablation share a project: a newer sr run at lr 0.001 is its own
    cell, and sr is compared with bicubic only at the lr and batch size both used."""
    raw = fake_exp_show()
    raw[1]["experiments"].append(exp_range(
        state("g1", "grid-lr0.001", "2026-03-09T10:00:00", DEMO, "sr", 0.60,
              generator="psnr", lr=0.001), "success"))
    collected = collect_experiments(json.loads(json.dumps(raw)))
    table, _ = ablation.ablation_table(collected.finished)
    demo_sr = table[(table["raw_dir"] == "data/demo_raw") & (table["input"] == "sr")
                    & (table["generator"] == "psnr")].set_index("lr")
    assert demo_sr.loc[0.0001, "experiment"] == "workspace"
    assert demo_sr.loc[0.001, "experiment"] == "grid-lr0.001"
    READS[("g1", "resnet50")] = predictions(0.2, 8)
    paired = ablation.paired_table(table, read_predictions, 99, 0)
    at_grid_lr = paired[(paired["lr"] == 0.001) & (paired["dataset"]
                                                   == demo_sr["dataset"].iloc[0])]
    assert at_grid_lr.empty  # no bicubic or hr was trained at lr 0.001: nothing to pair
    default = paired[(paired["lr"] == 0.0001) & (paired["generator"] == "psnr")
                     & (paired["dataset"] == demo_sr["dataset"].iloc[0])]
    assert set(default["experiment_a"]) == {"workspace"}
    del READS[("g1", "resnet50")]


def test_report_sr_rows_are_each_generators_own_figures(tmp_path):
    """psnr/ssim are the exported generator's (here phase 1's): the GAN row shows the GAN
    generator's figures, and there is no GAN row without a GAN phase."""
    reports = tmp_path / "reports"
    hand_made_reports(reports, ["vgg16"])
    rows = {row.split("</td>")[0].split(">")[-1]: row
            for row in html.sr_section(reports).split("<tr>")[1:]}
    assert "<td>30.500</td>" in rows["SR GAN phase (EMA; generator gan)"]
    assert "<td>31.000</td>" in rows["SR phase 1 (L1; generator psnr)"]
    assert "<td>yes</td>" in rows["SR phase 1 (L1; generator psnr)"]
    assert "<td>yes</td>" not in rows["SR GAN phase (EMA; generator gan)"]
    metrics = json.loads((reports / "sr" / "metrics.json").read_text())
    (reports / "sr" / "metrics.json").write_text(json.dumps(
        metrics | {"psnr_gan": None, "ssim_gan": None}))
    assert "GAN phase" not in html.sr_section(reports)


def test_experiments_are_read_from_a_real_dvc_repo_with_their_params_and_metrics(tmp_path):
    """DVC's Python API, not a subprocess: a committed run and one `dvc exp run -S` come back
    with their own params and their metrics under the file they came from."""
    from pipeline.cli import PipelineError
    from tests.test_pipeline_e2e import DVC, sh  # git identity and no analytics, as e2e runs

    root = tmp_path / "project"
    root.mkdir()

    (root / "params.yaml").write_text("x: 1\n")
    score = ("import json, yaml; x = yaml.safe_load(open('params.yaml'))['x']; "
             "json.dump({'crop': {'auc': x / 10}}, open('m.json', 'w'))")
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"score": {
        "cmd": f'{sys.executable} -c "{score}"', "params": ["x"],
        "metrics": [{"m.json": {"cache": False}}]}}}))
    for command in (["git", "init", "-q"], [DVC, "init", "-q"], [DVC, "repro", "-q"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "x = 1"],
                    [DVC, "exp", "run", "-q", "-S", "x=3", "-n", "three"]):
        sh(command, root)

    found = {e.name: e for e in experiments.experiments_from_dvc(root=root).finished}
    assert found["three"].params["x"] == 3
    assert found["three"].metrics["m.json"] == {"crop": {"auc": 0.3}}
    committed = next(e for e in found.values() if e.name not in ("three", "workspace"))
    assert committed.params["x"] == 1 and committed.metrics["m.json"]["crop"]["auc"] == 0.1
    with pytest.raises(PipelineError, match="dvc exp show failed"):
        experiments.experiments_from_dvc(root=tmp_path / "no repository here")
