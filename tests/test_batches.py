"""Training batches without a DataLoader: same order as DataLoader, every image once per epoch,
and throughput figures that leave the warm-up epoch out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from pipeline.classify.batches import training_batches
from pipeline.classify.training import throughput


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
