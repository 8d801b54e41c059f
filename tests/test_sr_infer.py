"""sr_infer: every crop super-resolved to crop x scale (or to the classifier's size), no
bicubic copies on disk; the bicubic input made at load time equals what storing it gave."""

import dataclasses

import numpy as np
import pytest
import torch

from models.sr import build_generator
from pipeline.classify.images import load_classifier_images, load_images
from pipeline.cli import PipelineError
from pipeline.config import sr_storage_size
from pipeline.data.images import from_uint16, to_uint16
from pipeline.data.tensors import bicubic_upscale, to_classifier_size
from pipeline.io import load_array, save_array_atomic, save_torch_atomic
from pipeline.sr.inference import load_generator, super_resolve_crops


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
    assert metrics["crops"] == 3 and metrics["stored_size"] == 80
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sr"]  # no bicubic copies
    assert metrics["bytes_written"] == sum(p.stat().st_size for p in
                                           (tmp_path / "out" / "sr").iterdir())
    for crop_id in ids:
        sr = load_array(tmp_path / "out" / "sr" / f"{crop_id}.npy")
        assert sr.shape == (1, 80, 80)
        crop = torch.from_numpy(from_uint16(load_array(tmp_path / "crops" / f"{crop_id}.npy")))
        expected = to_uint16(bicubic_upscale(crop[None], 4)[0].numpy())
        # Tiles with a 4 px context reproduce the untiled bicubic up to the blend (1 LSB).
        assert np.abs(sr.astype(int) - expected.astype(int)).max() <= 1


def test_sr_images_are_stored_at_the_size_the_classifier_reads(tmp_path):
    ids = _crops(tmp_path / "crops", size=32)
    model = build_generator(4, 8, 1, 8, residual=True)
    metrics = super_resolve_crops(model, ids, tmp_path / "crops", tmp_path / "out", scale=4,
                                  tile=16, overlap=4, batch=2, device=torch.device("cpu"),
                                  precision="fp32", store_size=48)
    assert metrics["stored_size"] == 48
    full = bicubic_upscale(torch.from_numpy(from_uint16(
        load_array(tmp_path / "crops" / f"{ids[0]}.npy")))[None], 4)
    stored = load_array(tmp_path / "out" / "sr" / f"{ids[0]}.npy")
    assert stored.shape == (1, 48, 48)  # 128 px SR, 48 px on disk: 7x fewer bytes
    expected = to_uint16(to_classifier_size(full, 48)[0].numpy())
    assert np.abs(stored.astype(int) - expected.astype(int)).max() <= 1


def test_storage_size_follows_classifier_image_size(params):
    params = dataclasses.replace(
        params, data=dataclasses.replace(params.data, acquire_downsample=0),
        classifier=dataclasses.replace(params.classifier, image_size="auto"))
    crop, scale = params.data.crop_size, params.sr.scale
    assert sr_storage_size(params) == crop * scale  # image_size auto: the arrival size
    small = dataclasses.replace(params, classifier=dataclasses.replace(
        params.classifier, image_size=crop))
    assert sr_storage_size(small) == crop
    full = dataclasses.replace(small, sr=dataclasses.replace(params.sr, store_full_size=True))
    assert sr_storage_size(full) == crop * scale


def test_bicubic_at_load_time_equals_the_stored_bicubic_of_before(tmp_path, params):
    """What sr_infer used to write (bicubic, then the uint16 cache) and read back is what
    load_classifier_images now computes from the crops, value for value."""
    ids = _crops(tmp_path / "crops", count=5, size=12)
    for crop_id in ids:  # the old path: stored at 16 bits next to the SR images
        crop = torch.from_numpy(from_uint16(load_array(tmp_path / "crops" / f"{crop_id}.npy")))
        save_array_atomic(tmp_path / "old_bicubic" / f"{crop_id}.npy",
                          to_uint16(bicubic_upscale(crop[None], params.sr.scale)[0].numpy()))
    sized = dataclasses.replace(params, data=dataclasses.replace(
        params.data, crop_size=12, acquire_downsample=0), classifier=dataclasses.replace(
        params.classifier, image_size="auto"))
    now = load_classifier_images(sized, "bicubic", tmp_path / "crops", None, ids)
    before = load_images(tmp_path / "old_bicubic", ids, 12 * params.sr.scale)
    assert now.shape == (5, 1, 12 * params.sr.scale, 12 * params.sr.scale)
    assert torch.equal(now[:], before)


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


def test_images_made_batch_by_batch_equal_the_whole_split_made_at_once(tmp_path, params):
    """ClassifierImages streams from the uint16 cache: any batch, any order, an image is
    the value the whole split gives it (bicubic x4, resized, preprocessed)."""
    import dataclasses

    from pipeline.classify.images import ClassifierImages
    from pipeline.classify.preprocess import preprocess_images
    from pipeline.data.images import to_uint16

    rng = np.random.default_rng(0)
    stored = to_uint16(rng.uniform(size=(300, 1, 12, 12)))
    blur = dataclasses.replace(params.preprocess, filter="gaussian", equalize=True)
    images = ClassifierImages(stored, 40, upscale=4, preprocess=blur)
    whole = preprocess_images(load_images_from(stored, 40, 4), blur)
    assert images.shape == (300, 1, 40, 40)
    assert torch.equal(images[:], whole)
    picked = torch.tensor([299, 3, 257, 3])
    assert torch.equal(images[picked], whole[picked])
    assert torch.equal(images[5, 0], whole[5, 0]) and torch.equal(images[-1], whole[-1])
    assert torch.equal(images[[1, 2]], whole[[1, 2]])


def load_images_from(stored, size, upscale):
    """The reference: the whole split as float32 at once, as load_images made it before."""
    from pipeline.data.tensors import bicubic_upscale, on_cache_grid, to_classifier_size

    batch = torch.from_numpy(stored.astype(np.float32)) / 65535.0
    return to_classifier_size(on_cache_grid(bicubic_upscale(batch, upscale)), size)
