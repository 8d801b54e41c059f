"""Files as labs store them (tifffile for TIFF): every channel, plane and bit accounted for.

Each test writes its own file with tifffile and asserts the exact plane and values read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from pipeline.cli import PipelineError
from pipeline.config import load_params
from pipeline.data.image_files import (
    BadImageError,
    PlaneChoiceError,
    raw_peak,
    read_crop,
    read_header,
)
from pipeline.data.ingest import ingest_crops, prepare_crop
from tests.conftest import write_params

SIZE = 32


def planes(count: int, peak: int = 4095, seed: int = 0) -> np.ndarray:
    """`count` distinct 12-bit planes in uint16 (values up to `peak`)."""
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, peak, (count, SIZE, SIZE), dtype=np.uint16)
    stack[:, 0, 0] = peak  # every plane reaches the full 12-bit scale
    return stack


def two_channel_ome(path, stack, names=("DAPI", "TDP-43"), pixel_um=0.1, unit="µm"):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, stack, ome=True, photometric="minisblack", metadata={
        "axes": "CYX", "Channel": {"Name": list(names)}, "PhysicalSizeX": pixel_um,
        "PhysicalSizeXUnit": unit, "PhysicalSizeY": pixel_um, "PhysicalSizeYUnit": unit})
    return path


def imagej_hyperstack(path, stack, labels=("DAPI", "TDP-43"), pixel_um=0.2):
    """A Z x C x Y x X ImageJ hyperstack, ImageJ's pixel size in µm."""
    path.parent.mkdir(parents=True, exist_ok=True)
    z, c = stack.shape[:2]
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / pixel_um, 1 / pixel_um),
                     metadata={"axes": "ZCYX", "Labels": list(labels) * z, "unit": "um"})
    return path


def test_two_channel_ome_is_refused_by_name_until_a_channel_is_chosen(tmp_path):
    stack = planes(2)
    path = two_channel_ome(tmp_path / "crop.ome.tif", stack)
    with pytest.raises(PlaneChoiceError) as refused:
        read_crop(path, bit_depth=12)
    assert str(refused.value) == ("has 2 channels (DAPI, TDP-43; axes CYX, 2x32x32): choose one "
                                  "with -S data.channel=TDP-43 (or an index, 0-based)")
    by_name, info = read_crop(path, bit_depth=12, channel="TDP-43")
    by_index, _ = read_crop(path, bit_depth=12, channel=1)
    dapi, _ = read_crop(path, bit_depth=12, channel=0)
    # the 12-bit plane in a 16-bit file: exactly plane / 4095
    np.testing.assert_allclose(by_name, stack[1] / 4095.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(by_name, by_index)
    np.testing.assert_allclose(dapi, stack[0] / 4095.0, rtol=0, atol=1e-7)
    assert info["channel"] == "TDP-43" and info["format"] == "ome-tiff"
    assert info["pixel_size_um"] == 0.1 and info["channel_names"] == "DAPI, TDP-43"
    with pytest.raises(PlaneChoiceError, match=r"has no channel named 'GFP' \(it has 2: DAPI, "
                                               r"TDP-43\)"):
        read_crop(path, channel="GFP")
    with pytest.raises(PlaneChoiceError, match="index 2 is out of range"):
        read_crop(path, channel=2)


def test_ome_pixel_size_in_nanometres_is_converted(tmp_path):
    path = two_channel_ome(tmp_path / "nm.ome.tif", planes(2), pixel_um=65.0, unit="nm")
    assert read_header(path).pixel_size_um == 0.065


def test_imagej_hyperstack_channel_and_z_projection(tmp_path):
    stack = np.stack([planes(2, seed=z) for z in range(3)])  # Z=3, C=2
    path = imagej_hyperstack(tmp_path / "hyper.tif", stack)
    header = read_header(path)
    assert header.axes == "ZCYX" and header.channel_names == ["DAPI", "TDP-43"]
    assert header.pixel_size_um == 0.2 and header.format == "imagej-tiff"
    with pytest.raises(PlaneChoiceError, match=r"has 2 channels \(DAPI, TDP-43; axes ZCYX, "
                                               r"3x2x32x32\)"):
        read_crop(path, bit_depth=12)
    with pytest.raises(PlaneChoiceError, match=r"has 3 z-planes .*data.z_project=max"):
        read_crop(path, bit_depth=12, channel="TDP-43")
    maximum, _ = read_crop(path, bit_depth=12, channel="TDP-43", z_project="max")
    mean, _ = read_crop(path, bit_depth=12, channel="TDP-43", z_project="mean")
    second, _ = read_crop(path, bit_depth=12, channel="TDP-43", z_project=1)
    np.testing.assert_allclose(maximum, stack[:, 1].max(0) / 4095.0, atol=1e-7)
    np.testing.assert_allclose(mean, stack[:, 1].mean(0) / 4095.0, atol=1e-6)
    np.testing.assert_allclose(second, stack[1, 1] / 4095.0, atol=1e-7)


def test_z_stack_is_refused_until_projected(tmp_path):
    stack = planes(3)
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, stack, imagej=True, metadata={"axes": "ZYX"})
    with pytest.raises(PlaneChoiceError) as refused:
        read_crop(path, bit_depth=12)
    assert str(refused.value) == ("has 3 z-planes (axes ZYX, 3x32x32): choose -S "
                                  "data.z_project=max (or mean, or a plane index, 0-based)")
    plane, _ = read_crop(path, bit_depth=12, z_project=2)
    np.testing.assert_allclose(plane, stack[2] / 4095.0, atol=1e-7)
    with pytest.raises(PlaneChoiceError, match="index 3 is out of range"):
        read_crop(path, z_project=3)


