"""End to end: the real dvc.yaml in a temporary git repo, shrunk params, real DVC commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, SHARED_DATA, write_params

pytestmark = pytest.mark.slow

DVC = str(Path(sys.executable).with_name("dvc"))


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = os.environ | {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "Pipeline Test",
                        "GIT_AUTHOR_EMAIL": "test@example.invalid",
                        "GIT_COMMITTER_NAME": "Pipeline Test",
                        "GIT_COMMITTER_EMAIL": "test@example.invalid",
                        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, \
            f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def make_project(tmp_path: Path, profile: str = "tiny", **overrides) -> Path:
    """Copy the tracked files of this repo into a fresh git repo with one commit. The shrunk
    test params become a profile of their own (`tiny`, the default one there), so that
    `dvc exp run`, which composes params.yaml from pipeline/conf, keeps them; `profile`
    picks another default (`demo` for the project as shipped)."""
    project = tmp_path / "project"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        if (REPO / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, project / name)
    conf = project / "pipeline" / "conf"
    if profile == "tiny":
        tiny = yaml.safe_load(write_params(tmp_path / "tiny.yaml", **overrides).read_text())
        (conf / "profile" / "tiny.yaml").write_text(
            "# @package _global_\n" + yaml.safe_dump(tiny | {"profile": "tiny"}, sort_keys=False))
    config = conf / "config.yaml"
    config.write_text(config.read_text().replace("  - profile: demo", f"  - profile: {profile}"))
    compose_params(project)
    sh(["git", "init", "-q", "-b", "main"], project)
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-q", "-m", "test project"], project)
    return project


def compose_params(project: Path, *overrides: str) -> None:
    """params.yaml composed from the project's pipeline/conf, as `dvc exp run` does it."""
    from dvc.utils.hydra import compose_and_dump

    compose_and_dump(project / "params.yaml", str(project / "pipeline" / "conf"), None, "config",
                     "", list(overrides))


