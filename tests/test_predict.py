"""Thresholds chosen on validation, the portable bundle, and the predict stage on new folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from models.classifier import build_classifier
from models.sr import build_generator
from pipeline.classify.bundle import BundleClassifier, BundleError, build_bundle, load_bundle
from pipeline.classify.images import load_classifier_images
from pipeline.classify.inference import predict_proba
from pipeline.cli import PipelineError
from pipeline.config import load_params
from pipeline.data.ingest import ingest_crops
from pipeline.sr.inference import super_resolve_crops
from pipeline.stats import choose_threshold, evaluation_report, youden_threshold
from tests.conftest import REPO, write_params

# ---------------------------------------------------------------- thresholds


def test_youden_threshold_equals_the_hand_computed_point():
    # negatives 0.1 0.3 0.6, positives 0.4 0.7 0.8 0.9. Cut between 0.7 and 0.6 calls
    # 3/4 positives and 3/3 negatives right: J = 0.75, the largest of all cuts (by hand:
    # 0.85 -> .25, 0.75 -> .5, 0.65 -> .75, 0.5 -> .417, 0.35 -> .667, 0.2 -> .333).
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    probs = np.array([0.1, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    assert youden_threshold(labels, probs) == pytest.approx(0.65)
    assert choose_threshold(0.3, labels, probs, np.arange(7), 100, 0) == \
        {"cut": 0.3, "low": 0.3, "high": 0.3}


def test_youden_ties_keep_the_cut_nearest_one_half_and_one_class_gives_one_half():
    # perfectly separated: every cut between 0.2 and 0.8 gives J = 1, 0.5 among them
    assert youden_threshold(np.array([0, 1]), np.array([0.2, 0.8])) == pytest.approx(0.5)
    # ... and where the gap lies above 0.5, its middle
    assert youden_threshold(np.array([0, 1]), np.array([0.7, 0.9])) == pytest.approx(0.8)
    # J = 0.5 on two gaps, (0.6, 0.8] (sens 1/2, spec 1) and (0.2, 0.3] (sens 1, spec 1/2):
    # (0.6, 0.8] lies 0.1 from 0.5, (0.2, 0.3] 0.2, so the middle of the first wins
    labels, probs = np.array([0, 0, 1, 1]), np.array([0.2, 0.6, 0.3, 0.8])
    assert youden_threshold(labels, probs) == pytest.approx(0.7)
    assert youden_threshold(np.array([1, 1]), np.array([0.2, 0.9])) == 0.5


def test_youden_stays_at_one_half_without_evidence_and_refuses_nan():
    labels = np.array([0, 1, 0, 1])
    assert youden_threshold(labels, np.full(4, 0.7)) == 0.5  # a collapsed model
    assert youden_threshold(labels, np.array([0.9, 0.1, 0.8, 0.2])) == 0.5  # ranked backwards
    with pytest.raises(ValueError, match="not finite"):
        youden_threshold(labels, np.array([0.1, np.nan, 0.3, 0.9]))


def test_report_takes_the_chosen_threshold_and_keeps_the_figures_at_one_half():
    # every probability above 0.5: at 0.5 all are called positive (balanced accuracy 0.5);
    # at 0.8 the classes separate
    predictions = pd.DataFrame({
        "group": ["a", "a", "b", "b", "c", "c", "d", "d"],
        "label": [0, 0, 0, 0, 1, 1, 1, 1],
        "prob": [0.6, 0.7, 0.65, 0.75, 0.85, 0.9, 0.95, 0.88]})
    report = evaluation_report(predictions.assign(crop_id=range(8)),
                               {"crop": 0.8, "group": 0.8})
    assert report["crop"]["balanced_accuracy"] == 1.0
    assert report["group"]["sensitivity"] == 1.0 and report["group"]["specificity"] == 1.0
    assert report["at_0_5"]["crop"]["balanced_accuracy"] == 0.5
    assert report["at_0_5"]["group"]["specificity"] == 0.0


# ---------------------------------------------------------------- bundle and predict


def _raw_folder(root: Path, samples_per_class: int = 2) -> Path:
    """A raw layout of 32 px 16-bit crops: ALS crops carry a bright spot off the centre."""
    from tests.conftest import write_crop

    rng = np.random.default_rng(3)
    for class_name in ("ALS", "Control"):
        for index in range(samples_per_class):
            prefix = "SD" if class_name == "ALS" else "CT"
            for crop in range(3):
                image = rng.normal(8000, 800, (32, 32))
                if class_name == "ALS":
                    image[4:10, 4:10] += 30000
                write_crop(root / class_name / f"{prefix}{index:03d}_17_crops_r" / f"{crop}.tif",
                           np.clip(image, 0, 65535).astype(np.uint16))
    return root


class TrainedRun:
    """What the stages up to evaluate would leave: ingested crops, SR images, a classifier,
    and the probabilities evaluate's code computes for every crop."""

    def __init__(self, root: Path, classifier_input: str = "sr", acquire: int = 0,
                 backbone: str = "mobilenet_v3_small"):
        torch.manual_seed(0)
        self.root, self.backbone = root, backbone
        root.mkdir(parents=True, exist_ok=True)
        self.params_path = write_params(
            root / "params.yaml",
            data={"crop_size": 32, "acquire_downsample": acquire},
            sr={"scale": 2 if acquire == 2 else 4, "hr_patch": 16 if acquire == 2 else 32},
            classifier={"input": classifier_input, "image_size": "auto"})
        self.params = load_params(self.params_path)
        self.raw = _raw_folder(root / "raw")
        self.ingested = root / "ingested" / "crops"
        result = ingest_crops(self.raw, self.ingested, self.params.data)
        self.manifest, self.bit_depth = result.manifest, result.metrics["bit_depth"]
        sr = self.params.sr
        generator = build_generator(sr.scale, sr.num_feat, sr.num_block, sr.num_grow_ch,
                                    sr.residual)
        with torch.no_grad():  # not the zero-init bicubic: the SR path must matter
            generator.body.conv_last.weight.normal_(0, 0.01)
        self.generator = {"model": generator.state_dict(), "name": "psnr",
                          "config": {"scale": sr.scale, "num_feat": sr.num_feat,
                                     "num_block": sr.num_block, "num_grow_ch": sr.num_grow_ch,
                                     "residual": sr.residual}}
        self.sr_dir = root / "sr_images"
        super_resolve_crops(generator, self.manifest["crop_id"].tolist(), self.ingested,
                            self.sr_dir, sr.scale, sr.tile, sr.tile_overlap, sr.infer_batch,
                            torch.device("cpu"), sr.precision)
        model, _ = build_classifier(backbone, "none")
        self.model = model.eval()
        images = load_classifier_images(self.params, classifier_input, self.ingested,
                                        self.sr_dir, self.manifest["crop_id"].tolist())
        cp = self.params.classifier
        self.evaluate_probs = dict(zip(
            self.manifest["path"].str.split("/", n=1).str[1],
            predict_proba(self.model, images, torch.device("cpu"), cp.eval_batch_size,
                          cp.precision, cp.channels_last)))

    def bundle(self, thresholds=None) -> dict:
        raw = yaml.safe_load(self.params_path.read_text())
        return build_bundle(self.backbone, self.model.state_dict(), self.params, raw,
                            thresholds or {"rule": "youden", "crop": 0.4, "group": 0.45},
                            ("Control", "ALS"), "f" * 64, self.generator, self.bit_depth)

    def anonymous_input(self, folder: Path) -> tuple[Path, dict[str, str]]:
        """The raw crops with class folders removed and samples renamed P000, P001, ...;
        returns the folder and the hidden label of each new sample name."""
        hidden = {}
        for index, sample_dir in enumerate(sorted(self.raw.glob("*/*_crops_r"))):
            name = f"P{index:03d}"
            shutil.copytree(sample_dir, folder / f"{name}_crops_r")
            hidden[name] = sample_dir.parent.name
        return folder, hidden


