import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from models.sr import VGGPerceptualLoss, build_generator
from pipeline.cli import PipelineError
from pipeline.sr.inference import upscale_tiled
from pipeline.sr.pairs import degrade, extract_patches
from pipeline.sr.training import train_sr


def make_pairs(scale: int, n: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:128, 0:128]
    hr = np.stack([np.exp(-((yy - rng.uniform(30, 98)) ** 2 + (xx - rng.uniform(30, 98)) ** 2)
                          / (2 * rng.uniform(8, 20) ** 2)) for _ in range(n)])
    hr = hr[:, None].astype(np.float32)
    lr = degrade(torch.from_numpy(hr), scale, 0.0, 0.0, torch.Generator().manual_seed(0))
    return {"train_hr": hr, "train_lr": lr.numpy(), "val_hr": hr[:2], "val_lr": lr[:2].numpy()}


@pytest.mark.parametrize("scale, precision, channels_last", [(2, "fp32", False),
                                                             (4, "bf16", True)])
def test_training_runs_at_scale_and_reports_metrics(params, tmp_path, scale, precision,
                                                    channels_last):
    sr_params = dataclasses.replace(params.sr, scale=scale, precision=precision,
                                    channels_last=channels_last)
    result = train_sr(make_pairs(scale), sr_params, torch.device("cpu"), 0, tmp_path)
    metrics = result["metrics"]
    for key in ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic", "psnr_phase1", "train_seconds"):
        assert np.isfinite(metrics[key]), key
    assert metrics["iterations"] == sr_params.iters_psnr + sr_params.iters_gan
    model = build_generator(scale, sr_params.num_feat, sr_params.num_block, sr_params.num_grow_ch,
                            sr_params.residual)
    model.load_state_dict(result["ema_state"])
    assert model(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16 * scale, 16 * scale)
    assert {row["phase"] for row in result["log"]} == {"psnr", "gan"}


def test_resume_after_interruption_matches_uninterrupted(params, tmp_path):
    pairs = make_pairs(4)
    sr_params = dataclasses.replace(params.sr, iters_psnr=4, iters_gan=4, checkpoint_every=2)
    straight = train_sr(pairs, sr_params, torch.device("cpu"), 0, tmp_path / "a")
    stopped = train_sr(pairs, sr_params, torch.device("cpu"), 0, tmp_path / "b", stop_after=6)
    assert stopped["metrics"] is None and stopped["checkpoint"].exists()
    resumed = train_sr(pairs, sr_params, torch.device("cpu"), 0, tmp_path / "b")
    assert resumed["iteration"] == straight["iteration"] == 8
    for key, value in straight["ema_state"].items():
        torch.testing.assert_close(resumed["ema_state"][key], value, msg=key)
    assert [r["iteration"] for r in resumed["log"]] == [r["iteration"] for r in straight["log"]]


def test_checkpoint_from_other_params_is_refused(params, tmp_path):
    pairs = make_pairs(4)
    stopped = train_sr(pairs, params.sr, torch.device("cpu"), 0, tmp_path, stop_after=2)
    foreign = torch.load(stopped["checkpoint"], weights_only=True)
    foreign["config"]["num_feat"] = 64
    torch.save(foreign, stopped["checkpoint"])
    with pytest.raises(PipelineError, match="other params .*num_feat"):
        train_sr(pairs, params.sr, torch.device("cpu"), 0, tmp_path)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(params, tmp_path):
    pairs = make_pairs(4)
    sr_params = dataclasses.replace(params.sr, iters_psnr=6, checkpoint_every=2)
    train_sr(pairs, sr_params, torch.device("cpu"), 0, tmp_path, stop_after=2)
    (checkpoint,) = tmp_path.glob("*.pt")
    saved = checkpoint.read_bytes()
    poisoned = dict(pairs)
    poisoned["train_hr"] = np.full_like(pairs["train_hr"], np.nan)
    # Poisoned data is another run (another fingerprint) in the same folder: it must stop
    # at its first check (before the first checkpoint, at iteration 2), write no checkpoint
    # of its own and leave the good one untouched.
    with pytest.raises(PipelineError, match="non-finite loss_pixel in iterations 1-2"):
        train_sr(poisoned, sr_params, torch.device("cpu"), 0, tmp_path)
    assert list(tmp_path.glob("*.pt")) == [checkpoint]
    assert checkpoint.read_bytes() == saved


def test_missing_vgg_weights_is_a_clear_error(params, tmp_path):
    sr_params = dataclasses.replace(params.sr, weight_perceptual=1.0,
                                    vgg_weights=str(tmp_path / "nowhere" / "vgg19.pth"))
    with pytest.raises(PipelineError, match="needs ImageNet VGG19 weights.*nowhere"):
        train_sr(make_pairs(4), sr_params, torch.device("cpu"), 0, tmp_path)


def test_perceptual_loss_loads_a_weights_file_the_test_wrote(tmp_path):
    from torchvision.models import vgg19

    torch.manual_seed(0)
    reference = vgg19(weights=None)
    path = tmp_path / "vgg19.pth"
    torch.save(reference.state_dict(), path)
    loss = VGGPerceptualLoss(path)
    torch.testing.assert_close(loss.features[0].weight, reference.features[0].weight)
    x = torch.rand(1, 1, 32, 32)
    assert loss(x, x).item() == 0.0 and loss(x, torch.rand(1, 1, 32, 32)).item() > 0