def test_unnamed_pages_and_time_points_are_named_not_read_as_page_one(tmp_path):
    pages = tmp_path / "pages.tif"
    with tifffile.TiffWriter(pages) as writer:  # three separate pages, no metadata
        for plane in planes(3):
            writer.write(plane, photometric="minisblack", metadata=None)
    with pytest.raises(PlaneChoiceError, match="has 3 pages of unnamed kind"):
        read_crop(pages)
    time = tmp_path / "t.tif"
    tifffile.imwrite(time, planes(4), imagej=True, metadata={"axes": "TYX"})
    with pytest.raises(PlaneChoiceError, match="has 4 time points"):
        read_crop(time, z_project="max")


def test_48_bit_rgb_keeps_16_bits_per_channel(tmp_path):
    rgb = np.stack([planes(1, peak=65535, seed=s)[0] for s in range(3)], axis=-1)
    path = tmp_path / "rgb48.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")
    green, info = read_crop(path, bit_depth=16, channel="g")
    assert info["axes"] == "YXS" and info["dtype"] == "uint16"
    np.testing.assert_allclose(green, rgb[..., 1] / 65535.0, atol=1e-7)
    assert len(np.unique(green)) > 256  # 16 bits, not Pillow's 8
    brightest, _ = read_crop(path, bit_depth=16, channel="max")
    np.testing.assert_allclose(brightest, rgb.max(-1) / 65535.0, atol=1e-7)


@pytest.mark.parametrize("compression", ["lzw", "zstd", "adobe_deflate", "jpeg2000"])
def test_compressed_tiffs_decode_exactly(tmp_path, compression):
    import imagecodecs

    if compression == "jpeg2000" and not imagecodecs.JPEG2K.available:
        pytest.skip("imagecodecs was built without JPEG 2000")
    plane = planes(1)[0]
    path = tmp_path / f"{compression}.tif"
    kwargs = {"compressionargs": {"level": 0}} if compression == "jpeg2000" else {}
    tifffile.imwrite(path, plane, compression=compression, **kwargs)  # level 0: lossless
    read, info = read_crop(path, bit_depth=12)
    assert info["compression"] == compression
    np.testing.assert_allclose(read, plane / 4095.0, atol=1e-7)


