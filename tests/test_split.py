import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import PipelineError
from pipeline.config import SplitParams
from pipeline.data.split import fold_assignment, small_splits, split_groups, split_metrics


def manifest_from(crops_per_group: list[int], labels: list[int]) -> pd.DataFrame:
    rows = []
    for g, (n, label) in enumerate(zip(crops_per_group, labels)):
        for c in range(n):
            rows.append({"crop_id": f"c{g}_{c}", "group": f"G{g}", "sample": f"G{g}_crops_r",
                         "class_name": "ALS" if label else "Control", "label": label})
    return pd.DataFrame(rows)


SPLIT = SplitParams(test_fraction=0.3, val_fraction=0.2, folds=0)


def test_split_by_group_is_stratified_and_deterministic():
    manifest = manifest_from([5] * 40, [1] * 28 + [0] * 12)
    first = split_groups(manifest, SPLIT, seed=1)
    again = split_groups(manifest, SPLIT, seed=1)
    other = split_groups(manifest, SPLIT, seed=2)
    pd.testing.assert_frame_equal(first, again)
    assert not first["split"].equals(other["split"])
    metrics = split_metrics(first)
    assert metrics["groups_in_two_splits"] == 0
    assert metrics["test_groups_ALS"] == round(0.3 * 28)
    assert metrics["test_groups_Control"] == round(0.3 * 12)
    assert metrics["val_groups_ALS"] >= 1 and metrics["val_groups_Control"] >= 1


def test_too_few_groups_is_a_clear_error():
    manifest = manifest_from([3] * 5, [1, 1, 1, 0, 0])
    with pytest.raises(PipelineError, match="'Control' has only 2 group"):
        split_groups(manifest, SPLIT, seed=0)


def test_folds_keep_groups_together():
    manifest = manifest_from([3] * 20, [1] * 12 + [0] * 8)
    frame = split_groups(manifest, SplitParams(0.3, 0.2, folds=4), seed=0)
    assert split_metrics(frame)["groups_in_two_folds"] == 0
    assert sorted(frame["fold"].unique()) == [0, 1, 2, 3]
    for fold in range(4):
        assignment = fold_assignment(frame, fold, 0.2, seed=0)
        assert (frame.assign(s=assignment).groupby("group")["s"].nunique() == 1).all()
        assert set(assignment) == {"train", "val", "test"}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 12), min_size=6, max_size=40),
    positive_share=st.floats(0.2, 0.8),
    test_fraction=st.floats(0.15, 0.5),
    seed=st.integers(0, 10_000),
)
def test_split_properties(sizes, positive_share, test_fraction, seed):
    n_pos = int(np.clip(round(positive_share * len(sizes)), 3, len(sizes) - 3))
    labels = [1] * n_pos + [0] * (len(sizes) - n_pos)
    manifest = manifest_from(sizes, labels)
    params = SplitParams(test_fraction, 0.25, 0)
    frame = split_groups(manifest, params, seed)
    # no group in two splits
    assert (frame.groupby("group")["split"].nunique() == 1).all()
    # stratified: per class, the test share of groups is the ideal rounded to one group
    for label in (0, 1):
        groups = frame[frame["label"] == label].groupby("group")["split"].first()
        ideal = test_fraction * len(groups)
        assert abs((groups == "test").sum() - ideal) <= 1
        assert (groups == "train").sum() >= 1 and (groups == "val").sum() >= 1
    # deterministic
    pd.testing.assert_frame_equal(frame, split_groups(manifest, params, seed))


def test_a_six_sample_folder_is_flagged_below_the_minimum():
    # 3 samples per class, as a first try with one's own data: every split is 1/1/1
    frame = split_groups(manifest_from([4] * 6, [1, 1, 1, 0, 0, 0]), SPLIT, seed=0)
    small = small_splits(frame)
    assert len(small) == 6 and "test/Control: 1" in small
    assert split_metrics(frame)["splits_below_minimum"] == 6
    # the demo's 28 / 11 groups: the ALS train and test splits are large enough
    flagged = " ".join(small_splits(split_groups(
        manifest_from([5] * 39, [1] * 28 + [0] * 11), SPLIT, seed=0)))
    assert "train/ALS" not in flagged and "test/ALS" not in flagged


def test_sample_names_that_look_missing_or_numeric_survive_the_stage_files(tmp_path):
    """split.csv is read back by every later stage: a sample folder "NA_crops_r" must not
    become NaN (its crops in no split), nor "12.1" and "12.10" one number (two patients
    merged)."""
    import subprocess
    import sys

    from pipeline.io import read_crop_table
    from tests.conftest import REPO, write_params

    manifest = manifest_from([2] * 12, [0] * 6 + [1] * 6)
    odd_names = {"G0": "NA", "G1": "12.1", "G2": "12.10", "G3": "null", "G6": "007"}
    manifest["group"] = manifest["group"].replace(odd_names)
    manifest["sample"] = manifest["group"] + "_crops_r"
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.split", "--manifest",
         str(tmp_path / "manifest.csv"),
         "--out", str(tmp_path / "split.csv"), "--folds", str(tmp_path / "folds.csv"),
         "--metrics", str(tmp_path / "metrics.json"), "--params",
         str(write_params(tmp_path / "params.yaml"))],
        cwd=REPO, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                      "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    # the console shows a table of crops and groups per split, not a Python dict
    assert "crops / groups" in result.stderr and "│ test" in result.stderr, result.stderr
    assert "{" not in result.stderr and "': " not in result.stderr, result.stderr
    split = read_crop_table(tmp_path / "split.csv")
    assert sorted(split["group"].unique()) == sorted(manifest["group"].unique())
    assert split["split"].notna().all() and len(split) == len(manifest)
    assert split.groupby("group")["crop_id"].count().eq(2).all()  # nobody merged
    naive = pd.read_csv(tmp_path / "split.csv")  # what the stages read before
    assert naive["group"].isna().any()
