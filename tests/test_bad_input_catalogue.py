"""The bad-input catalogue: each case through the stage's own command line, on a project
whose earlier outputs exist. Each must exit non-zero with one line naming the culprit, no
traceback, and leave every earlier output byte-for-byte intact.

Run with `pytest -m slow -s tests/test_bad_input_catalogue.py` to see the table.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from tests.conftest import REPO, blob, write_crop, write_params
from tests.test_classifier import TouchOnUnpickle

pytestmark = pytest.mark.slow


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def stage(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, env=os.environ | {"COLUMNS": "200"})


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Tiny real outputs: demo raw data, ingest, split, pairs (the earlier outputs)."""
    root = tmp_path_factory.mktemp("catalogue")
    params = write_params(root / "params.yaml")
    raw = root / "raw"
    for args in (("pipeline.stages.make_demo", "--out", str(raw), "--metrics",
                  str(root / "demo.json")),
                 ("pipeline.stages.ingest", "--raw-dir", str(raw), "--out", str(root / "ingested"),
                  "--metrics", str(root / "ingest.json"), "--report", str(root / "bad.csv")),
                 ("pipeline.stages.split", "--manifest", str(root / "ingested" / "manifest.csv"),
                  "--out", str(root / "split.csv"), "--folds", str(root / "folds.csv"),
                  "--metrics", str(root / "split.json"))):
        result = stage(*args, "--params", str(params))
        assert result.returncode == 0, result.stderr
    return root


def ingest_args(root: Path, raw: Path, params: Path) -> list[str]:
    return ["pipeline.stages.ingest", "--raw-dir", str(raw), "--out", str(root / "ingested"),
            "--metrics", str(root / "ingest.json"), "--report", str(root / "bad.csv"),
            "--params", str(params)]


def _raw_copy(project: Path, tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(project / "raw", raw)
    return raw


def _first_sample(raw: Path, class_name: str = "Control") -> Path:
    return sorted((raw / class_name).iterdir())[0]


def _truncated(path: Path) -> None:
    write_crop(path, blob(), compression="tiff_lzw")
    path.write_bytes(path.read_bytes()[:200])


def _stack(count: int) -> np.ndarray:
    return np.stack([blob(32, seed=seed) for seed in range(count)])


def _two_channel_ome(path: Path) -> None:
    tifffile.imwrite(path, _stack(2), ome=True, photometric="minisblack",
                     metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "TDP-43"]}})


def _truncated_hyperstack(path: Path) -> None:
    tifffile.imwrite(path, _stack(6).reshape(3, 2, 32, 32), imagej=True,
                     metadata={"axes": "ZCYX"})
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


# Each bad file at the project's crop size (32 px), so the check that fires is the one the
# case is about; the symlink's target is 128 px: the size pass must not open it either.
RAW_CASES = {
    "corrupt TIFF": lambda raw: (_first_sample(raw) / "bad.tif").write_bytes(b"II*\x00junk" * 9),
    "truncated TIFF": lambda raw: _truncated(_first_sample(raw) / "cut.tif"),
    "PNG with alpha": lambda raw: write_crop(_first_sample(raw) / "alpha.png",
                                             np.dstack([blob(32)] * 4)),
    "3-channel colour crop": lambda raw: write_crop(
        _first_sample(raw) / "rgb.png", np.dstack([blob(32, seed=seed) for seed in (1, 2, 3)])),
    "NaN image": lambda raw: write_crop(_first_sample(raw) / "nan.tif",
                                        np.full((32, 32), np.nan, np.float32)),
    "all-constant image": lambda raw: write_crop(_first_sample(raw) / "flat.tif",
                                                 np.zeros((32, 32), np.uint8)),
    "single class": lambda raw: shutil.rmtree(raw / "Control"),
    "2-channel OME-TIFF": lambda raw: _two_channel_ome(_first_sample(raw) / "two.ome.tif"),
    "z-stack TIFF": lambda raw: tifffile.imwrite(_first_sample(raw) / "z.tif", _stack(3),
                                                 imagej=True, metadata={"axes": "ZYX"}),
    "truncated multi-page TIFF": lambda raw: _truncated_hyperstack(_first_sample(raw) / "h.tif"),
    "empty sample folder": lambda raw: (raw / "ALS" / "SD999_99_crops_r").mkdir(),
    "symlink outside the raw folder": lambda raw: os.symlink(
        write_crop(raw.parent / "outside.tif", blob()), _first_sample(raw) / "link.tif"),
}

PARAM_CASES = {
    "unknown backbone": ("classifier", "backbones", ["resnet51"]),
    "sr.scale not 2 or 4": ("sr", "scale", 3),
    "zero lr": (None, "lr", 0),
    "negative lr": (None, "lr", -0.001),
    "typo in a params key": (None, "batch_sise", 16),
    "a channel name the files lack": ("data", "channel", "TDP-43"),
    "an unknown z projection": ("data", "z_project", "sum"),
    "crops smaller than the SR patch": ("sr", "hr_patch", 64),
    "hr input without an acquisition": ("classifier", "input", "hr"),
    "VGG discriminator on a 32 px patch": ("sr", "discriminator", "vgg"),
}

TABLE: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def print_catalogue():
    """After the module's tests, in whatever order or subset they ran, print the table
    (visible with -s); no test depends on another having filled it."""
    yield
    print("\n| bad input | message (one line) | earlier outputs |\n|---|---|---|")
    for name, message, state in TABLE:
        print(f"| {name} | {message.replace('|', '/')} | {state} |")


