"""Intervals that cover and tests that keep their level at a few tens of groups, checked by
simulation: 9 negative and 10 positive groups, the size of a held-out split of real fields."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, norm, rankdata

from pipeline.stats import (
    ALPHA,
    auc_score_interval,
    clustered_proportion_interval,
    crop_auc_interval,
    evaluation_report,
    holm,
    mover_mean,
    paired_comparison,
    paired_permutation_test,
    robust_threshold,
    wilson_interval,
    youden_threshold,
)

NEGATIVE_GROUPS, POSITIVE_GROUPS = 9, 10


def clustered_scores(rng, shift: float, group_sd: float = 0.5, crops=(5, 30)) -> pd.DataFrame:
    """Crops with a per-group offset (crops of one field resemble each other): negatives
    around 0, positives around `shift`, logistic probabilities."""
    rows = []
    for label, count, centre in ((0, NEGATIVE_GROUPS, 0.0), (1, POSITIVE_GROUPS, shift)):
        for g in range(count):
            offset = rng.normal(centre, group_sd)
            for c in range(rng.integers(*crops)):
                rows.append({"crop_id": f"{label}-{g}-{c}", "group": f"{label}-{g}",
                             "label": label, "score": offset + rng.normal(0, 1)})
    frame = pd.DataFrame(rows)
    return frame.assign(prob=1 / (1 + np.exp(-frame["score"])))


@pytest.mark.parametrize("true_auc", [0.75, 0.90, 0.98, 0.995])
def test_group_level_auc_interval_covers_at_9_plus_10_groups(true_auc):
    """Group scores binormal with the given AUC: the score interval covers the truth in at
    least 93% of 600 repetitions (a percentile bootstrap over so few groups covered 49%
    at AUC 0.98), holds its own estimate, and never collapses to a point, perfect
    separation included."""
    rng = np.random.default_rng(7)
    shift = np.sqrt(2) * norm.ppf(true_auc)
    covered, perfect = 0, 0
    for _ in range(600):
        negative, positive = rng.normal(0, 1, NEGATIVE_GROUPS), rng.normal(shift, 1,
                                                                          POSITIVE_GROUPS)
        auc = (positive[:, None] > negative[None, :]).mean()
        interval = auc_score_interval(auc, NEGATIVE_GROUPS, POSITIVE_GROUPS)
        assert interval.high - interval.low > 0.01
        assert interval.low <= auc <= interval.high
        covered += interval.low <= true_auc <= interval.high
        perfect += auc == 1.0
    print(f"group AUC interval at true AUC {true_auc}: coverage {covered / 600:.1%}")
    assert covered / 600 >= 0.93, covered / 600
    if true_auc == 0.98:
        assert perfect > 100  # the case a bootstrap cannot handle is common here


@pytest.mark.parametrize("shift", [1.6, 2.6])
def test_crop_level_auc_interval_covers_with_crops_clustered_in_groups(shift):
    """Crop AUC with crops clustered in 19 groups: the clustered DeLong interval covers the
    crop-level truth (taken from 200,000 independent crop pairs) in >= 93% of 500 runs."""
    rng = np.random.default_rng(3)
    positives = rng.normal(shift, 0.5, 200_000) + rng.normal(0, 1, 200_000)
    negatives = rng.normal(0, 0.5, 200_000) + rng.normal(0, 1, 200_000)
    truth = (positives > negatives).mean()
    covered = 0
    for _ in range(500):
        interval = crop_auc_interval(clustered_scores(rng, shift))
        covered += interval.low <= truth <= interval.high
    assert covered / 500 >= 0.93, (truth, covered / 500)


def test_crop_level_proportion_interval_counts_groups_not_crops():
    """Sensitivity at crop level when crops of a group are called alike: the clustered
    interval covers in >= 93% of 500 runs; one that counts crops as independent does not."""
    rng = np.random.default_rng(11)
    covered, naive_covered = 0, 0
    for _ in range(500):
        group_rates = rng.beta(4, 2, POSITIVE_GROUPS)  # true sensitivity 4/6 on average
        units = rng.integers(5, 30, POSITIVE_GROUPS)
        correct = rng.binomial(units, group_rates)
        interval = clustered_proportion_interval(correct, units)
        covered += interval.low <= 4 / 6 <= interval.high
        naive = wilson_interval(correct.sum(), units.sum())
        naive_covered += naive.low <= 4 / 6 <= naive.high
    assert covered / 500 >= 0.93 and naive_covered / 500 < 0.85


def test_a_proportion_of_0_or_n_has_bounds_of_exactly_0_and_1():
    """At k = n the upper bound is 1 and at k = 0 the lower bound is 0, not a rounding hair
    inside (1 - 1e-16 at n = 10 left a true sensitivity of 1 never covered), at group level,
    at crop level and through MOVER."""
    for n in range(1, 301):
        assert wilson_interval(n, n).high == 1.0 and wilson_interval(0, n).low == 0.0, n
    for groups in (2, 3, 10, 19):
        units = np.arange(groups) % 7 + 3
        assert clustered_proportion_interval(units, units).high == 1.0
        assert clustered_proportion_interval(np.zeros(groups), units).low == 0.0
        all_right = clustered_proportion_interval(units, units)
        assert mover_mean((1.0, all_right), (1.0, all_right)).high == 1.0
    all_right, all_wrong = wilson_interval(10, 10), wilson_interval(0, 9)
    assert mover_mean((1.0, all_right), (0.0, all_wrong)).low < 0.5 < mover_mean(
        (1.0, all_right), (0.0, all_wrong)).high
    assert mover_mean((0.0, all_wrong), (0.0, wilson_interval(0, 10))).low == 0.0


@pytest.mark.parametrize("sensitivity, specificity",
                         [(0.6, 0.7), (0.8, 0.9), (0.7, 1.0), (1.0, 1.0)])
def test_the_balanced_accuracy_interval_covers_at_group_and_crop_level(sensitivity,
                                                                        specificity):
    """MOVER from the two Wilson intervals covers the true balanced accuracy in >= 92% of
    600 runs (a 95% interval shows less in under 1 seed of 1000; 94-98% measured over 5000
    runs), at group level (each group right or wrong) and at crop level (each group's own
    rate, beta around the class's, over 5-30 crops: the clustered intervals); a perfect
    classifier's bound is 1 itself."""
    rng = np.random.default_rng(13)
    truth = (sensitivity + specificity) / 2
    covered = {"group": 0, "crop": 0}
    for _ in range(600):
        parts = {"group": [], "crop": []}
        for count, rate in ((POSITIVE_GROUPS, sensitivity), (NEGATIVE_GROUPS, specificity)):
            right = rng.binomial(count, rate)
            parts["group"].append((right / count, wilson_interval(right, count)))
            units = rng.integers(5, 30, count)
            rates = rng.beta(8 * rate, 8 * (1 - rate), count) if rate < 1 else np.ones(count)
            correct = rng.binomial(units, rates)
            parts["crop"].append((correct.sum() / units.sum(),
                                  clustered_proportion_interval(correct, units)))
        for level, (first, second) in parts.items():
            interval = mover_mean(first, second)
            assert interval.low <= (first[0] + second[0]) / 2 <= interval.high
            covered[level] += interval.low <= truth <= interval.high
    print(f"MOVER balanced accuracy at sensitivity {sensitivity}, specificity {specificity}: "
          f"coverage {covered['group'] / 600:.1%} at group level, "
          f"{covered['crop'] / 600:.1%} at crop level")
    assert min(covered.values()) / 600 >= 0.92, covered


def paired_binormal(rng, auc=(0.85, 0.85), sd_positive=(1.0, 1.0), crops=(1, 2),
                    correlation: float = 0.7, scale_b: float = 1.0) -> pd.DataFrame:
    """Two models' probabilities for the same crops of 9 negative and 10 positive groups.
    Each model's latent score is N(0, 1), half of it shared by the crops of a group, and
    correlated `correlation` between the models; a model's negatives score the latent, its
    positives mean + sd * latent, the mean giving it the crop-level AUC `auc` (binormal).
    With one crop per group the group level is the crop level. `scale_b` stretches model
    b's logits: another scale, the same ranks."""
    labels = np.repeat([0, 1], [NEGATIVE_GROUPS, POSITIVE_GROUPS])
    counts = rng.integers(*crops, len(labels))
    group = np.repeat(np.arange(len(labels)), counts)
    cov = [[1, correlation], [correlation, 1]]
    latent = np.sqrt(0.5) * (rng.multivariate_normal([0, 0], cov, len(labels))[group]
                             + rng.multivariate_normal([0, 0], cov, len(group)))
    sd = np.asarray(sd_positive)
    mean = norm.ppf(auc) * np.sqrt(1 + sd ** 2)
    positive = labels[group][:, None] == 1
    logits = np.where(positive, mean + sd * latent, latent) * [1.0, scale_b]
    return pd.DataFrame({"crop_id": np.arange(len(group)), "group": group,
                         "label": labels[group], "prob_a": 1 / (1 + np.exp(-logits[:, 0])),
                         "prob_b": 1 / (1 + np.exp(-logits[:, 1]))})


def swapped_raw_scores_p_value(paired: pd.DataFrame, level: str, permutations: int,
                               seed: int) -> float:
    """The test this one replaced: AUC(a) - AUC(b) against its values with the two models'
    raw scores swapped in random groups (Monte Carlo, the observed pattern counted once)."""
    if level == "group":
        paired = paired.groupby("group", as_index=False).agg(
            label=("label", "first"), prob_a=("prob_a", "mean"), prob_b=("prob_b", "mean"))
    labels, group = paired["label"].to_numpy() == 1, pd.factorize(paired["group"])[0]
    a, b = paired["prob_a"].to_numpy(), paired["prob_b"].to_numpy()
    swapped = (np.random.default_rng(seed).random((permutations, group.max() + 1)) < 0.5)[
        :, group]

    def auc(scores: np.ndarray) -> np.ndarray:
        ranks = rankdata(scores, axis=-1)[..., labels].sum(-1)
        return (ranks - labels.sum() * (labels.sum() + 1) / 2) / (labels.sum() * (~labels).sum())

    null = auc(np.where(swapped, b, a)) - auc(np.where(swapped, a, b))
    return ((np.abs(null) >= abs(auc(a) - auc(b)) - 1e-12).sum() + 1) / (permutations + 1)


# 1000 runs at 99 permutations (p <= 0.05 is 4 or fewer of 99 as extreme): a test whose
# true rate were 6% would show more than this in only 5% of seeds, and the test this one
# replaced (9% under unequal shapes) shows more in 98%.
NULL_RUNS = 1000
NULL_BOUND = binom.ppf(0.95, NULL_RUNS, 0.06) / NULL_RUNS


@pytest.mark.parametrize("level, crops, auc", [("group", (1, 2), 0.90), ("crop", (2, 6), 0.90)])
def test_the_paired_test_keeps_its_level_for_equal_aucs_of_unequal_shapes(level, crops, auc):
    """Equal AUCs, positives' sd 0.3 against 2.0, correlation 0.7, 9 + 10 groups: the
    studentized test on ranks rejects in at most NULL_BOUND of 1000 runs at 5% (4.7% at
    group level, 4.6% at crop level), where swapping the raw scores rejected 7.7% and 9.3%
    on these very runs."""
    rng = np.random.default_rng(17)
    rejected = 0
    for run in range(NULL_RUNS):
        paired = paired_binormal(rng, (auc, auc), (0.3, 2.0), crops)
        rejected += paired_permutation_test(paired, level, 99, run)["p_value"] <= ALPHA
    assert rejected / NULL_RUNS <= NULL_BOUND, (rejected / NULL_RUNS, NULL_BOUND)


@pytest.mark.parametrize("level, crops", [("group", (1, 2)), ("crop", (2, 6))])
def test_the_paired_test_keeps_its_level_for_exchangeable_models(level, crops):
    """Two models drawn alike (AUC 0.85, correlation 0.7): at most NULL_BOUND of 1000 runs
    reject at 5% (3.5% at either level), at group level and with crops clustered in
    groups."""
    rng = np.random.default_rng(5)
    rejected = 0
    for run in range(NULL_RUNS):
        paired = paired_binormal(rng, crops=crops)
        rejected += paired_permutation_test(paired, level, 99, run)["p_value"] <= ALPHA
    assert rejected / NULL_RUNS <= NULL_BOUND, (rejected / NULL_RUNS, NULL_BOUND)


def test_the_paired_test_is_as_powerful_as_swapping_raw_scores_and_keeps_it_across_scales():
    """AUC 0.90 against 0.75 on the same 9 + 10 groups, scales alike: in 300 runs the test
    rejects at least as often as the raw-score swap it replaced (31% against 26% measured
    over 1000 runs). With model b's logits stretched fourfold the raw-score swap loses most
    of its power; the new test gives the same p-values to the bit (it reads ranks)."""
    rng = np.random.default_rng(23)
    new = old = old_stretched = 0
    for run in range(300):
        paired = paired_binormal(rng, (0.90, 0.75))
        result = paired_permutation_test(paired, "group", 99, run)
        new += result["p_value"] <= ALPHA
        old += swapped_raw_scores_p_value(paired, "group", 99, run) <= ALPHA
        logit_b = np.log(paired["prob_b"] / (1 - paired["prob_b"]))
        stretched = paired.assign(prob_b=1 / (1 + np.exp(-4 * logit_b)))
        old_stretched += swapped_raw_scores_p_value(stretched, "group", 99, run) <= ALPHA
        if run % 20 == 0:
            assert paired_permutation_test(stretched, "group", 99, run) == result
    assert new >= old, (new, old)
    assert old_stretched < old / 2, (old_stretched, old)


def test_the_paired_permutation_test_finds_a_real_difference():
    rng = np.random.default_rng(9)
    base = clustered_scores(rng, 1.5)
    better = base.assign(prob=1 / (1 + np.exp(-3 * (base["score"] - 0.75))))
    noise = rng.normal(0, 3, len(base))
    worse = base.assign(prob=1 / (1 + np.exp(-(base["score"] + noise))))
    result = paired_comparison(better, worse, permutations=999, seed=0)
    assert result["crop_difference"] > 0 and result["crop_p_value"] < 0.05


def test_holm_adjusts_step_down_and_keeps_missing_values():
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    adjusted = holm([0.2, 0.5])
    assert adjusted == pytest.approx([0.4, 0.5])


def test_perfect_separation_gives_a_one_sided_bound_never_a_point():
    predictions = pd.DataFrame({
        "crop_id": [f"c{i}" for i in range(12)], "group": [f"g{i // 2}" for i in range(12)],
        "label": [0] * 6 + [1] * 6, "prob": np.linspace(0.05, 0.95, 12)})
    report = evaluation_report(predictions, {"crop": 0.5, "group": 0.5})
    for level in ("crop", "group"):
        figures = report[level]
        assert figures["auc"] == 1.0
        assert figures["auc_ci_low"] < 1.0 and figures["auc_ci_high"] == 1.0
        assert "one-sided" in figures["auc_ci_method"]
        assert figures["sensitivity"] == 1.0 and figures["sensitivity_ci_low"] < 1.0
    assert report["crop"]["auc_ci_low"] == report["group"]["auc_ci_low"]  # counted in groups
    # perfect sensitivity over 3 groups of 2 crops: the crops of a group are not 6
    # independent successes, each group counts once
    assert report["crop"]["sensitivity_ci_low"] <= report["group"]["sensitivity_ci_low"]


def test_a_proportion_of_one_counts_groups_not_crops_and_json_holds_no_nan(tmp_path):
    from pipeline.io import read_json, write_json_atomic

    perfect = clustered_proportion_interval(np.full(10, 30), np.full(10, 30))
    assert perfect.low < wilson_interval(10, 10).low  # 10 groups (t quantile), not 300 crops
    one_class = pd.DataFrame({"crop_id": range(4), "group": ["a", "a", "b", "b"],
                              "label": [1, 1, 1, 1], "prob": [0.9, 0.8, 0.7, 0.6]})
    report = evaluation_report(one_class)
    write_json_atomic(tmp_path / "m.json", report)
    assert "NaN" not in (tmp_path / "m.json").read_text()
    assert read_json(tmp_path / "m.json")["crop"]["auc"] is None


def test_youden_takes_one_half_inside_the_optimal_gap_and_the_gap_middle_outside():
    labels = np.array([0, 0, 1, 1])
    assert youden_threshold(labels, np.array([0.1, 0.2, 0.7, 0.9])) == 0.5
    assert youden_threshold(labels, np.array([0.6, 0.7, 0.8, 0.9])) == pytest.approx(0.75)


@pytest.mark.slow  # thousands of simulated splits, about 45 s on 2 cores
def test_a_robust_cut_keeps_balanced_accuracy_where_one_validation_cut_does_not():
    """Few validation groups with field offsets: a single Youden cut follows whichever
    groups happened to land in validation; the median over resamples of the validation
    groups stays near the middle. On held-out groups (AUC >= 0.95) its balanced accuracy is
    >= 0.85 in at least 90% of 100 repetitions."""
    rng = np.random.default_rng(21)
    good = 0
    for _ in range(100):
        validation = clustered_scores(rng, 3.5, group_sd=0.8, crops=(5, 15))
        validation = validation[validation["group"].str[-1].astype(int) < 3]  # 3 + 3 groups
        test = clustered_scores(rng, 3.5, group_sd=0.8)
        cut = robust_threshold(validation["label"].to_numpy(), validation["prob"].to_numpy(),
                               validation["group"].to_numpy(), 300, 0)
        report = evaluation_report(test, {"crop": cut["cut"], "group": cut["cut"]})
        assert cut["low"] <= cut["cut"] <= cut["high"]
        if report["crop"]["auc"] >= 0.95:
            good += report["crop"]["balanced_accuracy"] >= 0.85
        else:
            good += 1  # the claim is for AUC >= 0.95
    assert good >= 90, good
