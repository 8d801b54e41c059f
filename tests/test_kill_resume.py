"""SIGKILL a training stage the moment its first checkpoint appears, rerun, compare.

The kill is tied to an event (the checkpoint file), not to a delay, so a fast machine
cannot finish the run before it; the test then checks that the run was in fact cut off
mid-training. The rerun must continue from the checkpoint, finish with the same number
of steps and, on CPU, produce exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.io import save_array_atomic
from tests.conftest import REPO, square_crops, write_params
from tests.test_sr import make_pairs

# slow: two training runs each, about two minutes in all on 2 cores
pytestmark = pytest.mark.slow


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _kill_at_first_checkpoint(process: subprocess.Popen, folder: Path) -> None:
    """SIGKILL `process` as soon as a checkpoint file shows in `folder`."""
    deadline = time.time() + 240
    while not list(folder.glob("*.pt")):
        assert process.poll() is None, f"stage ended before its first checkpoint:\n" \
                                       f"{process.stdout.read()}"
        assert time.time() < deadline, "no checkpoint within 240 s"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the stage had ended before the kill"


def _resumed_from(output: str, pattern: str) -> int:
    """The iteration or epoch a rerun says it resumed from (the console may wrap the line)."""
    found = re.search(pattern, output, flags=re.DOTALL)
    assert found, f"no resume message in:\n{output}"
    return int(found.group(1))


def _run(args: list[str]) -> str:
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_train_sr_sigkill_and_resume(tmp_path):
    # Many short steps after the first checkpoint (iteration 5): the kill lands long
    # before the end on any machine.
    params_file = write_params(tmp_path / "params.yaml", sr={
        "iters_psnr": 160, "iters_gan": 40, "checkpoint_every": 5, "val_every": 40})
    pairs_dir = tmp_path / "pairs"
    for name, array in make_pairs(4, n=8).items():
        save_array_atomic(pairs_dir / f"{name}.npy", array)

    def args(run: str) -> list[str]:
        out = tmp_path / run
        return ["pipeline.stages.train_sr", "--pairs", str(pairs_dir), "--model-dir", str(out),
                "--checkpoints", str(out / "ckpt"), "--metrics", str(out / "m.json"),
                "--curves", str(out / "curves.csv"), "--samples", str(out / "s.png"),
                "--params", str(params_file)]

    _run(args("straight"))
    process = _start(args("killed"))
    _kill_at_first_checkpoint(process, tmp_path / "killed" / "ckpt")
    assert not (tmp_path / "killed" / "generator.pt").exists()
    output = _run(args("killed"))
    # Resumed mid-training: at a checkpoint past the first, before the last of 200 iterations.
    resumed_iteration = _resumed_from(output, r"resuming SR training.*?iteration\s+(\d+)")
    assert 5 <= resumed_iteration < 200, output
    straight = torch.load(tmp_path / "straight" / "generator.pt", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "killed" / "generator.pt", weights_only=True)["model"]
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], msg=key)
    curves = pd.read_csv(tmp_path / "killed" / "curves.csv")
    assert curves["iteration"].tolist() == [40, 80, 120, 160, 200]
    # Finished: the training checkpoint became the compact finished record (no optimiser).
    (record,) = (tmp_path / "killed" / "ckpt").glob("*.pt")
    finished = torch.load(record, weights_only=True)
    assert finished["finished"] and "optimizers" not in finished


def test_train_classifier_sigkill_and_resume(tmp_path):
    params_file = write_params(tmp_path / "params.yaml", epochs=4,
                               classifier={"input": "raw"})
    crops, split_csv = square_crops(
        tmp_path, 48, lambda i: ("train", "train", "val", "test")[i % 4] if i >= 8 else "val")
    _run(["pipeline.stages.augment", "--split", str(split_csv), "--crops", str(crops), "--sr",
          str(tmp_path / "no_sr"), "--out", str(tmp_path / "aug"), "--metrics",
          str(tmp_path / "aug.json"), "--params", str(params_file)])

    def args(run: str) -> list[str]:
        out = tmp_path / run
        return ["pipeline.stages.train_classifier", "--backbone", "mobilenet_v3_small",
                "--augmented",
                str(tmp_path / "aug"), "--split", str(split_csv), "--crops", str(crops), "--sr",
                str(tmp_path / "no_sr"), "--model-dir", str(out / "models"), "--checkpoints",
                str(out / "ckpt"), "--metrics", str(out / "m.json"), "--curves",
                str(out / "curves.csv"), "--params", str(params_file)]

    _run(args("straight"))
    process = _start(args("killed"))
    _kill_at_first_checkpoint(process, tmp_path / "killed" / "ckpt")
    output = _run(args("killed"))
    # Resumed mid-training: after the first checkpointed epoch, before the last of 4.
    resumed_epoch = _resumed_from(output, r"resuming mobilenet_v3_small.*?epoch\s+(\d+)")
    assert resumed_epoch in (1, 2, 3), output
    straight = torch.load(tmp_path / "straight" / "models" / "model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "models" / "model.pt", weights_only=True)
    assert resumed["best_epoch"] == straight["best_epoch"]
    for key in straight["model"]:
        torch.testing.assert_close(resumed["model"][key], straight["model"][key], msg=key)
    assert pd.read_csv(tmp_path / "killed" / "curves.csv")["epoch"].tolist() == [1, 2, 3, 4]
