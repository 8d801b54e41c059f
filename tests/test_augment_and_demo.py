import dataclasses

import numpy as np
import pytest
import torch

from pipeline.classify.augment import (
    augment_images,
    build_augmentation,
    make_training_set,
    training_set_chunks,
    training_sources,
)
from pipeline.classify.images import balanced_indices
from pipeline.data.demo import make_demo_dataset
from pipeline.data.images import to_uint16
from pipeline.io import write_rows_atomic


def test_balancing_oversamples_the_minority_class():
    labels = np.array([1] * 10 + [0] * 4)
    index = balanced_indices(labels, np.random.default_rng(0))
    assert np.bincount(labels[index]).tolist() == [10, 10]
    assert set(range(14)) <= set(index.tolist())  # every original crop is kept


def test_augmentation_is_deterministic_for_a_seed_and_changes_images(params):
    images = torch.rand(12, 1, 32, 32)
    labels = np.array([1] * 8 + [0] * 4)
    aug = dataclasses.replace(params.augment, copies=2)
    first, out_labels, source = make_training_set(images, labels, aug, 7, torch.device("cpu"))
    again, _, _ = make_training_set(images, labels, aug, 7, torch.device("cpu"))
    other, _, _ = make_training_set(images, labels, aug, 8, torch.device("cpu"))
    assert first.shape == (2 * 16, 1, 32, 32) and first.dtype == np.uint16
    assert np.bincount(out_labels).tolist() == [16, 16]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, to_uint16(images[torch.from_numpy(source)].numpy()))


def test_streamed_augmentation_equals_augmenting_the_whole_set_at_once(params):
    """Made 256 at a time from the cache, the set is the one the whole float32 set gave."""
    images = torch.rand(300, 1, 16, 16)
    labels = np.array([1] * 200 + [0] * 100)
    aug = dataclasses.replace(params.augment, copies=2)
    streamed, _, source = make_training_set(images, labels, aug, 5, torch.device("cpu"))
    torch.manual_seed(5)
    whole = augment_images(images[torch.from_numpy(source)], build_augmentation(aug),
                           torch.device("cpu"))
    assert len(source) > 256  # several batches
    np.testing.assert_array_equal(streamed, to_uint16(whole.numpy()))


def test_the_set_written_chunk_by_chunk_is_the_set_np_save_writes(params, tmp_path):
    """The augment stage writes the set as it is made (write_rows_atomic), never holding it:
    the file has the bytes np.save gives for the whole set; a wrong row count is refused
    and leaves no file behind."""
    images = torch.rand(300, 1, 16, 16)
    labels = np.array([1] * 200 + [0] * 100)
    aug = dataclasses.replace(params.augment, copies=2)
    whole, _, _ = make_training_set(images, labels, aug, 5, torch.device("cpu"))
    source = training_sources(labels, aug, 5)
    write_rows_atomic(tmp_path / "streamed.npy", (len(source), 1, 16, 16), np.uint16,
                      training_set_chunks(images, source, aug, 5, torch.device("cpu")))
    np.save(tmp_path / "whole.npy", whole)
    assert (tmp_path / "streamed.npy").read_bytes() == (tmp_path / "whole.npy").read_bytes()
    with pytest.raises(ValueError, match=f"{len(source)} rows written, the header says"):
        write_rows_atomic(tmp_path / "short.npy", (len(source) + 1, 1, 16, 16), np.uint16,
                          training_set_chunks(images, source, aug, 5, torch.device("cpu")))
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["streamed.npy", "whole.npy"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_online_mode_returns_the_balanced_set_unaugmented(params):
    images = torch.rand(6, 1, 16, 16)
    labels = np.array([1, 1, 1, 1, 0, 0])
    aug = dataclasses.replace(params.augment, online=True, copies=3)
    out, out_labels, source = make_training_set(images, labels, aug, 0, torch.device("cpu"))
    np.testing.assert_array_equal(out, to_uint16(images[torch.from_numpy(source)].numpy()))
    assert len(out) == 8


def test_demo_data_layout_and_determinism(tmp_path, params):
    counts = make_demo_dataset(tmp_path / "a", params.demo, seed=3)
    make_demo_dataset(tmp_path / "b", params.demo, seed=3)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
               for f in files_a)
    assert {f.parts[0] for f in files_a} == {"ALS", "Control"}
    assert all(f.parts[1].endswith(("_crops_r", "_crops2_r")) for f in files_a)
    assert counts["samples_ALS"] == params.demo.n_als_samples
    assert counts["crops_ALS"] + counts["crops_Control"] == len(files_a)
