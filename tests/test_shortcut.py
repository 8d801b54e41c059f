"""The shortcut baseline and verdict: brightness alone separating the classes is caught, a
difference in localisation alone is not mistaken for one.

The data are written here: a bright Gaussian cell on a noisy background, 32 px. In the
brightness case the positive class is brighter; in the localisation case both classes have
the same cell, the positive one moved off centre (the five features do not change under a
shift, a network's receptive field does). The "backbone" compared against the baseline is
a real, if simple, classifier: the distance of the intensity centroid from the crop's
centre, which sees localisation and nothing else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.baseline.evaluation import run_baseline
from pipeline.classify.scoring import reliability, seed_spread
from pipeline.config import load_params
from pipeline.data.images import from_uint16
from pipeline.data.ingest import ingest_crops
from pipeline.data.split import class_names_from, split_groups
from pipeline.io import load_array, write_csv_atomic, write_json_atomic
from pipeline.reporting.compare import comparison_table, paired_comparisons
from pipeline.reporting.labels import BASELINE, BASELINE_LABEL
from pipeline.reporting.shortcut import shortcut_verdict, verdict_text
from pipeline.stats import evaluation_report
from tests.conftest import write_crop, write_params

SIZE, GROUPS, CROPS = 32, 24, 3


def cell(rng: np.random.Generator, bright: float, offset: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    cy, cx = SIZE / 2 + offset[0], SIZE / 2 + offset[1]
    image = bright * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0 ** 2))
    return np.clip(image + rng.normal(20, 4, image.shape), 0, 255).astype(np.uint8)


def write_raw(root, case: str):
    """GROUPS samples per class, CROPS crops each; classes differ by `case` alone."""
    rng = np.random.default_rng(0)
    for class_index, class_name in enumerate(("Control", "ALS")):
        for group in range(GROUPS):
            session = rng.uniform(0.9, 1.1)  # each sample imaged a little differently
            for crop in range(CROPS):
                if case == "brightness":
                    bright, offset = (110 if class_index else 70) * session, (0, 0)
                else:  # localisation: same cell, ALS moved 7 px off centre
                    angle = rng.uniform(0, 2 * np.pi)
                    bright = 90 * session
                    offset = ((round(7 * np.sin(angle)), round(7 * np.cos(angle)))
                              if class_index else (0, 0))
                write_crop(root / class_name / f"{class_name}{group:02d}_1_crops_r" / f"{crop}.tif",
                           cell(rng, bright, offset))
    return root


def centroid_scores(rows: pd.DataFrame, crops_dir) -> pd.DataFrame:
    """A localisation-only classifier: distance of the intensity centroid from the centre,
    squashed to (0, 1)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    scores = []
    for crop_id in rows["crop_id"]:
        image = from_uint16(load_array(crops_dir / f"{crop_id}.npy"))[0]
        weights = np.clip(image - np.median(image), 0, None)
        cy, cx = (weights * yy).sum() / weights.sum(), (weights * xx).sum() / weights.sum()
        scores.append(np.hypot(cy - SIZE / 2, cx - SIZE / 2))
    return rows[["crop_id", "group", "label"]].reset_index(drop=True).assign(
        prob=1 - np.exp(-np.asarray(scores) / 3))


def write_evaluation(folder, predictions: pd.DataFrame, name: str) -> None:
    """What evaluate writes for a classifier, from its test predictions."""
    thresholds = {"rule": "0.5", "crop": 0.5, "group": 0.5, "crop_range": [0.5, 0.5],
                  "group_range": [0.5, 0.5]}
    predictions = predictions.assign(predicted=(predictions["prob"] >= 0.5).astype(int))
    report = evaluation_report(predictions, thresholds)
    metrics = {"backbone": name, "input": "raw", "threshold": thresholds, **report,
               "seeds": seed_spread({0: report}), "train_seconds": 1.0,
               "peak_memory_mb": 1.0, "params_millions": 1.0, "infer_ms_per_image": 1.0,
               "infer_images_per_s": 1.0, "precision": "fp64", **reliability(predictions)}
    write_csv_atomic(folder / name / "predictions.csv", predictions)
    write_json_atomic(folder / name / "metrics.json", metrics)