def test_tiff_resolution_gives_pixel_size_and_editor_dpi_gives_none(tmp_path):
    plane = planes(1)[0]
    per_cm = tmp_path / "cm.tif"
    tifffile.imwrite(per_cm, plane, resolution=(1e4 / 0.325, 1e4 / 0.325),
                     resolutionunit="CENTIMETER")
    assert read_header(per_cm).pixel_size_um == 0.325
    screen = tmp_path / "dpi.tif"
    tifffile.imwrite(screen, plane, resolution=(72, 72), resolutionunit="INCH")
    assert read_header(screen).pixel_size_um is None
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, plane)
    assert read_header(plain).pixel_size_um is None


def test_truncated_multi_page_file_is_a_bad_file_not_fewer_planes(tmp_path):
    path = imagej_hyperstack(tmp_path / "cut.tif", np.stack([planes(2, seed=z)
                                                             for z in range(3)]))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BadImageError, match="cannot decode image"):
        read_crop(path, channel="TDP-43", z_project="max")


def test_ingest_skips_a_truncated_stack_when_asked_and_lists_it(tmp_path):
    raw = _raw(tmp_path, lambda path, c, seed: imagej_hyperstack(
        path, np.stack([planes(2, seed=seed + z) for z in range(2)])))
    cut = next((raw / "Control").iterdir()) / "c1.tif"
    cut.write_bytes(cut.read_bytes()[:1500])
    data = dict(channel="TDP-43", z_project="max")
    with pytest.raises(PipelineError, match="c1.tif: cannot decode image"):
        ingest_crops(raw, tmp_path / "out" / "crops", _data(tmp_path, **data))
    result = ingest_crops(raw, tmp_path / "out" / "crops",
                          _data(tmp_path, on_bad_file="skip", **data))
    assert len(result.manifest) == 7 and result.problems[0]["path"] == str(cut)


def _raw(tmp_path, writer, classes=("ALS", "Control"), samples=2, crops=2):
    root = tmp_path / "raw"
    for class_index, class_name in enumerate(classes):
        for sample in range(samples):
            for crop in range(crops):
                writer(root / class_name / f"{class_name[:2]}{sample}_1_crops_r" / f"c{crop}.tif",
                       class_index, sample * 10 + crop)
    return root


def _data(tmp_path, **data):
    return load_params(write_params(tmp_path / "params.yaml",
                                    data={"crop_size": SIZE, **data})).data


def test_ingest_stops_on_two_channels_then_reads_the_chosen_one_in_either_mode(tmp_path):
    raw = _raw(tmp_path, lambda path, c, seed: two_channel_ome(path, planes(2, seed=seed)))
    for on_bad_file in ("error", "skip"):  # a choice for the params: never skipped
        with pytest.raises(PipelineError, match=r"c0.tif has 2 channels \(DAPI, TDP-43; .*"
                                                r"-S data.channel=TDP-43"):
            ingest_crops(raw, tmp_path / "out" / "crops",
                         _data(tmp_path, on_bad_file=on_bad_file))
    result = ingest_crops(raw, tmp_path / "out" / "crops", _data(tmp_path, channel="TDP-43"))
    manifest = result.manifest
    assert (manifest["channel"] == "TDP-43").all() and (manifest["pixel_size_um"] == 0.1).all()
    assert result.metrics["bit_depth"] == 12
    assert result.metrics["acquisition"]["pixel_size_um"] == {"ALS": "0.1", "Control": "0.1"}
    assert result.metrics["acquisition_confounds"] == "none"


def test_predict_side_refuses_files_without_the_bundles_channel(tmp_path):
    folder = tmp_path / "new" / "P1_crops_r"
    path = two_channel_ome(folder / "c.tif", planes(2), names=("DAPI", "GFP"))
    data = _data(tmp_path, channel="TDP-43", bit_depth=12)
    with pytest.raises(PlaneChoiceError, match=r"no channel named 'TDP-43' \(it has 2: DAPI, "
                                               r"GFP\)"):
        prepare_crop(path, tmp_path / "new", data)


