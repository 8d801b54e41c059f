from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.classify import crossval
from pipeline.classify.crossval import summarise
from pipeline.classify.images import load_classifier_images
from pipeline.classify.inference import score_split
from pipeline.cli import PipelineError
from pipeline.config import load_params
from pipeline.data.split import fold_of_each_crop
from pipeline.io import save_array_atomic
from tests.conftest import write_params


def test_summarise_mean_and_sd():
    folds = pd.DataFrame({"backbone": ["a", "a", "a", "b", "b"],
                          "fold": [0, 1, 2, 0, 1],
                          **{f"{lvl}_{k}": [0.8, 0.9, 1.0, 0.5, 0.7]
                             for lvl in ("crop", "group")
                             for k in ("auc", "accuracy", "balanced_accuracy", "sensitivity",
                                       "specificity")}})
    summary = summarise(folds).set_index("backbone")
    assert summary.loc["a", "folds"] == 3
    assert (summary["seeds_per_fold"] == 1).all()  # the sd over folds holds seed noise too
    assert summary.loc["a", "group_auc_mean"] == pytest.approx(0.9)
    assert summary.loc["a", "group_auc_sd"] == pytest.approx(0.1)
    assert summary.loc["b", "crop_auc_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_every_fold_trains_and_tests_on_disjoint_groups(tmp_path, monkeypatch):
    params = load_params(write_params(tmp_path / "p.yaml", epochs=1, split={"folds": 3}))
    rng = np.random.default_rng(0)
    rows = []
    for index in range(72):
        group, label = index // 3, (index // 3) % 2
        image = rng.uniform(0, 0.3, (1, 32, 32))
        image[:, 8:24, 8:24] += 0.6 * label
        save_array_atomic(tmp_path / "crops" / f"c{index:03d}.npy",
                          (np.clip(image, 0, 1) * 65535).astype(np.uint16))
        rows.append({"crop_id": f"c{index:03d}", "group": f"g{group:02d}", "label": label,
                     "class_name": "ALS" if label else "Control"})
    frame = pd.DataFrame(rows)
    frame["fold"] = fold_of_each_crop(frame, 3, 0)
    group_of = frame.set_index("crop_id")["group"]
    # Watch what run_fold really loads (train, val, test in turn) and scores.
    loaded, scored = [], []

    def watched_load_images(params, input_kind, crops_dir, sr_dir, crop_ids, device):
        assert sr_dir is None  # the folds never read SR images
        loaded.append(set(group_of[crop_ids]))
        return load_classifier_images(params, input_kind, crops_dir, sr_dir, crop_ids, device)

    def watched_score_split(model, images, split_rows, *args):
        scored.append(set(split_rows["group"]))
        return score_split(model, images, split_rows, *args)

    monkeypatch.setattr(crossval, "load_classifier_images", watched_load_images)
    monkeypatch.setattr(crossval, "score_split", watched_score_split)
    tested = set()
    for fold in range(3):
        loaded.clear()
        scored.clear()
        row = crossval.run_fold("mobilenet_v3_small", fold, frame, tmp_path / "crops", params,
                                torch.device("cpu"), tmp_path / "ckpt")
        train, val, test = loaded
        fold_groups = set(frame.loc[frame["fold"] == fold, "group"])
        assert test == fold_groups and scored == [fold_groups]
        assert not train & test and not val & test and not train & val, f"fold {fold}"
        assert train | val | test == set(frame["group"])
        assert row["test_groups"] == len(fold_groups)
        assert row["test_crops"] == (frame["fold"] == fold).sum()
        assert 0 <= row["group_auc"] <= 1 and 0 <= row["crop_accuracy"] <= 1
        tested |= test
    assert tested == set(frame["group"])  # every group had its turn in a test fold


def test_crossval_never_reads_sr_images():
    """The SR model saw some folds' test groups: the folds read bicubic instead of sr."""
    from pipeline.classify.crossval import crossval_input
    from pipeline.classify.images import image_folder

    assert crossval_input("sr") == "bicubic"
    assert {crossval_input(kind) for kind in ("raw", "bicubic", "hr")} == {"raw", "bicubic",
                                                                        "hr"}
    folder = image_folder(crossval_input("sr"), Path("data/ingested/crops"), None)
    assert folder == Path("data/ingested/crops")  # bicubic is made from the crops at load
    with pytest.raises(PipelineError, match="reads no SR images"):
        image_folder("sr", Path("data/ingested/crops"), None)


@pytest.mark.parametrize("online", [False, True])
def test_a_folds_training_set_is_the_one_augment_would_store(params, online):
    """Offline a fold holds its augmented set; online it makes the same rows augment would
    have stored, un-augmented, per batch (TrainingRowsFromSplit) and holds none of them."""
    import dataclasses

    from pipeline.classify.augment import make_training_set
    from pipeline.classify.crossval import fold_training_set
    from pipeline.classify.images import ClassifierImages, TrainingRowsFromSplit
    from pipeline.data.tensors import cache_rows

    params = dataclasses.replace(params, augment=dataclasses.replace(params.augment,
                                                                     online=online))
    stored = np.random.default_rng(2).integers(0, 65535, (10, 1, 16, 16), dtype=np.uint16)
    images, labels = ClassifierImages(stored, 16), np.array([1] * 7 + [0] * 3)
    rows, out_labels = fold_training_set(images, labels, params, 9, torch.device("cpu"))
    expected, expected_labels, _ = make_training_set(images, labels, params.augment, 9,
                                                     torch.device("cpu"))
    assert isinstance(rows, TrainingRowsFromSplit) == online
    assert torch.equal(rows[torch.arange(len(rows))], cache_rows(expected))
    np.testing.assert_array_equal(out_labels, expected_labels)
