"""Statistics that admit what they cannot estimate, and a comparison whose every table and
figure reads one AUC per backbone and level."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.cli import PipelineError
from pipeline.reporting import compare
from pipeline.stats import (
    MIN_GROUPS_PER_CLASS,
    NOT_ESTIMABLE,
    GroupMismatchError,
    binary_metrics,
    crop_auc_interval,
    decide,
    evaluation_report,
    level_auc,
    paired_comparison,
    paired_frames,
    paired_permutation_test,
    youden_threshold,
)


def crops_of(groups: dict[str, tuple[int, list[float]]]) -> pd.DataFrame:
    """{group: (label, [crop probabilities])} as predictions.csv rows."""
    rows = [{"crop_id": f"{group}_{i}", "group": group, "label": label, "prob": prob,
             "predicted": int(prob >= 0.5)}
            for group, (label, probs) in groups.items() for i, prob in enumerate(probs)]
    return pd.DataFrame(rows)


def random_predictions(seed: int, groups: int = 24, positives: int = 14) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    found = {}
    for g in range(groups):
        label = int(g < positives)
        centre = rng.normal(0.4 + 0.2 * label, 0.15)
        found[f"G{g:02d}"] = (label, list(np.clip(centre + rng.normal(0, 0.15,
                                                                     rng.integers(2, 7)),
                                                  0, 1)))
    return crops_of(found)


def test_evaluation_report_has_intervals_for_every_figure_at_both_levels():
    report = evaluation_report(random_predictions(3))
    for level in ("crop", "group"):
        metrics = report[level]
        for key in ("auc", "balanced_accuracy", "sensitivity", "specificity", "accuracy"):
            assert metrics[f"{key}_ci_low"] < metrics[key] < metrics[f"{key}_ci_high"], key
            assert metrics[f"{key}_ci_method"]
        assert metrics["groups_negative"] == 10 and metrics["groups_positive"] == 14
    assert json.loads(json.dumps(report)) == report  # plain JSON types


def test_the_group_auc_is_the_same_from_the_model_and_from_predictions_csv(tmp_path):
    """evaluate scores float32 probabilities; compare reads them back from predictions.csv
    as float64. Group means are taken in float64 either way, so both give one AUC (a
    float32 mean once tied groups and gave the ROC panel 0.833 and the paired table
    0.875 for one model)."""
    from pipeline.io import read_crop_table
    from pipeline.stats import aggregate_groups

    rng = np.random.default_rng(4)
    frame = random_predictions(5)
    frame["prob"] = (0.999 + 0.001 * rng.random(len(frame))).astype(np.float32)
    assert aggregate_groups(frame)["prob"].dtype == np.float64
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    again = read_crop_table(tmp_path / "predictions.csv")
    for level in ("crop", "group"):
        assert level_auc(frame, level) == level_auc(again, level)


# ------------------------------------------------------------------ compare
def write_eval(eval_dir, backbone: str, predictions: pd.DataFrame) -> None:
    (eval_dir / backbone).mkdir(parents=True, exist_ok=True)
    predictions.to_csv(eval_dir / backbone / "predictions.csv", index=False)
    report = evaluation_report(predictions, {"crop": 0.5, "group": 0.5})
    seeds = {"seeds": [0, 1], **{f"{level}_{figure}": {"values": [0.8, 0.9], "mean": 0.85,
                                                      "sd": 0.07}
                                 for level in ("crop", "group")
                                 for figure in ("auc", "balanced_accuracy")}}
    metrics = {"input": "raw", **report, "seeds": seeds,
               "threshold": {"rule": "youden", "crop": 0.5, "group": 0.5,
                             "crop_range": [0.4, 0.6], "group_range": [0.4, 0.6]},
               "train_seconds": 1.0, "peak_memory_mb": 1.0, "params_millions": 1.0,
               "infer_ms_per_image": 1.0, "infer_images_per_s": 1.0}
    (eval_dir / backbone / "metrics.json").write_text(json.dumps(metrics))


def test_table_and_paired_table_give_the_same_auc_for_a_backbone_and_level(tmp_path):
    for name, seed in (("a", 1), ("b", 2)):
        write_eval(tmp_path, name, random_predictions(0).assign(
            prob=lambda f, s=seed: np.clip(f["prob"] + np.random.default_rng(s).normal(
                0, 0.1, len(f)), 0, 1)))
    table = compare.comparison_table(tmp_path, ["a", "b"], {}).set_index("backbone")
    paired = compare.paired_comparisons(tmp_path, ["a", "b"], 199, seed=0).iloc[0]
    for level in ("crop", "group"):
        assert paired[f"{level}_auc_a"] == table.loc["a", f"{level}_auc"]
        assert paired[f"{level}_auc_b"] == table.loc["b", f"{level}_auc"]


def test_paired_comparisons_on_hand_made_predictions(tmp_path):
    labels = {f"S{i}": int(i >= 4) for i in range(8)}
    perfect = crops_of({g: (y, [0.2 + 0.6 * y, 0.3 + 0.6 * y]) for g, y in labels.items()})
    also_perfect = perfect.assign(prob=perfect["prob"] * 0.9)
    rng = np.random.default_rng(0)
    noisy = perfect.assign(prob=rng.uniform(0, 1, len(perfect)))
    for name, frame in (("a", perfect), ("b", also_perfect), ("c", noisy)):
        write_eval(tmp_path, name, frame)
    paired = compare.paired_comparisons(tmp_path, ["a", "b", "c"], 199, seed=0)
    assert list(paired.columns) == compare.PAIRED_COLUMNS + ["crop_p_holm", "group_p_holm"] \
        or set(compare.PAIRED_COLUMNS) <= set(paired.columns)
    rows = paired.set_index(["backbone_a", "backbone_b"])
    assert len(rows) == 3 and (rows["groups"] == 8).all()
    both_perfect = rows.loc[("a", "b")]
    assert both_perfect["group_difference"] == 0 and both_perfect["group_p_value"] == 1.0
    against_noise = rows.loc[("a", "c")]
    expected = 1 - roc_auc_score(list(labels.values()), noisy.groupby("group")["prob"].mean())
    assert against_noise["group_difference"] == pytest.approx(expected)
    assert 0 < against_noise["group_p_value"] <= 1
    assert against_noise["permutations"] == 256  # 8 groups: every sign pattern, exact
    # Holm: each adjusted p is at least its raw p, and the family is the whole table
    for level in ("crop", "group"):
        assert (rows[f"{level}_p_holm"] >= rows[f"{level}_p_value"] - 1e-12).all()
    assert against_noise["group_seed_sd"] == pytest.approx(0.07)
    shown = compare.markdown_table(compare.readable_paired(paired))
    assert "a vs c" in shown and "None" not in shown and "nan" not in shown.lower()
    write_eval(tmp_path, "d", perfect[perfect["group"] != "S0"])
    with pytest.raises(PipelineError, match="a and d: different test crops"):
        compare.paired_comparisons(tmp_path, ["a", "d"], 199, seed=0)


def test_paired_comparison_refuses_relabelled_crops():
    predictions = random_predictions(1)
    flipped = predictions.assign(label=1 - predictions["label"])
    with pytest.raises(GroupMismatchError, match="other groups or classes"):
        paired_comparison(predictions, flipped, 199, 0)


def test_below_the_minimum_of_groups_in_a_class_no_interval_is_reported():
    """One negative group against six positive ones: every interval that reads the
    negatives (AUC, specificity, accuracy, balanced accuracy) is NOT_ESTIMABLE (None, None)
    at both levels, the crop AUC's included, which once fell back to a group-count formula
    fed with the crop AUC; sensitivity, over six groups, keeps its interval. Two groups of
    each class give them all."""
    assert MIN_GROUPS_PER_CLASS >= 2
    rng = np.random.default_rng(8)
    groups = {f"N{g}": (0, list(rng.uniform(0.1, 0.7, 4))) for g in range(1)}
    groups |= {f"P{g}": (1, list(rng.uniform(0.3, 0.9, 4))) for g in range(6)}
    predictions = crops_of(groups)
    assert 0 < level_auc(predictions, "crop") < 1
    assert crop_auc_interval(predictions) == NOT_ESTIMABLE
    report = evaluation_report(predictions)
    for level in ("crop", "group"):
        figures = report[level]
        for key in ("auc", "balanced_accuracy", "specificity", "accuracy"):
            assert figures[f"{key}_ci_low"] is None and figures[f"{key}_ci_high"] is None, key
            assert figures[f"{key}_ci_method"] == "not estimable"
        assert figures["sensitivity_ci_low"] < figures["sensitivity"] <= figures[
            "sensitivity_ci_high"]
    predictions = crops_of(groups | {"N1": (0, list(rng.uniform(0.1, 0.7, 4)))})
    report = evaluation_report(predictions)
    assert all(report[level][f"{key}_ci_low"] is not None for level in ("crop", "group")
               for key in ("auc", "sensitivity", "specificity", "accuracy"))
    with pytest.raises(ValueError, match="2 groups of each class"):
        paired_permutation_test(paired_frames(predictions, predictions).iloc[4:], "crop", 99, 0)


def test_the_readable_table_fits_a_page_and_says_not_estimable(tmp_path):
    write_eval(tmp_path, "a", random_predictions(2))
    frame = compare.comparison_table(tmp_path, ["a"], {})
    frame.loc[0, "crop_auc_ci_low"] = None
    shown = compare.readable_table(frame)
    assert len(shown.columns) <= 10 and "Group AUC [95% CI]" in shown.columns
    assert "[not estimable]" in shown.loc[0, "Crop AUC [95% CI]"]
    # as the report reads table.csv back: both bounds None, not NaN
    for bound in ("low", "high"):
        frame[f"group_auc_ci_{bound}"] = pd.Series([None], dtype=object)
    assert compare.readable_table(frame).loc[0, "Group AUC [95% CI]"].endswith(
        " [not estimable]")
    compare.plot_roc_overlay(tmp_path, ["a"], tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 0


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
