"""The classifier's training loop: same numbers as before its split into functions, no warnings."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import train_classifier as stage
from pipeline.common import save_array_atomic
from pipeline.config import load_params
from tests.conftest import write_params

# Recorded from the loop before its rewrite (one 150-line train_classifier) at commit
# 6b23ad08a07df6f77afd21375e79d9c71a3a570e, on CPU with one torch thread, torch 2.14.1.
# Both best_state digests (sha256 over sorted keys and raw bytes, first 16 hex digits) were
# reproduced bit for bit by the rewrite: plain 543d09a49f6095d6, online e87f985065d518bc.
# The test compares figures with a tolerance instead of the digest because CPU kernels
# differ across instruction sets and thread counts (two threads already move the loss in
# the fourth decimal), so the digest is only stable on one machine.
RECORDED = {
    "plain": {"train_loss": [0.7707224289576212, 0.15537418921788534],
              "val_auc": [0.5, 0.5],
              "val_loss": [0.6932154605672699, 0.6934934954736894],
              "best_epoch": 1,
              "weights_sum": 11066.105041243532, "weights_sum_squares": 22180.320611662846},
    "online": {"train_loss": [0.5968501965204874, 0.64190873503685],
               "val_auc": [0.16666666666666666, 0.34722222222222227],
               "val_loss": [0.69318394905572, 0.6936010435768264],
               "best_epoch": 2,
               "weights_sum": 10496.25956658955, "weights_sum_squares": 21555.19949960868},
}
OVERRIDES = {"plain": {},
             "online": {"augment": {"online": True}, "classifier": {"label_smoothing": 0.1}}}


def _recorded_data():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(24, 1, 32, 32, generator=gen) * 0.3
    val_images = torch.rand(12, 1, 32, 32, generator=gen) * 0.3
    labels, val_labels = np.arange(24) % 2, np.arange(12) % 2
    images[labels == 1, :, 8:24, 8:24] += 0.6  # the positive class has a bright square
    val_images[val_labels == 1, :, 8:24, 8:24] += 0.6
    return images, labels, val_images, val_labels


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the figures were recorded with one thread
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_loop_reproduces_the_figures_recorded_before_the_rewrite(case, tmp_path, one_thread):
    params = load_params(write_params(tmp_path / "params.yaml", epochs=2, lr=0.003,
                                      **OVERRIDES[case]))
    images, labels, val_images, val_labels = _recorded_data()
    result = stage.train_classifier("mobilenet_v3_small", images, labels, val_images,
                                    val_labels, params, torch.device("cpu"), tmp_path / "ckpt")
    expected = RECORDED[case]
    for key in ("train_loss", "val_auc", "val_loss"):
        assert [row[key] for row in result["curves"]] == pytest.approx(expected[key], rel=1e-6)
    assert result["metrics"]["best_epoch"] == expected["best_epoch"]
    weights = [v.double() for v in result["best_state"].values() if v.is_floating_point()]
    assert float(sum(v.sum() for v in weights)) == pytest.approx(expected["weights_sum"],
                                                                 rel=1e-6)
    assert float(sum(v.square().sum() for v in weights)) == pytest.approx(
        expected["weights_sum_squares"], rel=1e-6)


def test_stage_hands_torch_only_writable_arrays(tmp_path, monkeypatch):
    """pandas' .to_numpy() is read-only (copy-on-write); torch.from_numpy warns on those."""
    params_file = write_params(tmp_path / "params.yaml", classifier={"input": "raw"})
    rng = np.random.default_rng(0)
    rows = []
    for index in range(24):
        save_array_atomic(tmp_path / "crops" / f"c{index:02d}.npy",
                          rng.integers(0, 65535, (1, 32, 32), dtype=np.uint16))
        rows.append({"crop_id": f"c{index:02d}", "group": f"g{index // 2}", "label": index % 2,
                     "split": "val" if index < 8 else "train"})
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "split.csv", index=False)
    train = frame[frame["split"] == "train"]
    save_array_atomic(tmp_path / "aug" / "train_images.npy",
                      rng.integers(0, 65535, (len(train), 1, 32, 32), dtype=np.uint16))
    train[["crop_id", "label"]].to_csv(tmp_path / "aug" / "train_index.csv", index=False)

    from_numpy = torch.from_numpy

    def writable_only(array):
        assert array.flags.writeable, "a read-only array reached torch.from_numpy"
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", writable_only)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", [
        "train_classifier", "--backbone", "mobilenet_v3_small", "--augmented",
        str(tmp_path / "aug"), "--split", str(tmp_path / "split.csv"), "--crops",
        str(tmp_path / "crops"), "--sr", str(tmp_path / "no_sr"), "--model",
        str(out / "model.pt"), "--checkpoints", str(out / "ckpt"), "--metrics",
        str(out / "metrics.json"), "--curves", str(out / "curves.csv"), "--params",
        str(params_file)])
    stage.main()
    assert (out / "model.pt").is_file()
    assert pd.read_csv(out / "curves.csv")["epoch"].tolist() == [1]