def stages_run(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_repro_experiment_and_metrics(tmp_path):
    project = make_project(tmp_path)
    first = sh([DVC, "repro"], project)
    assert "compare" in stages_run(first.stdout)
    table = (project / "reports" / "compare" / "table.csv").read_text()
    header = table.splitlines()[0].split(",")
    assert header[:5] == ["backbone", "input", "threshold_rule", "seeds", "precision"]
    assert "crop_auc" in header and "group_auc_ci_low" in header
    rows = {row.split(",")[0]: row.split(",") for row in table.splitlines()[1:]}
    # every backbone in fp32 on a CPU; the baseline (scikit-learn) in float64, one row of it
    assert rows.pop("baseline (simple features)")[4] == "fp64"
    assert rows and all(row[4] == "fp32" for row in rows.values())
    verdict = json.loads((project / "reports" / "compare" / "shortcut.json").read_text())
    assert {"shortcut_suspected", "rules_fired", "rule"} <= set(verdict)
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-q", "-m", "baseline results"], project)

    again = sh([DVC, "repro"], project)
    assert stages_run(again.stdout) == set()  # everything cached

    experiment = sh([DVC, "exp", "run", "-S", "lr=0.0005"], project)
    rerun = stages_run(experiment.stdout)
    # Only the classifier side reruns (crossval is a no-op with split.folds 0; the report
    # is rebuilt from the new figures); nothing upstream of the classifier does.
    assert rerun == {"check_params", "train_classifier@mobilenet_v3_small",
                     "evaluate@mobilenet_v3_small", "export@mobilenet_v3_small", "compare",
                     "crossval", "report"}, experiment.stdout
    assert (project / "reports" / "report.html").read_text().count("<img") >= 4

    shown = json.loads(sh([DVC, "metrics", "show", "--json"], project).stdout)
    workspace = (shown.get("") or shown["workspace"])["data"]  # "" is the workspace in dvc 3
    evaluation = workspace["reports/eval/mobilenet_v3_small/metrics.json"]["data"]
    for level in ("crop", "group"):
        figures = evaluation[level]
        assert 0.0 <= figures["auc"] <= 1.0
        # an interval with width, or none at all ("not estimable": DVC's metrics show then
        # leaves the null bounds out), never a point
        low, high = figures.get("auc_ci_low"), figures.get("auc_ci_high")
        assert (low is None and high is None) or low < high
    assert evaluation["infer_images_per_s"] > 0
    split = workspace["reports/split/metrics.json"]["data"]
    assert split["groups_in_two_splits"] == 0
    sr = workspace["reports/sr/metrics.json"]["data"]
    assert {"psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "psnr_phase1", "psnr_gan"} <= set(sr)
    assert sr["generator"] == "psnr" and sr["psnr"] >= sr["psnr_bicubic"]

    diff = json.loads(sh([DVC, "metrics", "diff", "--json"], project).stdout)
    changed = diff.get("reports/train/mobilenet_v3_small/metrics.json", {})
    assert changed, f"metrics diff shows no change in training metrics: {diff}"
    assert "reports/sr/metrics.json" not in diff  # SR untouched by a classifier param

    # the thresholds were chosen on validation and are what the bundle carries
    assert evaluation["threshold"]["rule"] == "youden"
    assert set(evaluation["at_0_5"]) == {"crop", "group"}
    export = workspace["reports/export/mobilenet_v3_small/metrics.json"]["data"]
    assert export["bundle_mb"] > 0 and export["threshold_group"] == \
        evaluation["threshold"]["group"]

    # new patients: the test split's sample folders, class folders removed, names hidden
    new, hidden = anonymised_test_samples(project, tmp_path / "new_patients")
    # `dvc exp run` composes params.yaml anew from pipeline/conf: the experiment's own
    # -S lr=0.0005 is given again, or the classifiers would retrain at the default lr.
    added = sh([DVC, "exp", "run", "-S", "lr=0.0005", "-S", f"predict.input_dir=[{new}]"],
               project)
    # report reads every param (its header lists those off the profile): it reruns too
    assert stages_run(added.stdout) == {"check_params", f"predict@{new}", "report"}, \
        added.stdout
    groups = (project / "reports" / "predict" / "groups.csv").read_text().splitlines()
    assert groups[0] == "group,n_crops,prob,prediction,threshold,backbone"
    called = {line.split(",")[0]: line.split(",")[3] for line in groups[1:]}
    assert set(called) == set(hidden)  # every new group is there, under its new name
    accuracy = sum(called[name] == hidden[name] for name in hidden) / len(hidden)
    print(f"predict on {len(hidden)} anonymised test groups: group accuracy {accuracy:.3f}")

    # DVC refuses `-S sr.iter_psnr=100` (no such key) and suggests `+`; with `+` the key is
    # added, and check_params, which every stage comes after, fails the run at once
    typo = sh([DVC, "exp", "run", "-S", "+sr.iter_psnr=100"], project, check=False)
    said = typo.stdout + typo.stderr
    assert typo.returncode != 0 and "did you mean sr.iters_psnr?" in said, said
    assert stages_run(typo.stdout) <= {"check_params"}, typo.stdout


def anonymised_test_samples(project: Path, folder: Path) -> tuple[Path, dict[str, str]]:
    """Copy the test split's sample folders to `folder` with no class folders above them,
    each patient renamed P000, P001, ... (SD003_17_crops2_r -> P000_crops2_r); return the
    folder and each new name's hidden class."""
    import pandas as pd

    split = pd.read_csv(project / "data" / "split" / "split.csv")
    test = split[split["split"] == "test"].drop_duplicates("sample")
    names = {group: f"P{index:03d}" for index, group in enumerate(sorted(set(test["group"])))}
    hidden = {}
    for row in test.itertuples():
        name = names[row.group]
        shutil.copytree(project / "data" / "demo_raw" / row.class_name / row.sample,
                        folder / (name + row.sample[len(row.group):]))
        hidden[name] = row.class_name
    return folder, hidden


def test_a_second_clone_pulls_the_results_and_reruns_nothing(tmp_path):
    """The README's remote workflow: clone A reproduces and pushes to a remote (a plain
    folder here; an object store works the same way); a fresh clone B pulls, finds every
    stage up to date and reproduces nothing. Nothing machine-specific may sit in an output
    that a stage depends on, or B would see changed dependencies."""
    project = make_project(tmp_path)
    remote = tmp_path / "dvc-remote"
    sh([DVC, "repro"], project)
    sh([DVC, "remote", "add", "-d", "shared", str(remote)], project)
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-q", "-m", "results and remote"], project)
    sh([DVC, "push"], project)

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "data" / "ingested").exists()  # the data come from the remote only
    sh([DVC, "pull"], clone)
    status = json.loads(sh([DVC, "status", "--json"], clone).stdout)
    assert status == {}, status
    rerun = sh([DVC, "repro"], clone)
    assert stages_run(rerun.stdout) == set(), rerun.stdout
    assert (clone / "data" / "bundles" / "mobilenet_v3_small.pt").is_file()


def test_a_profile_switch_composes_params_shows_in_params_diff_and_keeps_crop_size(tmp_path):
    """`dvc exp run -S profile=cpu` on the project as shipped: params.yaml is composed from
    pipeline/conf with the cpu profile and the overrides on top, `dvc params diff` shows
    each value that changed, and 128 px crops are taken as they are. A profile line edited
    by hand is refused with the command that composes it."""
    from tests.conftest import blob, write_crop

    raw = tmp_path / "crops128"
    for class_name in ("ALS", "Control"):
        for group in range(3):
            for crop in range(2):
                write_crop(raw / class_name / f"{class_name[:2]}{group}_17_crops_r" /
                           f"{crop}.tif", blob(size=128, seed=group + crop))
    project = make_project(tmp_path, profile="demo")
    run = sh([DVC, "exp", "run", "ingest", "-S", "profile=cpu", "-S", f"data.raw_dir={raw}",
              "-S", "sr.iters_psnr=7"], project)
    assert stages_run(run.stdout) == {"check_params", "ingest"}, run.stdout
    said = run.stdout + run.stderr
    assert "profile cpu with 2 override(s)" in said and "sr.iters_psnr=7" in said
    ingest = json.loads((project / "reports" / "ingest" / "metrics.json").read_text())
    assert ingest["crops"] == 12 and ingest["resized"] == 0 and ingest["padded"] == 0
    diff = json.loads(sh([DVC, "params", "diff", "--json"], project).stdout)["params.yaml"]
    assert diff["profile"] == {"old": "demo", "new": "cpu"}
    assert (diff["data.crop_size"]["old"], diff["data.crop_size"]["new"]) == (32, 128)
    assert (diff["sr.iters_psnr"]["old"], diff["sr.iters_psnr"]["new"]) == (600, 7)  # on top
    assert diff["epochs"]["new"] == 5 and diff["classifier.image_size"]["new"] == 160

    sh(["git", "checkout", "params.yaml"], project)
    params = project / "params.yaml"
    params.write_text(params.read_text().replace("profile: demo", "profile: cpu"))
    edited = sh([DVC, "repro", "check_params"], project, check=False)
    said = edited.stdout + edited.stderr
    assert edited.returncode != 0 and "its values are profile demo's" in said, said
    assert "dvc exp run -S profile=cpu" in said


def test_missing_raw_dir_inside_a_queued_copy_explains_itself(tmp_path):
    """A relative raw folder outside the repo, run as queued runs are (a temporary copy
    under .dvc/tmp/exps): check_params names the reason before DVC's own dependency check,
    which would only say `No such file or directory`."""
    project = make_project(tmp_path)
    (tmp_path / "crops").mkdir()  # ../crops exists from the project, not from its copy
    result = sh([DVC, "exp", "run", "--temp", "-S", "data.raw_dir=../crops"], project,
                check=False)
    said = result.stdout + result.stderr
    assert result.returncode != 0, said
    assert stages_run(result.stdout) == {"check_params"}, said
    assert "DVC temporary copy" in said and "absolute path" in said and "dvc add" in said


@pytest.mark.skipif(not (SHARED_DATA / "nuclei").is_dir(),
                    reason="../shared/data/nuclei (real crops) is not present next to the repo")
def test_real_crops_ingest_and_split(tmp_path):
    from pipeline.config import load_params
    from pipeline.data.ingest import ingest_crops
    from pipeline.data.split import split_groups, split_metrics

    params = load_params(write_params(tmp_path / "params.yaml",
                                      data={"positive": "NIH3T3", "crop_size": 128}))
    result = ingest_crops(SHARED_DATA / "nuclei", tmp_path / "cache", params.data)
    assert result.metrics["crops"] == 1769 and result.metrics["groups"] == 63
    assert result.metrics["resized"] == result.metrics["padded"] == 0
    assert result.metrics["crops_U2OS"] == 775 and result.metrics["crops_NIH3T3"] == 994
    frame = split_groups(result.manifest, params.split, params.seed)
    metrics = split_metrics(frame)
    assert metrics["groups_in_two_splits"] == 0
    assert (frame.groupby("group")["split"].nunique() == 1).all()
    assert 0.2 < metrics["test_crop_fraction"] < 0.4


def test_readme_walkthrough_with_12_bit_tiffs(tmp_path):
    """The README's 'Your own data' commands, as written, on a folder of 12-bit camera
    TIFFs (16-bit files holding values up to 4095)."""
    import numpy as np

    from tests.conftest import write_crop

    raw = tmp_path / "camera crops"
    rng = np.random.default_rng(0)
    for class_name in ("ALS", "Control"):
        for group in range(6):
            for crop in range(2):
                image = rng.uniform(300, 1500, (64, 64))
                image[20:40, 20:40] = 4095 if class_name == "ALS" else 2500
                write_crop(raw / class_name / f"{class_name[:2]}{group:03d}_17_crops_r" /
                           f"{crop}.tif", image.astype(np.uint16))
    project = make_project(tmp_path)
    sh([DVC, "exp", "run", "-S", f"data.raw_dir={raw}", "-S", "data.positive=ALS",
        "-S", "data.crop_size=64"], project)
    ingest = json.loads((project / "reports" / "ingest" / "metrics.json").read_text())
    assert ingest["bit_depth"] == 12
    assert ingest["bit_depth_source"] == "largest value in the data (4095)"
    shown = sh([sys.executable, "-m", "pipeline.tools.results"], project)
    said = shown.stdout + shown.stderr
    assert "mobilenet_v3_small" in said and "camera crops" in said