def test_perceptual_loss_refuses_a_pickled_object(tmp_path):
    import pickle

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"x": object()}))
    from models.weights import WeightsError

    with pytest.raises(WeightsError, match="weights_only"):
        VGGPerceptualLoss(path)


def test_patches_smaller_than_crops_are_refused():
    with pytest.raises(PipelineError, match="smaller than sr.hr_patch=128"):
        extract_patches(np.zeros((2, 1, 64, 64), np.float32), 128, 1, np.random.default_rng(0))


@pytest.mark.parametrize("scale", [2, 4])
def test_tiled_matches_untiled(scale):
    torch.manual_seed(0)
    model = build_generator(scale, 16, 2, 16).eval()
    image = torch.rand(2, 1, 96, 80)
    with torch.no_grad():
        full = model(image)
    tiled = upscale_tiled(model, image, scale, tile=48, overlap=16, batch=3)
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max().item() < 1e-3


class TileRecorder(nn.Module):
    """A x2 nearest-neighbour 'generator' with a 3x3 reach that records each tile it sees."""

    def __init__(self, scale: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.scale = scale
        self.largest_input = 0

    def forward(self, x):
        self.largest_input = max(self.largest_input, x.shape[-1] * x.shape[-2] * x.shape[0])
        return nn.functional.interpolate(self.conv(x), scale_factor=self.scale, mode="nearest")


def test_large_image_goes_through_with_model_memory_bounded_by_tile():
    model = TileRecorder(4)
    image = torch.rand(1, 1, 2048, 2048)
    out = upscale_tiled(model, image, 4, tile=128, overlap=8, batch=4)
    assert out.shape == (1, 1, 8192, 8192)
    assert model.largest_input <= 4 * 128 * 128
    with torch.no_grad():
        reference = model(image[..., :256, :256])
    torch.testing.assert_close(out[..., :900, :900], reference[..., :900, :900])


@settings(max_examples=30, deadline=None)
@given(height=st.integers(5, 90), width=st.integers(5, 90), tile=st.integers(12, 40),
       overlap_share=st.floats(0.1, 0.45), scale=st.sampled_from([2, 4]))
def test_tiling_property_any_size_tile_overlap(height, width, tile, overlap_share, scale):
    overlap = max(2, int(tile * overlap_share))
    if overlap >= tile // 2:
        overlap = tile // 2 - 1
    torch.manual_seed(0)
    model = TileRecorder(scale)
    image = torch.rand(1, 1, height, width)
    # x2 RRDBNet needs even sizes, so odd images are replicate-padded before the model in
    # both paths; the untiled reference does the same.
    padded = nn.functional.pad(image, (0, width % 2, 0, height % 2), mode="replicate") \
        if scale == 2 else image
    with torch.no_grad():
        full = model(padded)[..., :height * scale, :width * scale]
    tiled = upscale_tiled(model, image, scale, tile=tile, overlap=overlap)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=0)


def test_steady_step_time_leaves_each_phases_first_interval_out():
    from pipeline.sr.training import seconds_per_iteration

    log = [{"iteration": 10, "phase": "psnr", "train_seconds": 9.0},   # warm-up inside
           {"iteration": 20, "phase": "psnr", "train_seconds": 10.0},
           {"iteration": 30, "phase": "psnr", "train_seconds": 11.0},
           {"iteration": 40, "phase": "gan", "train_seconds": 20.0},   # D's first steps
           {"iteration": 50, "phase": "gan", "train_seconds": 22.0},
           {"iteration": 60, "phase": "gan", "train_seconds": 24.0}]
    rates = seconds_per_iteration(log)
    assert rates["seconds_per_iteration_psnr"] == pytest.approx(0.1)  # 20->30 only
    assert rates["seconds_per_iteration_gan"] == pytest.approx(0.2)   # 40->60
    only_one = seconds_per_iteration(log[:2])
    assert only_one["seconds_per_iteration_psnr"] == pytest.approx(0.1)
    assert only_one["seconds_per_iteration_gan"] is None


def test_make_pairs_prints_a_table_of_its_pairs_not_a_dict(tmp_path, monkeypatch):
    import sys

    from rich.console import Console

    from pipeline.stages import make_pairs
    from tests.conftest import square_crops, write_params

    crops, split_csv = square_crops(tmp_path, 12, lambda i: ("train", "val", "test")[i % 3])
    (tmp_path / "manifest.csv").write_text(
        "crop_id,levels\n" + "".join(f"c{i:03d},65536\n" for i in range(12)))
    recorder = Console(record=True, width=160)
    monkeypatch.setattr("pipeline.cli.console", recorder)
    monkeypatch.setattr(sys, "argv", [
        "make_pairs", "--crops", str(crops), "--split", str(split_csv), "--manifest",
        str(tmp_path / "manifest.csv"), "--out", str(tmp_path / "pairs"), "--params",
        str(write_params(tmp_path / "params.yaml"))])
    make_pairs.main()
    said = recorder.export_text()
    assert "LR/HR pairs" in said and "│ train" in said, said
    assert "{" not in said and "': " not in said, said