def test_bit_depth_auto_reads_the_chosen_plane(tmp_path):
    stack = planes(2)
    stack[0] = np.minimum(stack[0], 255)  # DAPI fits 8 bits; TDP-43 needs 12
    path = two_channel_ome(tmp_path / "c.tif", stack)
    from pipeline.data.image_files import PlaneChoice

    assert raw_peak(path, PlaneChoice("TDP-43"))[1] == 4095
    assert raw_peak(path, PlaneChoice("DAPI"))[1] == 255


def test_pixel_size_confound_and_mixed_sizes_are_flagged(tmp_path):
    def writer(path, class_index, seed):
        two_channel_ome(path, planes(2, seed=seed), pixel_um=(0.1, 0.2)[class_index])

    result = ingest_crops(_raw(tmp_path, writer), tmp_path / "out" / "crops",
                          _data(tmp_path, channel="TDP-43"))
    assert result.metrics["acquisition_confounds"] == "pixel_size_um"
    assert result.metrics["acquisition"]["pixel_size_um"] == {"ALS": "0.1", "Control": "0.2"}
    assert result.metrics["pixel_sizes_um"] == "0.1 um: 4, 0.2 um: 4"
    assert any("pixel size (um) differs by class: ALS 0.1, Control 0.2" in w
               for w in result.warnings)
    assert any("pixel sizes differ within the data" in w for w in result.warnings)


def test_a_codec_confound_is_flagged_and_a_shared_value_is_not(tmp_path):
    def writer(path, class_index, seed):
        path.parent.mkdir(parents=True, exist_ok=True)
        # controls saved by another program (zstd), except one crop: values shared
        codec = "zstd" if class_index == 1 else "lzw"
        tifffile.imwrite(path, planes(1, seed=seed)[0], compression=codec)

    result = ingest_crops(_raw(tmp_path, writer), tmp_path / "out" / "crops", _data(tmp_path))
    assert result.metrics["acquisition_confounds"] == "compression"
    control = next((tmp_path / "raw" / "Control").iterdir()) / "c0.tif"
    tifffile.imwrite(control, planes(1, seed=3)[0], compression="lzw")
    again = ingest_crops(tmp_path / "raw", tmp_path / "out2" / "crops", _data(tmp_path))
    assert again.metrics["acquisition_confounds"] == "none"
    assert again.metrics["acquisition"]["compression"]["Control"] == "zstd (3), lzw (1)"


def test_manifest_records_what_each_file_was(tmp_path):
    raw = _raw(tmp_path, lambda path, c, seed: imagej_hyperstack(
        path, np.stack([planes(2, seed=seed + z) for z in range(2)])))
    result = ingest_crops(raw, tmp_path / "out" / "crops",
                          _data(tmp_path, channel=1, z_project="max"))
    row = result.manifest.iloc[0]
    assert (row["format"], row["axes"], row["shape"], row["channel"], row["z_project"]) == (
        "imagej-tiff", "ZCYX", "2x2x32x32", "TDP-43", "max")
    assert row["pixel_size_um"] == 0.2 and row["bits_per_sample"] == 16
    assert isinstance(result.manifest, pd.DataFrame)


def test_the_bundle_carries_the_channel_and_projection_and_old_bundles_refuse_stacks():
    from pipeline.classify.bundle import bundle_data_params

    data = {"group_regex": "^(?P<group>.+?)_crops\\d*_r$", "extensions": [".tif"],
            "crop_size": SIZE, "on_size_mismatch": "error", "acquire_downsample": 0,
            "positive": "ALS", "float_range": [0.0, 1.0], "channel": "TDP-43",
            "bit_depth": 12}
    new = bundle_data_params({"data": data | {"z_project": "max"}})
    assert (new.channel, new.z_project) == ("TDP-43", "max")
    old = bundle_data_params({"data": data})  # a bundle from before data.z_project
    assert old.z_project == "none"
