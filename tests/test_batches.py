"""Training batches without a DataLoader: same order as DataLoader, every image once per epoch,
the same batches from a set read from disk as from one in memory, and throughput figures
that leave the warm-up epoch out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pipeline.classify.batches import training_batches
from pipeline.classify.training import throughput
from pipeline.data.tensors import CacheRowsOnDisk, cache_rows
from pipeline.io import NpyRows, save_array_atomic
from pipeline.runtime.placement import DEVICE_SHARE, caches_on_device


@pytest.mark.parametrize("size,batch_size", [(24, 5), (24, 8), (7, 16), (100, 32)])
def test_order_is_dataloaders_draw_for_draw(size, batch_size):
    """Three epochs from one generator, as DataLoader gives them; a change in torch's
    sampler would show here first."""
    images = torch.arange(size, dtype=torch.float32).reshape(size, 1, 1, 1)
    labels = torch.arange(size) % 2
    loader = DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(3),
                        drop_last=size > batch_size)
    expected = [[batch[0].flatten().tolist() for batch in loader] for _ in range(3)]
    batches = training_batches(images, labels, batch_size, 3, torch.device("cpu"))
    got = [[batches.gather(indices, torch.device("cpu"))[0].flatten().tolist()
            for indices in batches.epoch_indices(epoch)] for epoch in range(3)]
    assert got == expected
    assert len(batches) == len(expected[0])


def test_labels_travel_with_their_images():
    images = torch.arange(30, dtype=torch.float32).reshape(30, 1, 1, 1)
    labels = torch.arange(30) * 10
    batches = training_batches(images, labels, 4, 0, torch.device("cpu"))
    for indices in batches.epoch_indices(0):
        batch_images, batch_labels = batches.gather(indices, torch.device("cpu"))
        assert (batch_images.flatten().long() * 10 == batch_labels).all()


def test_shards_match_distributed_sampler_and_cover_the_set_once():
    images = torch.arange(40, dtype=torch.float32).reshape(40, 1, 1, 1)
    labels = torch.zeros(40, dtype=torch.long)
    seen = []
    for rank in range(2):
        batches = training_batches(images, labels, 8, 5, torch.device("cpu"), 2, rank)
        sampler = DistributedSampler(range(40), 2, rank, shuffle=True, seed=5, drop_last=True)
        sampler.set_epoch(1)
        got = torch.cat(batches.epoch_indices(1)).tolist()
        assert got == list(sampler)[:len(got)]
        assert all(len(b) == 4 for b in batches.epoch_indices(1))  # 8 / 2 per process
        seen += got
    assert sorted(seen) == list(range(40))


def test_throughput_leaves_the_warmup_epoch_out():
    curves = [{"epoch": 1, "warmup": True, "train_images": 100, "data_seconds": 1.0,
               "compute_seconds": 9.0},
              {"epoch": 2, "warmup": False, "train_images": 100, "data_seconds": 0.5,
               "compute_seconds": 1.5},
              {"epoch": 3, "warmup": False, "train_images": 100, "data_seconds": 0.5,
               "compute_seconds": 1.5}]
    figures = throughput(curves)
    assert figures["train_images_per_s"] == 50.0  # 200 images in 4 s, epoch 1 left out
    assert figures["train_images_per_s_epochs"] == [2, 3]
    assert figures["train_images_per_s_all"] == 21.43  # 300 / 14
    assert figures["data_fraction"] == pytest.approx(2 / 14, abs=1e-4)
    one = throughput(curves[:1])  # one epoch: nothing to leave out
    assert one["train_images_per_s"] == 10.0 and one["train_images_per_s_epochs"] == [1]


def test_a_resumed_run_counts_its_first_epoch_as_warmup(tmp_path):
    from pipeline.classify import training as stage
    from pipeline.config import load_params
    from tests.conftest import write_params

    params = load_params(write_params(tmp_path / "params.yaml", epochs=3))
    gen = torch.Generator().manual_seed(0)
    images, val_images = torch.rand(16, 1, 32, 32, generator=gen), torch.rand(8, 1, 32, 32)
    labels, val_labels = np.arange(16) % 2, np.arange(8) % 2
    args = ("mobilenet_v3_small", images, labels, val_images, val_labels, params,
            torch.device("cpu"), tmp_path / "ckpt")
    stage.train_classifier(*args, stop_after_epoch=1)
    result = stage.train_classifier(*args)
    assert [row["warmup"] for row in result["curves"]] == [True, True, False]
    metrics = result["metrics"]
    assert metrics["train_images_per_s_epochs"] == [3]
    assert metrics["train_images_on"] == "host"
    assert 0 <= metrics["data_fraction"] < 1
    assert all(row["data_seconds"] > 0 and row["compute_seconds"] > 0
               for row in result["curves"])


def _rows_file(tmp_path, count=50, size=4):
    rows = np.random.default_rng(0).integers(0, 65536, (count, 1, size, size), dtype=np.uint16)
    save_array_atomic(tmp_path / "train_images.npy", rows)
    return rows, CacheRowsOnDisk(tmp_path / "train_images.npy")


def test_rows_read_from_disk_batch_by_batch_are_the_rows_in_memory(tmp_path):
    """The training stage reads its set a batch at a time (CacheRowsOnDisk): every epoch's
    batches are those of the set held in memory, value for value, including uint16 values
    above 32767 (the int16 bits must come back as the same floats)."""
    rows, on_disk = _rows_file(tmp_path)
    labels = torch.arange(50) % 2
    in_memory = training_batches(cache_rows(rows), labels, 8, 1, torch.device("cpu"))
    streamed = training_batches(on_disk, labels, 8, 1, torch.device("cpu"))
    assert streamed.placement == "host" and len(streamed) == len(in_memory) == 6
    for epoch in range(2):
        for a, b in zip(in_memory.epoch_indices(epoch), streamed.epoch_indices(epoch),
                        strict=True):
            (x, y), (x2, y2) = in_memory.gather(a, torch.device("cpu")), \
                streamed.gather(b, torch.device("cpu"))
            assert x2.dtype == torch.float32 and torch.equal(x, x2) and torch.equal(y, y2)
    assert torch.equal(on_disk.to(torch.device("cpu")), cache_rows(rows))
    assert (rows > 32767).any()


def test_rows_on_disk_are_read_in_any_order_and_refuse_what_is_not_a_plain_array(tmp_path):
    rows, _ = _rows_file(tmp_path, count=7)
    reader = NpyRows(tmp_path / "train_images.npy")
    assert np.array_equal(reader.read([6, 0, 0, 3]), rows[[6, 0, 0, 3]])
    assert reader.read([]).shape == (0, 1, 4, 4)
    assert np.array_equal(np.concatenate(list(reader.chunks(3))), rows)
    with pytest.raises(IndexError):
        reader.read([7])
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes((tmp_path / "train_images.npy").read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated or altered"):
        NpyRows(truncated)
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="plain numbers"):
        NpyRows(pickled)
    (tmp_path / "text.npy").write_text("not an array")
    with pytest.raises(ValueError, match="not an array file"):
        NpyRows(tmp_path / "text.npy")
    np.save(tmp_path / "float.npy", np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="uint16 cache rows"):
        CacheRowsOnDisk(tmp_path / "float.npy")


@pytest.mark.parametrize("nbytes,cache,on_device", [
    (29, "auto", True),    # under 30% of the 100 bytes free
    (30, "auto", False),   # at the share: streamed, the rest is the model's
    (10 ** 9, True, True),  # asked for, whatever the size
    (1, False, False),      # asked not to, however small
])
def test_training_images_go_on_the_gpu_only_within_their_share_of_free_memory(
        nbytes, cache, on_device):
    """classifier.cache_on_device: auto caches the training set on the GPU only when it
    takes under DEVICE_SHARE of the free memory (issue 30), true and false as set."""
    assert DEVICE_SHARE == 0.3  # the share the README and docs state
    assert caches_on_device(nbytes, 100, cache) is on_device