def run_predict(args: list, cwd: Path) -> subprocess.CompletedProcess:
    """pipeline.stages.predict in a fresh process, run from a folder with no repository files;
    its console (stderr) and stdout together in .stdout."""
    env = os.environ | {"PYTHONPATH": str(REPO), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "pipeline.stages.predict", *map(str, args)],
                          cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=600)


@pytest.mark.parametrize("classifier_input,acquire", [("sr", 0), ("bicubic", 2)])
def test_bundle_in_a_fresh_process_gives_evaluates_probabilities(tmp_path, classifier_input,
                                                                 acquire):
    run = TrainedRun(tmp_path / "run", classifier_input, acquire)
    alone = tmp_path / "alone"
    alone.mkdir()
    torch.save(run.bundle(), alone / "model.bundle.pt")
    new, hidden = run.anonymous_input(alone / "new patients")
    result = run_predict(["--bundle", "model.bundle.pt", "--input", "new patients",
                          "--out", "out"], alone)
    assert result.returncode == 0, result.stdout
    assert "crops/s" in result.stdout
    crops = pd.read_csv(alone / "out" / "crops.csv")
    assert list(crops.columns) == ["path", "group", "prob", "prediction"]
    # the same crop, renamed, must get the probability evaluate's code gave it
    originals = {f"P{i:03d}_crops_r": sample_dir.name for i, sample_dir in
                 enumerate(sorted(run.raw.glob("*/*_crops_r")))}
    for row in crops.itertuples():
        folder, crop = row.path.split("/")
        assert row.prob == pytest.approx(run.evaluate_probs[f"{originals[folder]}/{crop}"],
                                         abs=1e-5)
    groups = pd.read_csv(alone / "out" / "groups.csv")
    assert list(groups.columns) == ["group", "n_crops", "prob", "prediction", "threshold",
                                    "backbone"]
    assert sorted(groups["group"]) == sorted(hidden)  # P000 ... from P000_crops_r
    assert (groups["n_crops"] == 3).all() and (groups["threshold"] == 0.45).all()
    expected = np.where(groups["prob"] >= 0.45, "ALS", "Control")
    assert list(groups["prediction"]) == list(expected)


