"""SR that earns its place: literature metrics, bicubic start, honest generator choice,
and the acquisition setting that never shows SR a validation or test image."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.sr import build_generator
from pipeline.config import load_params
from pipeline.data.images import acquire_low_resolution
from pipeline.data.ingest import ingest_crops
from pipeline.data.split import split_groups
from pipeline.io import load_array
from pipeline.sr.pairs import make_lr_hr_pairs
from pipeline.sr.quality import bicubic_upscale, evaluate_sr, psnr_per_image, ssim_per_image
from pipeline.sr.training import choose_generator, export_generators, report_generator, train_sr
from tests.conftest import blob, write_crop, write_params
from tests.test_sr import make_pairs


def test_psnr_matches_a_hand_computed_value_with_the_border_cropped():
    target = torch.zeros(1, 1, 16, 16)
    pred = target.clone()
    pred[..., 4:12, 4:12] = 0.1  # inside the border: counted
    pred[..., :4, :] = 1.0       # in the 4 px border: must not count
    # MSE over the 8x8 interior = 0.1^2 -> PSNR = 10 log10(1 / 0.01) = 20 dB (basicsr adds
    # 1e-8 to the MSE, and 0.1 is a float32 here: 19.999996 dB)
    hand = 10 * math.log10(1 / (float(np.float32(0.1)) ** 2 + 1e-8))
    assert psnr_per_image(pred, target, crop_border=4).item() == pytest.approx(hand, abs=1e-9)
    assert hand == pytest.approx(20.0, abs=1e-5)
    # Without the crop the bright border dominates: far below 20 dB
    assert psnr_per_image(pred, target, crop_border=0).item() < 10


def test_ssim_uses_a_valid_gaussian_window_without_zero_padding():
    torch.manual_seed(0)
    image = torch.rand(1, 1, 32, 32)
    assert ssim_per_image(image, image, crop_border=4).item() == pytest.approx(1.0, abs=1e-9)
    # Zero padding would make a constant offset image drop near the edges; a valid window
    # sees only interior positions, so SSIM of a shifted copy depends on content only.
    noisy = (image + 0.05 * torch.randn_like(image)).clamp(0, 1)
    value = ssim_per_image(noisy, image, crop_border=4).item()
    assert 0 < value < 1
    # Changing pixels inside the cropped border leaves SSIM unchanged.
    edited = noisy.clone()
    edited[..., :4, :] = 0.0
    assert ssim_per_image(edited, image, crop_border=4).item() == pytest.approx(value, abs=1e-12)
    # An 11x11 window on 24x24 valid pixels: an image smaller than the window is refused.
    with pytest.raises(RuntimeError):
        ssim_per_image(image[..., :12, :12], image[..., :12, :12], crop_border=1)


def test_untrained_residual_generator_is_exactly_bicubic():
    torch.manual_seed(0)
    model = build_generator(4, 8, 1, 8, residual=True).eval()
    lr = torch.rand(2, 1, 12, 12)
    with torch.no_grad():
        torch.testing.assert_close(model(lr), F.interpolate(lr, scale_factor=4, mode="bicubic",
                                                            align_corners=False))


def test_trained_generator_beats_bicubic_on_held_out_pairs(params, tmp_path):
    pairs = make_pairs(4, n=12, seed=1)
    held_out = make_pairs(4, n=6, seed=2)
    sr_params = dataclasses.replace(params.sr, iters_psnr=60, iters_gan=0, lr_g=1e-3,
                                    batch_size=4, val_every=30)
    result = train_sr(pairs, sr_params, torch.device("cpu"), 0, tmp_path)
    model = build_generator(4, sr_params.num_feat, sr_params.num_block, sr_params.num_grow_ch,
                            residual=True)
    model.load_state_dict(result["ema_state"])
    scores = evaluate_sr(model, held_out["train_lr"], held_out["train_hr"], 4,
                         torch.device("cpu"), 4)
    assert scores["psnr"] > scores["psnr_bicubic"] + 0.05, scores
    zero_residual = build_generator(4, sr_params.num_feat, sr_params.num_block,
                                    sr_params.num_grow_ch, residual=True)
    baseline = evaluate_sr(zero_residual, held_out["train_lr"], held_out["train_hr"], 4,
                           torch.device("cpu"), 4)
    assert baseline["psnr"] == pytest.approx(baseline["psnr_bicubic"], abs=1e-4)


def test_both_generators_exported_and_the_choice_recorded(params, tmp_path, capsys):
    pairs = make_pairs(4, n=6)
    result = train_sr(pairs, params.sr, torch.device("cpu"), 0, tmp_path / "ckpt")
    metrics = result["metrics"]
    assert metrics["generator"] == "psnr"  # the default while the perceptual loss is off
    assert metrics["psnr"] == metrics["psnr_phase1"] and math.isfinite(metrics["psnr_gan"])
    assert metrics["gan_phase_weights"] == {"pixel": 1.0, "perceptual": 0.0, "gan": 1e-3}
    export_generators(result, params.sr, tmp_path / "models")
    saved = {name: torch.load(tmp_path / "models" / f"generator_{name}.pt", weights_only=True)
             for name in ("psnr", "gan")}
    chosen = torch.load(tmp_path / "models" / "generator.pt", weights_only=True)
    assert chosen["name"] == "psnr"
    for key, value in saved["psnr"]["model"].items():
        torch.testing.assert_close(chosen["model"][key], value)
    assert any(not torch.equal(saved["gan"]["model"][k], v)
               for k, v in saved["psnr"]["model"].items())

    # A change of sr.generator alone re-exports from the finished record: no training.
    again = train_sr(pairs, dataclasses.replace(params.sr, generator="gan"),
                     torch.device("cpu"), 0, tmp_path / "ckpt")
    assert "already finished" in capsys.readouterr().err
    assert again["log"] == result["log"]
    assert again["metrics"]["generator"] == "gan"
    assert again["metrics"]["psnr"] == metrics["psnr_gan"]
    for key, value in saved["gan"]["model"].items():
        torch.testing.assert_close(again["ema_state"][key], value)


def test_choose_generator_rules():
    figures = {"psnr": {"psnr": 30.0}, "gan": {"psnr": 31.0}}
    assert choose_generator(figures, "best") == "gan"
    assert choose_generator(figures, "psnr") == "psnr"
    assert choose_generator({"psnr": {"psnr": 30.0}, "gan": {"psnr": 30.0}}, "best") == "psnr"
    from pipeline.cli import PipelineError

    with pytest.raises(PipelineError, match="no gan generator"):
        choose_generator({"psnr": {"psnr": 30.0}}, "gan")


def test_warning_when_sr_does_no_better_than_bicubic(capsys):
    metrics = {"metric_border_px": 4, "psnr_phase1": 30.0, "psnr_gan": 29.0,
               "psnr_bicubic": 31.0, "generator": "psnr", "psnr": 30.0, "ssim": 0.9,
               "ssim_bicubic": 0.91, "sr_gain_db": 0.05, "sr_gain_db_val": -1.0,
               "sr_gain_pairs": "test", "sr_better_than_bicubic": False}
    report_generator(metrics, min_gain_db=0.1)
    err = capsys.readouterr().err
    assert "warning:" in err and "SR does no better than bicubic" in err and "+0.050" in err
    report_generator(metrics | {"sr_gain_db": 0.6, "sr_better_than_bicubic": True}, 0.1)
    assert "warning:" not in capsys.readouterr().err


def test_gain_over_bicubic_is_scored_on_test_pairs_that_chose_nothing(params, tmp_path):
    """sr_gain_db is the chosen generator minus bicubic on the test pairs (held out from the
    checkpoint choice); the validation gain is kept beside it; the verdict follows
    sr.min_gain_db. The test pairs change no training key: a finished run is reused."""
    pairs = make_pairs(4, n=12, seed=1)
    test = make_pairs(4, n=6, seed=2)
    pairs |= {"test_lr": test["train_lr"], "test_hr": test["train_hr"]}
    sr_params = dataclasses.replace(params.sr, iters_psnr=60, iters_gan=0, lr_g=1e-3,
                                    batch_size=4, val_every=30, min_gain_db=0.05)
    metrics = train_sr(pairs, sr_params, torch.device("cpu"), 0, tmp_path)["metrics"]
    assert metrics["sr_gain_pairs"] == "test"
    assert metrics["sr_gain_db"] == pytest.approx(
        metrics["psnr_test"] - metrics["psnr_bicubic_test"], abs=1e-3)
    assert metrics["sr_gain_db_val"] == pytest.approx(
        metrics["psnr"] - metrics["psnr_bicubic"], abs=1e-3)
    assert metrics["sr_gain_db"] > 0.05 and metrics["sr_better_than_bicubic"] is True
    assert metrics["phase1_untrained_at_quarter"] is False
    strict = dataclasses.replace(sr_params, min_gain_db=metrics["sr_gain_db"] + 1.0)
    again = train_sr(pairs | {"test_lr": pairs["val_lr"], "test_hr": pairs["val_hr"]}, strict,
                     torch.device("cpu"), 0, tmp_path)["metrics"]
    assert again["train_seconds"] == metrics["train_seconds"]  # reused, not retrained
    assert again["sr_better_than_bicubic"] is False
    assert again["sr_gain_db"] == pytest.approx(again["sr_gain_db_val"], abs=1e-3)


def test_a_phase_1_that_does_not_learn_is_flagged_a_quarter_in(params, tmp_path, capsys):
    """With a learning rate too small to move the generator off its bicubic start, the
    best validation is still iteration 0 a quarter into phase 1: warned then, recorded."""
    sr_params = dataclasses.replace(params.sr, iters_psnr=8, iters_gan=0, lr_g=1e-12,
                                    val_every=2)
    metrics = train_sr(make_pairs(4), sr_params, torch.device("cpu"), 0, tmp_path)["metrics"]
    assert metrics["phase1_best_iteration"] == 0
    assert metrics["phase1_untrained_at_quarter"] is True
    err = capsys.readouterr().err
    assert "after 2 of 8 phase-1 iterations" in err and "still the untrained one" in err
    assert metrics["sr_better_than_bicubic"] is False and metrics["sr_gain_db"] == 0.0


def test_acquisition_is_an_area_mean_at_the_source_bit_depth():
    image = np.array([[10, 11, 0, 0], [12, 14, 0, 1], [0, 0, 5, 5], [0, 0, 5, 5]],
                     np.float32) / 255
    low = acquire_low_resolution(image, 2, 255)
    assert low.shape == (2, 2)
    # block means 11.75, 0.25, 0, 5 -> 12, 0, 0, 5 grey levels of the 8-bit source
    np.testing.assert_allclose(low * 255, [[12, 0], [0, 5]], atol=1e-4)
    np.testing.assert_allclose(low * 255, np.round(low * 255), atol=1e-4)


def _grouped_raw(root, groups_per_class=6, crops_per_group=2):
    """Each group's crops carry the group's own brightness, so an HR patch names its group."""
    for class_index, class_name in enumerate(("ALS", "Control")):
        for group in range(groups_per_class):
            for crop in range(crops_per_group):
                level = 40 + 8 * (class_index * groups_per_class + group)
                write_crop(root / class_name / f"G{class_index}{group:02d}_crops_r" /
                           f"c{crop}.tif", blob(size=128, seed=crop, bright=level))
    return root


def test_acquisition_keeps_hr_and_sr_training_sees_no_validation_or_test_image(tmp_path):
    params = load_params(write_params(tmp_path / "params.yaml",
                                      data={"crop_size": 128, "acquire_downsample": 4},
                                      sr={"hr_patch": 128, "scale": 4}))
    raw = _grouped_raw(tmp_path / "raw")
    cache = tmp_path / "ingested" / "crops"
    result = ingest_crops(raw, cache, params.data)
    manifest = result.manifest
    hr_dir = cache.with_name("hr")
    for crop_id in manifest["crop_id"]:
        acquired, original = load_array(cache / f"{crop_id}.npy"), load_array(
            hr_dir / f"{crop_id}.npy")
        assert acquired.shape == (1, 32, 32) and original.shape == (1, 128, 128)
    assert result.metrics["acquired_size"] == 32 and len(result.metrics["manifest_sha256"]) == 64

    frame = split_groups(manifest, params.split, params.seed).merge(
        manifest[["crop_id", "levels"]], on="crop_id")
    pairs = make_lr_hr_pairs(cache, frame, params.sr, params.seed, 4)
    originals = {row.crop_id: load_array(hr_dir / f"{row.crop_id}.npy")
                 for row in frame.itertuples()}

    def source_splits(patches):
        found = set()
        for patch in patches:
            as_uint16 = np.round(patch * 65535).astype(np.uint16)
            for row in frame.itertuples():
                if np.array_equal(originals[row.crop_id], as_uint16):
                    found.add(row.split)
        return found

    assert source_splits(pairs["train_hr"]) == {"train"}
    assert source_splits(pairs["val_hr"]) == {"val"}
    # The LR side is exactly what ingest stored for the acquired crop.
    train_ids = frame.loc[frame["split"] == "train", "crop_id"].tolist()
    first = load_array(cache / f"{train_ids[0]}.npy").astype(np.float32) / 65535
    np.testing.assert_allclose(pairs["train_lr"][0], first, atol=1 / 65535)


def test_sr_validation_figures_are_the_bicubic_baseline_for_a_bicubic_model():
    pairs = make_pairs(4, n=4)

    class Bicubic(torch.nn.Module):
        def forward(self, x):
            return bicubic_upscale(x, 4)

    scores = evaluate_sr(Bicubic(), pairs["val_lr"], pairs["val_hr"], 4, torch.device("cpu"), 2)
    assert scores["psnr"] == pytest.approx(scores["psnr_bicubic"], abs=1e-6)
    assert scores["ssim"] == pytest.approx(scores["ssim_bicubic"], abs=1e-6)
    assert all(type(value) is float for value in scores.values())  # JSON-ready, no tensors
