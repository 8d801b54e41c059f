"""A researcher's own crops as microscopes write them: camera bit depths, float and RGB
exports, small crops through SR training (issue: formats that never mislead)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from pipeline.cli import PipelineError
from pipeline.config import ParamsError, load_params
from pipeline.data.image_files import BadImageError, read_crop
from pipeline.data.images import from_uint16
from pipeline.data.ingest import ingest_crops
from pipeline.data.split import split_groups
from pipeline.io import load_array
from pipeline.sr.pairs import make_lr_hr_pairs
from pipeline.sr.training import train_sr
from tests.conftest import write_crop, write_params


def _camera_crops(root, size=32, peak=4095, dtype=np.uint16, groups=6):
    """A raw folder of `groups` samples per class, each crop's brightest pixel at `peak`."""
    rng = np.random.default_rng(0)
    for class_name in ("ALS", "Control"):
        for group in range(groups):
            for crop in range(2):
                image = rng.uniform(0.1, 0.5, (size, size)) * peak
                image[size // 4:size // 2, size // 4:size // 2] = peak
                write_crop(root / class_name / f"{class_name[:2]}{group:03d}_1_crops_r" /
                           f"{crop}.tif", image.astype(dtype))
    return root


def _data(tmp_path, **data):
    return load_params(write_params(tmp_path / "params.yaml",
                                    data={"crop_size": 32, **data})).data


def test_twelve_bit_camera_data_in_16_bit_tiffs_reaches_full_range(tmp_path):
    raw = _camera_crops(tmp_path / "raw", peak=4095)
    result = ingest_crops(raw, tmp_path / "out" / "crops", _data(tmp_path))
    assert result.metrics["bit_depth"] == 12
    assert result.metrics["bit_depth_source"] == "largest value in the data (4095)"
    first = from_uint16(load_array(tmp_path / "out" / "crops" / "c000000.npy"))
    assert first.max() == pytest.approx(1.0)  # not 4095 / 65535 = 0.062
    # declared 16 bits keeps the old scaling, and says what it did
    as_16 = ingest_crops(raw, tmp_path / "out16" / "crops", _data(tmp_path, bit_depth=16))
    assert as_16.metrics["bit_depth"] == 16 and as_16.metrics["bit_depth_source"] == \
        "data.bit_depth"
    assert from_uint16(load_array(tmp_path / "out16" / "crops" / "c000000.npy")).max() == \
        pytest.approx(4095 / 65535, abs=1e-4)


def test_a_value_above_the_declared_bit_depth_is_named(tmp_path):
    path = write_crop(tmp_path / "c.tif", np.full((8, 8), 5000, np.uint16) - np.eye(8,
                                                                               dtype=np.uint16))
    with pytest.raises(BadImageError, match="above the 12-bit full scale 4095"):
        read_crop(path, bit_depth=12)


def test_a_tiff_tagged_with_fewer_bits_than_its_container_gives_its_tag(tmp_path):
    from pipeline.data.image_files import resolve_bit_depth

    assert resolve_bit_depth([(16, 900, 12), (16, 1200, 12)]) == (12, "TIFF BitsPerSample tag")
    assert resolve_bit_depth([(16, 900, 16), (16, 16000, 16)])[0] == 14
    assert resolve_bit_depth([(8, 255, 8)]) == (8, "8-bit files")


def test_green_lut_rgb_export_needs_a_channel_and_gets_it(tmp_path):
    grey = (np.random.default_rng(1).uniform(0, 200, (16, 16))).astype(np.uint8)
    rgb = np.dstack([np.zeros_like(grey), grey, np.zeros_like(grey)])  # Fiji, green LUT
    path = write_crop(tmp_path / "fiji.tif", rgb)
    with pytest.raises(BadImageError, match="data.channel: r | g | b | max"):
        read_crop(path)
    green, _ = read_crop(path, channel="g")
    assert np.allclose(green, grey / 255.0)
    assert np.allclose(read_crop(path, channel="max")[0], grey / 255.0)
    # slightly off grey: max keeps the signal
    near = np.dstack([grey, np.clip(grey.astype(int) + 1, 0, 255).astype(np.uint8), grey])
    near_path = write_crop(tmp_path / "near.png", near)
    with pytest.raises(BadImageError, match="channels differ"):
        read_crop(near_path)
    assert read_crop(near_path, channel="max")[0].max() == pytest.approx(near.max() / 255)


def test_float_tiffs_are_scaled_by_the_declared_range_not_per_image(tmp_path):
    dim = np.linspace(0, 250, 256, dtype=np.float32).reshape(16, 16)
    bright = dim * 4  # up to 1000
    write_crop(tmp_path / "dim.tif", dim)  # Pillow mode F: a 32-bit float TIFF
    write_crop(tmp_path / "bright.tif", bright)
    with pytest.raises(BadImageError, match=r"outside data.float_range \[0, 1\]"):
        read_crop(tmp_path / "bright.tif")
    low, _ = read_crop(tmp_path / "dim.tif", float_range=[0.0, 1000.0])
    high, _ = read_crop(tmp_path / "bright.tif", float_range=[0.0, 1000.0])
    assert high.max() == pytest.approx(1.0) and low.max() == pytest.approx(0.25)


def test_64_px_crops_go_through_sr_training_with_the_unet_discriminator(tmp_path):
    params = load_params(write_params(
        tmp_path / "params.yaml", data={"crop_size": 64},
        sr={"hr_patch": 64, "discriminator": "unet", "iters_psnr": 2, "iters_gan": 2,
            "val_every": 2, "checkpoint_every": 2}))
    raw = _camera_crops(tmp_path / "raw", size=64, peak=255, dtype=np.uint8)
    result = ingest_crops(raw, tmp_path / "ingested" / "crops", params.data)
    frame = split_groups(result.manifest, params.split, params.seed).merge(
        result.manifest[["crop_id", "levels"]], on="crop_id")
    pairs = make_lr_hr_pairs(tmp_path / "ingested" / "crops", frame, params.sr, params.seed)
    assert pairs["train_hr"].shape[-1] == 64 and pairs["train_lr"].shape[-1] == 16
    trained = train_sr(pairs, params.sr, torch.device("cpu"), 0, tmp_path / "checkpoints")
    assert trained["metrics"]["discriminator"] == "unet"
    assert np.isfinite(trained["metrics"]["psnr"])
    # ESRGAN's own discriminator refuses the size with a pointer to the one that takes it
    with pytest.raises(ParamsError, match="unet"):
        dataclasses.replace(params.sr, discriminator="vgg").validate()


def test_jpegs_among_tiffs_are_counted_not_silently_dropped(tmp_path):
    raw = _camera_crops(tmp_path / "raw", peak=255, dtype=np.uint8)
    for index in range(2):
        (raw / "ALS" / "AL000_1_crops_r" / f"x{index}.jpg").write_bytes(b"\xff\xd8\xff")
    result = ingest_crops(raw, tmp_path / "out" / "crops", _data(tmp_path))
    assert result.metrics["ignored_files"] == 2
    assert result.metrics["ignored_extensions"] == "2 .jpg"


def test_an_unknown_channel_or_bit_depth_is_a_params_error(tmp_path):
    with pytest.raises(ParamsError, match="data.channel"):
        _data(tmp_path, channel=-1)
    with pytest.raises(ParamsError, match="data.z_project"):
        _data(tmp_path, z_project="sum")
    with pytest.raises(ParamsError, match="data.bit_depth"):
        _data(tmp_path, bit_depth=11)


def test_a_folder_without_the_crops_suffix_gets_a_working_override(tmp_path):
    raw = _camera_crops(tmp_path / "raw", peak=255, dtype=np.uint8)
    (raw / "ALS" / "AL000_1_crops_r").rename(raw / "ALS" / "patient7")
    with pytest.raises(PipelineError) as caught:
        ingest_crops(raw, tmp_path / "out" / "crops", _data(tmp_path))
    message = str(caught.value)
    assert r"^(?P<group>.+?)_crops\d*_r$" in message  # the regex as written, not repr'd
    assert "\\\\d" not in message
    assert """dvc exp run -S "data.group_regex='^(?P<group>.+)$'\"""" in message


def test_run_demo_refuses_outside_the_project_root(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    result = subprocess.run([sys.executable, "-m", "pipeline.tools.run_demo"],
                            cwd=REPO / "pipeline",
                            capture_output=True, text=True,
                            env=os.environ | {"PYTHONPATH": str(REPO)})
    said = result.stdout + result.stderr
    assert result.returncode == 2 and "run this from the project's root folder" in said
    assert "Stage times" not in said and "cached" not in said


def test_run_demo_passes_dvc_options_through():
    """The README's `run_demo exp run -S lr=0.0005`: dvc's options are dvc's, not argparse
    errors; gpu_profile.sh's `--timeline T -- exp run ...` means the same."""
    from pipeline.tools.run_demo import parse_arguments

    assert parse_arguments([]).dvc_args == ["repro"]
    assert parse_arguments(["exp", "run", "-S", "lr=0.0005"]).dvc_args == [
        "exp", "run", "-S", "lr=0.0005"]
    with_timeline = parse_arguments(["--timeline", "t.csv", "--", "exp", "run", "-S", "x=1"])
    assert with_timeline.dvc_args == ["exp", "run", "-S", "x=1"]
    assert str(with_timeline.timeline) == "t.csv"


@pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals are POSIX")
def test_run_demo_gives_dvc_a_terminal_when_it_has_one_and_still_times_the_stages(capsys):
    """On a terminal dvc writes to one (its stages' bars stay live, not a line per 10%), and
    the stage lines are still found, colours and bar redraws around them or not."""
    import sys

    from pipeline.tools.run_demo import run_and_time

    child = ("import os, sys, time\n"
             "print(\"Running stage 'a':\", flush=True)\n"
             "sys.stderr.write('\\x1b[1m 10%\\r 50%\\r'); sys.stderr.flush()\n"
             "print('terminal', os.isatty(1), os.isatty(2), flush=True)\n"
             "print(\"\\x1b[33mRunning stage 'b':\\x1b[0m\", flush=True)\n")
    code, timings, _ = run_and_time([sys.executable, "-c", child], terminal=True)
    out = capsys.readouterr().out
    assert code == 0 and [stage for stage, _ in timings] == ["a", "b"]
    assert "terminal True True" in out and " 50%\r" in out  # the bytes as the child wrote
    code, timings, _ = run_and_time([sys.executable, "-c", child], terminal=False)
    assert code == 0 and "terminal False False" in capsys.readouterr().out
    assert [stage for stage, _ in timings] == ["a"]  # piped, dvc writes no colours to strip


def test_ingest_names_the_file_brighter_than_the_declared_depth_and_the_fix(tmp_path):
    raw = _camera_crops(tmp_path / "raw", peak=4095)
    with pytest.raises(PipelineError, match=r"0\.tif: has values up to 4095, above the 10-bit "
                                            r"full scale 1023 .*set data.bit_depth"):
        ingest_crops(raw, tmp_path / "out" / "crops", _data(tmp_path, bit_depth=10))