def test_several_bundles_give_a_column_set_each_and_their_mean(tmp_path):
    run = TrainedRun(tmp_path / "run", "raw")
    torch.save(run.bundle({"rule": "youden", "crop": 0.3, "group": 0.4}), tmp_path / "a.pt")
    other = run.bundle({"rule": "youden", "crop": 0.5, "group": 0.6})
    second, _ = build_classifier("regnet_y_400mf", "none")
    other["backbone"], other["classifier_state"] = "regnet_y_400mf", second.state_dict()
    torch.save(other, tmp_path / "b.pt")
    new, hidden = run.anonymous_input(tmp_path / "new")
    result = run_predict(["--bundle", "a.pt", "--bundle", "b.pt", "--input", new, "--out",
                          "out"], tmp_path)
    assert result.returncode == 0, result.stdout
    samples = pd.read_csv(tmp_path / "out" / "groups.csv")
    for name in ("mobilenet_v3_small", "regnet_y_400mf", "mean"):
        assert {f"prob_{name}", f"prediction_{name}", f"threshold_{name}"} <= set(samples)
    assert samples["prob_mean"].to_numpy() == pytest.approx(
        samples[["prob_mobilenet_v3_small", "prob_regnet_y_400mf"]].mean(axis=1).to_numpy())
    assert np.allclose(samples["threshold_mean"], 0.5)  # (0.4 + 0.6) / 2
    assert set(samples["group"]) == set(hidden)
    crops = pd.read_csv(tmp_path / "out" / "crops.csv")
    assert {"prob_mean", "prediction_mean"} <= set(crops) and len(crops) == 3 * len(hidden)