def _check_failure(result, before, project, name, culprit):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, f"{name}: exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert culprit in errors[0], errors[0]
    intact = snapshot(project) == before
    assert intact, f"{name}: earlier outputs changed"
    TABLE.append((name, errors[0][len("error: "):], "intact" if intact else "CHANGED"))


@pytest.mark.parametrize("name", sorted(RAW_CASES))
def test_bad_raw_input(project, tmp_path, name):
    raw = _raw_copy(project, tmp_path)
    RAW_CASES[name](raw)
    before = snapshot(project)
    result = stage(*ingest_args(project, raw, write_params(tmp_path / "p.yaml")))
    culprit = "raw" if name in ("single class",) else str(raw)
    _check_failure(result, before, project, name, culprit)


def test_names_with_spaces_and_non_ascii_work(project, tmp_path):
    raw = _raw_copy(project, tmp_path)
    sample = _first_sample(raw)
    shutil.copy(next(sample.glob("*.tif")), sample / "Zelle mit Leerzeichen é.tif")
    result = stage(*ingest_args(tmp_path, raw, write_params(tmp_path / "p.yaml")))
    assert result.returncode == 0, result.stderr
    TABLE.append(("file name with spaces / non-ASCII", "(accepted: ingested normally)", "n/a"))


@pytest.mark.parametrize("name", sorted(PARAM_CASES))
def test_bad_params(project, tmp_path, name):
    section, key, value = PARAM_CASES[name]
    params = write_params(tmp_path / "p.yaml")
    raw_params = yaml.safe_load(params.read_text())
    (raw_params[section] if section else raw_params)[key] = value
    params.write_text(yaml.safe_dump(raw_params))
    before = snapshot(project)
    result = stage(*ingest_args(project, project / "raw", params))
    culprit = {"hr_patch": "crop_size", "discriminator": "hr_patch"}.get(key, key)
    _check_failure(result, before, project, name, culprit)


def _classifier_args(project: Path, tmp_path: Path, params: Path) -> list[str]:
    return ["pipeline.stages.train_classifier", "--backbone", "mobilenet_v3_small", "--augmented",
            str(tmp_path / "aug"), "--split", str(project / "split.csv"), "--crops",
            str(project / "ingested" / "crops"), "--sr", str(tmp_path / "none"), "--model-dir",
            str(tmp_path / "models"), "--checkpoints", str(tmp_path / "ckpt"), "--metrics",
            str(tmp_path / "m.json"), "--curves", str(tmp_path / "c.csv"), "--params",
            str(params)]


@pytest.mark.parametrize("name", ["weights file that is not a state dict",
                                  "weights file needing arbitrary unpickling"])
def test_bad_weights_files(project, tmp_path, name):
    weights = tmp_path / "weights.pth"
    marker = tmp_path / "payload_ran"
    if "not a state dict" in name:
        torch.save({"epoch": 3, "note": "hello"}, weights)
    else:
        weights.write_bytes(pickle.dumps({"w": TouchOnUnpickle(marker)}))
    params = write_params(tmp_path / "p.yaml", classifier={"input": "raw",
                                                          "pretrained": str(weights)})
    result = stage("pipeline.stages.augment", "--split", str(project / "split.csv"), "--crops",
                   str(project / "ingested" / "crops"), "--sr", str(tmp_path / "none"),
                   "--out", str(tmp_path / "aug"), "--metrics", str(tmp_path / "a.json"),
                   "--params", str(params))
    assert result.returncode == 0, result.stderr
    before = snapshot(project)
    result = stage(*_classifier_args(project, tmp_path, params))
    _check_failure(result, before, project, name, "weights.pth")
    assert not marker.exists()


def test_sr_checkpoint_needing_unpickling_is_refused(project, tmp_path):
    from pipeline.config import load_params
    from pipeline.io import load_array
    from pipeline.runtime.checkpoints import checkpoint_path
    from pipeline.sr.training import training_config

    params_file = write_params(tmp_path / "p.yaml")
    params = load_params(params_file)
    result = stage("pipeline.stages.make_pairs", "--crops", str(project / "ingested" / "crops"),
                   "--split", str(project / "split.csv"), "--manifest",
                   str(project / "ingested" / "manifest.csv"), "--out", str(tmp_path / "pairs"),
                   "--params", str(params_file))
    assert result.returncode == 0, result.stderr
    pairs = {n: load_array(tmp_path / "pairs" / f"{n}.npy")
             for n in ("train_lr", "train_hr", "val_lr", "val_hr")}
    checkpoint = checkpoint_path(tmp_path / "ckpt", "sr",
                                 training_config(params.sr, params.seed, pairs))
    checkpoint.parent.mkdir()
    marker = tmp_path / "payload_ran"
    checkpoint.write_bytes(pickle.dumps({"config": TouchOnUnpickle(marker)}))
    before = snapshot(project)
    result = stage("pipeline.stages.train_sr", "--pairs", str(tmp_path / "pairs"), "--model-dir",
                   str(tmp_path / "models"), "--checkpoints", str(tmp_path / "ckpt"),
                   "--metrics", str(tmp_path / "m.json"), "--curves", str(tmp_path / "c.csv"),
                   "--samples", str(tmp_path / "s.png"), "--params", str(params_file))
    _check_failure(result, before, project, "SR checkpoint needing arbitrary unpickling",
                   checkpoint.name)
    assert not marker.exists()