def compare_case(case: str, root):
    """(case, baseline run, verdict) of a whole comparison on that case's data."""
    params = load_params(write_params(root / "params.yaml", data={"crop_size": SIZE}))
    raw = write_raw(root / "raw", case)
    manifest = ingest_crops(raw, root / "ingested" / "crops", params.data).manifest
    split = split_groups(manifest, params.split, params.seed)
    run = run_baseline(split, root / "ingested" / "crops", params, class_names_from(split))
    eval_dir = root / "eval"
    write_evaluation(eval_dir, run.predictions.drop(columns="predicted"), BASELINE)
    test = split[split["split"] == "test"]
    write_evaluation(eval_dir, centroid_scores(test, root / "ingested" / "crops"),
                     "centroid")
    names = ["centroid", BASELINE]
    table = comparison_table(eval_dir, names, {})
    paired = paired_comparisons(eval_dir, names, 999, 0)
    return case, run, shortcut_verdict(table, paired, run.metrics["features"])


@pytest.fixture(scope="module")
def brightness(tmp_path_factory):
    return compare_case("brightness", tmp_path_factory.mktemp("brightness"))


@pytest.fixture(scope="module")
def localisation(tmp_path_factory):
    return compare_case("localisation", tmp_path_factory.mktemp("localisation"))


def test_brightness_alone_is_caught_and_named(brightness):
    _, run, verdict = brightness
    assert run.metrics["crop"]["auc"] >= 0.9
    assert verdict["shortcut_suspected"] and verdict["checked"]
    assert "interval" in verdict["rules_fired"]
    strongest = verdict["strongest_features"].split(" (")[0]
    assert strongest in ("mean_intensity", "high_percentile_intensity", "integrated_intensity")
    text = verdict_text(verdict)
    assert "shortcut" in text.lower() and strongest in text


def test_localisation_alone_is_not_a_shortcut(localisation):
    _, run, verdict = localisation
    assert 0.25 <= run.metrics["crop"]["auc"] <= 0.75  # features blind to a shift
    assert verdict["best_group_auc"] >= 0.95  # the localisation classifier sees it
    assert verdict["checked"] and not verdict["shortcut_suspected"], verdict
    assert verdict["paired_group_p_holm"] < 0.05
    assert "No shortcut found" in verdict_text(verdict)


@pytest.mark.parametrize("case", ["brightness", "localisation"])
def test_baseline_row_is_named_and_scored_like_a_backbone(case, request):
    _, run, _ = request.getfixturevalue(case)
    metrics = run.metrics
    assert metrics["backbone"] == BASELINE and metrics["test_groups"] == run.groups.shape[0]
    for level in ("crop", "group"):
        assert {"auc", "auc_ci_low", "auc_ci_high", "balanced_accuracy"} <= set(metrics[level])
    # the cut was chosen on validation, by the backbones' rule
    assert metrics["threshold"]["rule"] == "youden"
    assert str(metrics["chosen_c"]) in metrics["validation_auc_by_c"]


def test_verdict_table_names_the_baseline_by_its_label(tmp_path):
    rng = np.random.default_rng(1)
    rows = pd.DataFrame({"crop_id": [f"c{i}" for i in range(40)],
                         "group": [f"g{i // 2}" for i in range(40)],
                         "label": [int(i >= 20) for i in range(40)]})
    write_evaluation(tmp_path, rows.assign(prob=rng.uniform(size=40)), BASELINE)
    write_evaluation(tmp_path, rows.assign(prob=rows["label"] * 0.8 + 0.1), "resnet50")
    table = comparison_table(tmp_path, ["resnet50", BASELINE], {})
    assert list(table["backbone"]) == ["resnet50", BASELINE_LABEL]
    paired = paired_comparisons(tmp_path, ["resnet50", BASELINE], 199, 0)
    assert {paired.iloc[0]["backbone_a"], paired.iloc[0]["backbone_b"]} == {
        "resnet50", BASELINE_LABEL}