class Payload:
    """Runs a shell command when unpickled - what a malicious 'bundle' would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_bundles(run: TrainedRun, folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (bundle file, the words its one-line error must hold)."""
    good = folder / "good.pt"
    torch.save(run.bundle(), good)
    bad = {}
    # What another torchvision's architecture looks like: weights that do not fit this one.
    other_architecture = run.bundle()
    state = other_architecture["classifier_state"]
    state["backbone.extra.weight"] = state.pop(next(k for k in state if k.endswith(".weight")))
    torch.save(other_architecture, folder / "torchvision.pt")
    bad["another torchvision"] = (folder / "torchvision.pt",
                                  "weights do not fit this torchvision's mobilenet_v3_small")
    data = good.read_bytes()
    (folder / "truncated.pt").write_bytes(data[:len(data) // 2])
    bad["truncated"] = (folder / "truncated.pt", "truncated or damaged")
    torch.save({"format": "tdp43-classifier-bundle", "x": Payload(folder / "pwned")},
               folder / "pickle.pt")
    bad["pickle payload"] = (folder / "pickle.pt", "weights_only=True does not allow")
    wrong_scale = run.bundle()
    wrong_scale["sr"]["config"]["scale"] = 2
    torch.save(wrong_scale, folder / "scale.pt")
    bad["SR scale"] = (folder / "scale.pt",
                       "SR generator is x2 but its classifier was trained on x4")
    return bad


def test_each_bad_bundle_gives_its_line_and_writes_nothing(tmp_path):
    run = TrainedRun(tmp_path / "run", "sr")
    new, _ = run.anonymous_input(tmp_path / "new")
    for name, (path, words) in _bad_bundles(run, tmp_path).items():
        with pytest.raises(BundleError, match=words.replace("(", r"\(")):
            load_bundle(path)
        result = run_predict(["--bundle", path, "--input", new, "--out", "out"], tmp_path)
        lines = [line for line in result.stdout.splitlines() if "error:" in line]
        assert result.returncode == 1 and len(lines) == 1 and words in result.stdout, \
            (name, result.stdout)
        assert "Traceback" not in result.stdout, name
        assert not (tmp_path / "out").exists(), name
    assert not (tmp_path / "pwned").exists()  # the payload never ran
    fp16_sr = run.bundle()
    fp16_sr["sr"]["precision"] = "fp16"
    with pytest.raises(BundleError, match="SR generator runs in fp16, which needs CUDA"):
        BundleClassifier(fp16_sr, torch.device("cpu"), tmp_path / "fp16.pt")


def test_bad_crops_get_ingests_lines_or_are_skipped_and_listed(tmp_path):
    run = TrainedRun(tmp_path / "run", "raw")
    torch.save(run.bundle(), tmp_path / "b.pt")
    new, hidden = run.anonymous_input(tmp_path / "new")
    corrupt = new / "P000_crops_r" / "broken.tif"
    corrupt.write_bytes(b"II*\x00 not really a tiff")
    (new / "P001_crops_r" / "notes.txt").write_text("microscope settings")
    failed = run_predict(["--bundle", "b.pt", "--input", new, "--out", "out"], tmp_path)
    assert failed.returncode == 1 and "broken.tif: cannot decode image" in failed.stdout
    assert "pass --on-bad-file skip" in failed.stdout
    assert not (tmp_path / "out").exists()

    skipped = run_predict(["--bundle", "b.pt", "--input", new, "--out", "out",
                           "--on-bad-file", "skip"], tmp_path)
    assert skipped.returncode == 0, skipped.stdout
    assert "1 bad files skipped" in skipped.stdout and "1 .txt" in skipped.stdout
    listed = pd.read_csv(tmp_path / "out" / "bad_files.csv")
    assert listed["path"].str.endswith("broken.tif").all() and len(listed) == 1
    assert len(pd.read_csv(tmp_path / "out" / "crops.csv")) == 3 * len(hidden)

    again = run_predict(["--bundle", "b.pt", "--input", new, "--out", "out",
                         "--on-bad-file", "skip"], tmp_path)
    assert again.returncode == 1 and "exists; pass --overwrite" in again.stdout
    into_input = run_predict(["--bundle", "b.pt", "--input", new, "--out", new,
                              "--overwrite"], tmp_path)
    assert into_input.returncode == 1 and "holds the input" in into_input.stdout
    assert (new / "P001_crops_r" / "notes.txt").exists()  # nothing deleted


def test_overwrite_replaces_only_predicts_own_outputs(tmp_path):
    from pipeline.classify.predict import check_output_folder

    new = tmp_path / "new"
    (new / "P000_crops_r").mkdir(parents=True)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    (bundles / "resnet50.pt").write_bytes(b"")
    inputs = [new, bundles / "resnet50.pt"]
    for out in (new, tmp_path, bundles):  # the input, a folder above it, the bundles'
        with pytest.raises(PipelineError, match="holds the input"):
            check_output_folder(out, True, inputs)
    results = tmp_path / "results"
    results.mkdir()
    (results / "groups.csv").write_text("group\n")
    (results / "analysis.ipynb").write_text("{}")
    with pytest.raises(PipelineError, match="did not write \\(e.g. analysis.ipynb\\)"):
        check_output_folder(results, True, inputs)
    (results / "analysis.ipynb").unlink()
    check_output_folder(results, True, inputs)  # predict's own outputs: may be replaced
    with pytest.raises(PipelineError, match="pass --overwrite"):
        check_output_folder(results, False, inputs)
    check_output_folder(tmp_path / "fresh", False, inputs)


def test_class_folders_are_read_and_their_names_ignored(tmp_path):
    run = TrainedRun(tmp_path / "run", "raw")
    torch.save(run.bundle(), tmp_path / "b.pt")
    flat = run_predict(["--bundle", "b.pt", "--input", run.raw, "--out", "with_classes"],
                       tmp_path)
    assert flat.returncode == 0, flat.stdout
    samples = pd.read_csv(tmp_path / "with_classes" / "groups.csv")
    assert set(samples["group"]) == set(run.manifest["group"])
    assert "label" not in samples


def test_a_collapsed_model_and_a_one_group_class_are_flagged():
    from pipeline.classify.scoring import reliability

    # the finding: 3 groups per class, 1/1/1 split, every test crop at p = 0.5419
    collapsed = pd.DataFrame({"group": ["a", "a", "b"], "label": [1, 1, 0],
                              "prob": [0.54190, 0.54191, 0.54190]})
    flags = reliability(collapsed)
    assert flags["collapsed"] and not flags["group_level_estimable"]
    spread = pd.DataFrame({"group": ["a", "b", "c", "d"], "label": [1, 1, 0, 0],
                           "prob": [0.9, 0.7, 0.2, 0.4]})
    flags = reliability(spread)
    assert not flags["collapsed"] and flags["group_level_estimable"]
    assert flags["prob_spread"] == pytest.approx(0.7)


@pytest.mark.parametrize(("low", "high", "collapsed"), [
    (0.857, 0.876, True),   # the demo's resnet50: spread 0.019, every crop ALS at 0.5
    (0.80, 0.95, True),     # spread 0.15, but all above 0.5 by more than it moves
    (0.49, 0.52, True),     # across 0.5, yet spanning under 0.05
    (0.55, 0.70, False),    # all above 0.5, but moving more than it sits off 0.5
    (0.40, 0.60, False),    # an uncertain model around 0.5 is no collapse
    (0.05, 0.95, False),    # a real model
])
def test_collapse_is_judged_against_where_the_probabilities_sit(low, high, collapsed):
    """scoring.COLLAPSE_RULE: a spread under 0.05, or all on one side of 0.5 and spanning
    less than the gap to 0.5; an absolute 1e-3 floor let spread 0.019 at balanced accuracy
    0.5 through as a finding."""
    from pipeline.classify.scoring import reliability

    probs = np.linspace(low, high, 8)
    frame = pd.DataFrame({"group": [f"g{i // 2}" for i in range(8)], "label": [0, 1] * 4,
                          "prob": probs})
    flags = reliability(frame)
    assert flags["collapsed"] is collapsed
    assert flags["prob_spread"] == pytest.approx(high - low)
