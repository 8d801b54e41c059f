"""sr_infer: every crop super-resolved to crop x scale, next to its bicubic upscale."""

import numpy as np
import pytest
import torch

from models.sr import build_generator
from pipeline.common import PipelineError, load_array, save_array_atomic, save_torch_atomic
from pipeline.images import from_uint16, to_uint16
from pipeline.sr_infer import load_generator, super_resolve_crops
from pipeline.sr_metrics import bicubic_upscale


def _crops(folder, count=3, size=20):
    rng = np.random.default_rng(0)
    ids = [f"c{i:06d}" for i in range(count)]
    for crop_id in ids:
        save_array_atomic(folder / f"{crop_id}.npy", to_uint16(rng.uniform(0, 1, (1, size, size))))
    return ids


def test_untrained_residual_generator_writes_bicubic_at_crop_times_scale(tmp_path):
    ids = _crops(tmp_path / "crops")
    model = build_generator(4, 8, 1, 8, residual=True)
    metrics = super_resolve_crops(model, ids, tmp_path / "crops", tmp_path / "out", scale=4,
                                  tile=16, overlap=4, batch=2, device=torch.device("cpu"),
                                  precision="fp32")
    assert metrics["crops"] == 3
    for crop_id in ids:
        sr = load_array(tmp_path / "out" / "sr" / f"{crop_id}.npy")
        bicubic = load_array(tmp_path / "out" / "bicubic" / f"{crop_id}.npy")
        assert sr.shape == bicubic.shape == (1, 80, 80)
        crop = torch.from_numpy(from_uint16(load_array(tmp_path / "crops" / f"{crop_id}.npy")))
        expected = to_uint16(bicubic_upscale(crop[None], 4)[0].numpy())
        # Tiles with a 4 px context reproduce the untiled bicubic up to the blend (1 LSB).
        assert np.abs(sr.astype(int) - expected.astype(int)).max() <= 1
        np.testing.assert_array_equal(bicubic, expected)


def test_generator_file_is_checked(tmp_path):
    model = build_generator(2, 8, 1, 8, residual=True)
    path = tmp_path / "g.pt"
    save_torch_atomic(path, {"model": model.state_dict(), "name": "psnr", "config": {
        "scale": 2, "num_feat": 8, "num_block": 1, "num_grow_ch": 8, "residual": True}})
    loaded, name = load_generator(path, 2)
    assert name == "psnr" and isinstance(loaded, torch.nn.Module)
    with pytest.raises(PipelineError, match="x2 but sr.scale is 4"):
        load_generator(path, 4)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(PipelineError, match="not a generator file"):
        load_generator(tmp_path / "junk.pt", 2)
