"""Two processes with the gloo backend on CPU (torchrun), through the params switch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.io import save_array_atomic
from tests.conftest import REPO, square_crops, write_params
from tests.test_sr import make_pairs

# slow: torchrun launches two ranks per run, about 90 s in all on 2 cores
pytestmark = pytest.mark.slow


def _launch(module: str, args: list[str], log_dir: Path) -> None:
    # As DVC runs the stage: one process, which hands itself to torchrun when
    # distributed.nproc > 1; torchrun's per-rank logs go to log_dir.
    command = [sys.executable, "-m", module, *args]
    env = {"OMP_NUM_THREADS": "1", "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
           "TORCHELASTIC_ERROR_FILE": str(log_dir / "error.json"),
           "HOME": str(log_dir)}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (log_dir / "out.txt").write_text(result.stdout + result.stderr)


def test_classifier_two_ranks_gloo(tmp_path):
    params_file = write_params(tmp_path / "params.yaml", epochs=3, lr=0.003, batch_size=8,
                               classifier={"input": "raw"}, distributed={"nproc": 2})
    crops, split_csv = square_crops(tmp_path, 64, lambda i: "val" if i < 16 else "train")
    aug = subprocess.run([sys.executable, "-m", "pipeline.stages.augment", "--split",
                          str(split_csv),
                          "--crops", str(crops), "--sr", str(tmp_path / "none"), "--out",
                          str(tmp_path / "aug"), "--metrics", str(tmp_path / "aug.json"),
                          "--params", str(params_file)], cwd=REPO, capture_output=True,
                         text=True)
    assert aug.returncode == 0, aug.stderr
    out = tmp_path / "out"
    out.mkdir()
    _launch("pipeline.stages.train_classifier", [
        "--backbone", "mobilenet_v3_small", "--augmented", str(tmp_path / "aug"), "--split",
        str(split_csv), "--crops", str(crops), "--sr", str(tmp_path / "none"), "--model-dir",
        str(out / "models"), "--checkpoints", str(out / "ckpt"), "--metrics",
        str(out / "metrics.json"), "--curves", str(out / "curves.csv"), "--environment",
        str(out / "environment.json"), "--params", str(params_file)], tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    digests = metrics["replica_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # replicas identical
    curves = pd.read_csv(out / "curves.csv")
    assert curves["train_loss"].iloc[-1] < curves["train_loss"].iloc[0]  # loss falls
    log = (tmp_path / "out.txt").read_text()
    assert "rank 1: training done; rank 0 writes the outputs" in log
    assert log.count("mobilenet_v3_small: best epoch") == 1  # only rank 0 wrote and reported
    assert sorted(p.name for p in out.iterdir()) == ["ckpt", "curves.csv", "environment.json",
                                                     "metrics.json", "models"]
    saved = torch.load(out / "models" / "model.pt", weights_only=True)
    assert saved["backbone"] == "mobilenet_v3_small"


def test_sr_two_ranks_gloo(tmp_path):
    params_file = write_params(tmp_path / "params.yaml", distributed={"nproc": 2},
                               sr={"batch_size": 4, "iters_psnr": 8, "iters_gan": 4,
                                   "val_every": 4})
    pairs = tmp_path / "pairs"
    for name, array in make_pairs(4, n=8).items():
        save_array_atomic(pairs / f"{name}.npy", array)
    out = tmp_path / "out"
    _launch("pipeline.stages.train_sr", [
        "--pairs", str(pairs), "--model-dir", str(out), "--checkpoints",
        str(out / "ckpt"), "--metrics", str(out / "m.json"), "--curves",
        str(out / "curves.csv"), "--samples", str(out / "s.png"), "--params",
        str(params_file)], tmp_path)
    metrics = json.loads((out / "m.json").read_text())
    assert metrics["world_size"] == 2 and metrics["iterations"] == 12
    digests = metrics["replica_weight_digests"]
    assert digests[0] == digests[1]
    curves = pd.read_csv(out / "curves.csv")
    assert curves["loss_pixel"].iloc[1] < curves["loss_pixel"].iloc[0]
    log = (tmp_path / "out.txt").read_text()
    assert "rank 1: training done; rank 0 writes the outputs" in log
    assert log.count("SR (validation") == 1


# One rank's loss is non-finite, the other's is not (DDP has already averaged the NaN
# gradients into both): each rank prints whether it stopped.
NONFINITE_ON_ONE_RANK = """
import sys, types
import torch, torch.distributed as dist
from pipeline.cli import PipelineError
from pipeline.runtime.distributed import DistContext
from pipeline.sr.steps import raise_if_nonfinite
rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method="file://" + sys.argv[2], rank=rank, world_size=2)
run = types.SimpleNamespace(nonfinite={"loss_pixel": torch.tensor(rank == 1),
                                       "loss_gan": torch.tensor(False)},
                            checked_at=8, iteration=12)
try:
    raise_if_nonfinite(run, DistContext(rank, 2, rank))
    print("went on")
except PipelineError as error:
    print("stopped:", error)
dist.destroy_process_group()
"""


def test_a_nonfinite_loss_on_one_rank_stops_every_rank_before_a_checkpoint(tmp_path):
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    ranks = [subprocess.Popen([sys.executable, "-c", NONFINITE_ON_ONE_RANK, str(rank),
                               str(tmp_path / "rendezvous")], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [rank.communicate(timeout=120) for rank in ranks]
    for stdout, stderr in outputs:
        assert "stopped: non-finite loss_pixel in iterations 9-12" in stdout, stderr[-2000:]
