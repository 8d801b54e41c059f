"""Statistics that admit what they cannot estimate: DeLong, bootstraps over samples, compare."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.cli import PipelineError
from pipeline.reporting import compare
from pipeline.stats import (
    binary_metrics,
    bootstrap_auc_interval,
    bootstrap_metric_interval,
    decide,
    delong_test,
    evaluation_report,
    paired_bootstrap_auc_difference,
    paired_sample_comparison,
    stratified_sample_draws,
    youden_threshold,
)


def crops_of(samples: dict[str, tuple[int, list[float]]]) -> pd.DataFrame:
    """{group: (label, [crop probabilities])} as predictions.csv rows."""
    rows = [{"crop_id": f"{group}_{i}", "group": group, "label": label, "prob": prob,
             "predicted": int(prob >= 0.5)}
            for group, (label, probs) in samples.items() for i, prob in enumerate(probs)]
    return pd.DataFrame(rows)


def random_predictions(seed: int, groups: int = 24, positives: int = 14) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    samples = {}
    for g in range(groups):
        label = int(g < positives)
        centre = rng.normal(0.4 + 0.2 * label, 0.15)
        samples[f"G{g:02d}"] = (label, list(np.clip(centre + rng.normal(0, 0.15,
                                                                         rng.integers(2, 7)),
                                                    0, 1)))
    return crops_of(samples)


# ------------------------------------------------------------------ DeLong
def test_delong_with_zero_variance_is_not_estimable():
    labels = np.array([0, 0, 0, 1, 1, 1])
    perfect = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    result = delong_test(labels, perfect, perfect * 0.5)  # both perfect
    assert result["auc_a"] == result["auc_b"] == 1.0
    assert result["z"] is None and result["p_value"] is None  # not p = 1
    constant = delong_test(labels, np.zeros(6), np.ones(6))  # both constant: AUC 0.5
    assert constant["p_value"] is None and constant["difference"] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_aucs_equal_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 50)
    labels[:2], labels[2:4] = 0, 1
    a = np.round(labels * 0.8 + rng.normal(0, 1, 50), 1)  # rounded: many ties
    b = np.round(rng.normal(0, 1, 50), 1)
    result = delong_test(labels, a, b)
    assert result["auc_a"] == pytest.approx(roc_auc_score(labels, a))
    assert result["auc_b"] == pytest.approx(roc_auc_score(labels, b))
    assert 0 < result["p_value"] <= 1 and result["se"] > 0


def test_delong_needs_two_of_each_class():
    with pytest.raises(ValueError, match="two cases of each class"):
        delong_test(np.array([1, 0, 0, 0]), np.arange(4.0), np.arange(4.0))


# ------------------------------------------------------------------ bootstrap over samples
def test_bootstrap_keeps_every_resample_with_one_positive_sample():
    """Plain resampling of 12 samples misses the only positive in about 35% of draws."""
    samples = {"P": (1, [0.9, 0.7])} | {f"N{i}": (0, [0.1 * (i % 8), 0.5]) for i in range(11)}
    predictions = crops_of(samples)
    for level in ("crop", "sample"):
        auc = bootstrap_auc_interval(predictions, level, 200, seed=0)
        balanced = bootstrap_metric_interval(predictions, level, "balanced_accuracy", 200, 0)
        assert auc.resamples == balanced.resamples == 200
        assert 0 <= auc.low <= auc.high <= 1
    draws, negatives = stratified_sample_draws(np.r_[1, np.zeros(11)], 200, seed=0)
    assert negatives == 11 and (draws[:, 11] == 0).all()  # the positive is in every draw
    labels = np.r_[1, 1, np.zeros(10)].astype(int)  # paired: two positives, same rule
    interval = paired_bootstrap_auc_difference(labels, np.linspace(1, 0, 12),
                                               np.linspace(0, 1, 12), 150, seed=3)
    assert interval.resamples == 150


def test_bootstrap_without_a_class_says_so():
    predictions = crops_of({"A": (1, [0.9]), "B": (1, [0.4, 0.6])})
    with pytest.raises(ValueError, match="both classes.*0 negative"):
        bootstrap_auc_interval(predictions, "sample", 100, seed=0)
    with pytest.raises(ValueError, match="both classes"):
        paired_bootstrap_auc_difference(np.ones(4), np.arange(4.0), np.arange(4.0), 100, 0)


def test_crop_level_interval_resamples_samples_not_crops():
    """Crops of a sample are copies of each other: the data hold 12 units, not 240.

    Resampling samples gives the crop-level interval of the sample-level one; resampling
    crops as if independent would give one far too narrow, and this test would fail.
    """
    rng = np.random.default_rng(4)
    samples = {f"G{g:02d}": (int(g % 2), [float(rng.normal(0.4 + 0.15 * (g % 2), 0.15))] * 20)
               for g in range(12)}
    predictions = crops_of(samples)
    crop = bootstrap_auc_interval(predictions, "crop", 400, seed=5)
    sample = bootstrap_auc_interval(predictions, "sample", 400, seed=5)
    # Equal crop counts and identical crops: every resample's crop AUC is its sample AUC.
    assert (crop.low, crop.high) == pytest.approx((sample.low, sample.high))
    naive_rng = np.random.default_rng(5)
    naive = []
    for _ in range(400):
        rows = predictions.iloc[naive_rng.integers(0, len(predictions), len(predictions))]
        naive.append(roc_auc_score(rows["label"], rows["prob"]))
    naive_width = np.subtract(*np.quantile(naive, [0.975, 0.025]))
    assert naive_width < 0.5 * (crop.high - crop.low)


def test_vectorised_intervals_match_a_plain_loop_over_the_same_draws():
    predictions = random_predictions(7)
    samples = predictions.groupby("group", sort=True)
    groups, labels = list(samples.groups), samples["label"].first().to_numpy()
    draws, _ = stratified_sample_draws(labels, 50, seed=11)
    expected = {"auc": [], "balanced_accuracy": []}
    for draw in draws:
        part = pd.concat([samples.get_group(groups[s]) for s in draw])
        metrics = binary_metrics(part["label"].to_numpy(), part["prob"].to_numpy())
        for key in expected:
            expected[key].append(metrics[key])
    for metric, values in expected.items():
        got = bootstrap_metric_interval(predictions, "crop", metric, 50, seed=11)
        assert (got.low, got.high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))


def test_evaluation_report_has_balanced_accuracy_intervals_at_both_levels():
    report = evaluation_report(random_predictions(3), resamples=200, seed=0)
    for level in ("crop", "sample"):
        metrics = report[level]
        for key in ("auc", "balanced_accuracy"):
            assert metrics[f"{key}_ci_low"] <= metrics[key] <= metrics[f"{key}_ci_high"], key
            assert metrics[f"{key}_ci_resamples"] == 200
    assert json.loads(json.dumps(report)) == report  # plain JSON types


# ------------------------------------------------------------------ compare
def write_eval(eval_dir, backbone: str, predictions: pd.DataFrame) -> None:
    (eval_dir / backbone).mkdir(parents=True, exist_ok=True)
    predictions.to_csv(eval_dir / backbone / "predictions.csv", index=False)
    (eval_dir / backbone / "metrics.json").write_text(json.dumps(
        {"crop": {"auc": 0.5}, "sample": {"auc": 0.5}}))


def test_paired_comparisons_on_hand_made_predictions(tmp_path):
    labels = {f"S{i}": int(i >= 4) for i in range(8)}
    perfect = crops_of({g: (y, [0.2 + 0.6 * y, 0.3 + 0.6 * y]) for g, y in labels.items()})
    also_perfect = perfect.assign(prob=perfect["prob"] * 0.9)
    rng = np.random.default_rng(0)
    noisy = perfect.assign(prob=rng.uniform(0, 1, len(perfect)))
    for name, frame in (("a", perfect), ("b", also_perfect), ("c", noisy)):
        write_eval(tmp_path, name, frame)
    paired = compare.paired_comparisons(tmp_path, ["a", "b", "c"], 200, seed=0)
    assert list(paired.columns) == compare.PAIRED_COLUMNS
    rows = paired.set_index(["backbone_a", "backbone_b"])
    assert len(rows) == 3 and (rows["samples"] == 8).all()
    both_perfect = rows.loc[("a", "b")]
    assert both_perfect["auc_difference"] == 0 and pd.isna(both_perfect["delong_p_value"])
    assert compare.describe_p_value(both_perfect["delong_p_value"]) == "not estimable"
    against_noise = rows.loc[("a", "c")]
    expected = 1 - roc_auc_score(list(labels.values()),
                                 noisy.groupby("group")["prob"].mean())
    assert against_noise["auc_difference"] == pytest.approx(expected)
    assert 0 < against_noise["delong_p_value"] <= 1
    assert against_noise["difference_ci_low"] <= expected <= against_noise["difference_ci_high"]
    assert against_noise["bootstrap_resamples"] == 200
    # An empty p in the CSV, not 1 or "None"
    paired.to_csv(tmp_path / "paired.csv", index=False)
    assert pd.isna(pd.read_csv(tmp_path / "paired.csv").set_index(
        ["backbone_a", "backbone_b"]).loc[("a", "b"), "delong_p_value"])
    table = compare.markdown_table(paired)
    assert re.search(r"\|\s*a\s*\|\s*b\s*\|", table) and "None" not in table
    assert "nan" not in table.lower()
    write_eval(tmp_path, "d", perfect[perfect["group"] != "S0"])
    with pytest.raises(PipelineError, match="a and d: different test samples"):
        compare.paired_comparisons(tmp_path, ["a", "d"], 100, seed=0)


def test_paired_sample_comparison_refuses_relabelled_samples():
    predictions = random_predictions(1)
    flipped = predictions.assign(label=1 - predictions["label"])
    with pytest.raises(ValueError, match="different labels"):
        paired_sample_comparison(predictions, flipped, 100, 0)


def test_roc_overlay_aggregates_samples_with_metrics_sample_level(tmp_path, monkeypatch):
    write_eval(tmp_path, "a", random_predictions(2))
    calls = []
    real = compare.sample_level
    monkeypatch.setattr(compare, "sample_level", lambda frame: calls.append(1) or real(frame))
    compare.plot_roc_overlay(tmp_path, ["a"], tmp_path / "roc.png")
    assert calls and (tmp_path / "roc.png").stat().st_size > 0


def test_a_cut_between_neighbouring_float32_scores_decides_as_it_was_chosen():
    """Models give float32 probabilities; the cut is chosen in float64 halfway between two
    scores. A saturated softmax puts scores one float32 step apart, where comparing in
    float32 would round the cut onto a score and call every crop positive."""
    scores = np.array([0.9999999, 0.9999999, 0.99999994, 0.99999994], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    cut = youden_threshold(labels, scores)
    assert list(decide(scores, cut)) == [0, 0, 1, 1]
    assert list(decide(scores.astype(np.float64), cut)) == [0, 0, 1, 1]
    assert binary_metrics(labels, scores, cut)["balanced_accuracy"] == 1.0
