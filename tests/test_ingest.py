import dataclasses
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cli import PipelineError
from pipeline.config import load_params
from pipeline.data.ingest import ingest_crops
from pipeline.io import load_array
from tests.conftest import REPO, blob, write_crop, write_params


def run(raw, tmp_path, params, **data_overrides):
    data = dataclasses.replace(params.data, **data_overrides)
    return ingest_crops(raw, tmp_path / "cache", data)


@pytest.fixture
def params(tmp_path):
    """These crops are 128 px (the study's raw size); the demo default is 32."""
    return load_params(write_params(tmp_path / "params.yaml", data={"crop_size": 128}))


def test_reads_layout_groups_and_formats(raw_dir, tmp_path, params):
    result = run(raw_dir, tmp_path, params)
    manifest = result.manifest
    assert len(manifest) == 14
    # crops and crops2 folders of one sample are one group
    assert manifest.loc[manifest["sample"] == "SD000_10_crops2_r", "group"].unique() == ["SD000_10"]
    assert manifest.groupby("group")["sample"].nunique()["SD000_10"] == 2
    assert result.metrics["groups"] == 6 and result.metrics["crops_ALS"] == 7
    assert set(manifest["label"]) == {0, 1}
    assert (manifest.loc[manifest["class_name"] == "ALS", "label"] == 1).all()
    cached = load_array(tmp_path / "cache" / manifest["cache_file"].iloc[0])
    assert cached.dtype == np.uint16 and cached.shape == (1, 128, 128)
    original = np.array(Image.open(raw_dir / manifest["path"].iloc[0]))
    np.testing.assert_array_equal(cached[0], original.astype(np.uint16) * 257)
    assert len(manifest["sha256"].iloc[0]) == 64


def test_sixteen_bit_and_rgb_grey_become_one_channel(raw_dir, tmp_path, params):
    sixteen = (blob().astype(np.uint16) * 200)
    write_crop(raw_dir / "ALS" / "SD000_10_crops_r" / "deep.tif", sixteen)
    grey = blob(seed=5)
    write_crop(raw_dir / "ALS" / "SD000_10_crops_r" / "rgb.png", np.stack([grey] * 3, -1))
    manifest = run(raw_dir, tmp_path, params).manifest.set_index("path")
    row = manifest.loc["ALS/SD000_10_crops_r/deep.tif"]
    assert row["dtype"] == "uint16"
    cached = load_array(tmp_path / "cache" / row["cache_file"])[0]
    np.testing.assert_array_equal(cached, sixteen)
    assert manifest.loc["ALS/SD000_10_crops_r/rgb.png", "axes"] == "YXS"


def test_names_with_spaces_and_non_ascii_work(raw_dir, tmp_path, params):
    write_crop(raw_dir / "ALS" / "SD000_10_crops_r" / "zelle ä 1.tif", blob(seed=3))
    manifest = run(raw_dir, tmp_path, params).manifest
    assert "ALS/SD000_10_crops_r/zelle ä 1.tif" in set(manifest["path"])


def _corrupt(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"II*\x00" + b"\x00garbage" * 10)


def _truncated(path):
    write_crop(path, blob(), compression="tiff_lzw")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _empty(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


BAD_FILES = {
    "corrupt": ("bad.tif", _corrupt, "cannot decode"),
    "truncated": ("cut.tif", _truncated, "cannot decode"),
    "empty": ("empty.tif", _empty, "empty file"),
    "alpha": ("alpha.png", lambda p: write_crop(p, np.dstack([blob()] * 3 + [blob()])),
              "alpha channel"),
    "colour": ("colour.png", lambda p: write_crop(
        p, np.dstack([blob(seed=1), blob(seed=2), blob(seed=3)])), "channels differ"),
    "constant": ("flat.tif", lambda p: write_crop(p, np.full((128, 128), 7, np.uint8)),
                 "constant"),
    "nan": ("nan.tif", lambda p: write_crop(
        p, np.where(np.eye(128) > 0, np.nan, 0.5).astype(np.float32)), "NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_named_and_errors_or_is_skipped(raw_dir, tmp_path, params, case):
    name, make, message = BAD_FILES[case]
    path = raw_dir / "Control" / "CT001_11_crops_r" / name
    make(path)
    with pytest.raises(PipelineError, match=message) as info:
        run(raw_dir, tmp_path, params)
    assert name in str(info.value)
    result = run(raw_dir, tmp_path, params, on_bad_file="skip")
    assert result.metrics["skipped_files"] == 1 and len(result.manifest) == 14
    assert name in result.problems[0]["path"]


def test_sample_folder_without_crops(raw_dir, tmp_path, params):
    (raw_dir / "ALS" / "SD099_99_crops_r").mkdir()
    with pytest.raises(PipelineError, match="SD099_99_crops_r: sample folder holds no crops"):
        run(raw_dir, tmp_path, params)


def test_class_folder_count_and_missing_positive(raw_dir, tmp_path, params):
    with pytest.raises(PipelineError, match="class folder 'TDP' not found"):
        run(raw_dir, tmp_path, params, positive="TDP")
    (raw_dir / "Other" / "X_crops_r").mkdir(parents=True)
    with pytest.raises(PipelineError, match="expected exactly 2 class folders, found 3"):
        run(raw_dir, tmp_path, params)


def test_single_class(tmp_path, params):
    root = tmp_path / "one"
    write_crop(root / "ALS" / "SD1_1_crops_r" / "a.tif", blob())
    with pytest.raises(PipelineError, match="expected exactly 2 class folders, found 1"):
        run(root, tmp_path, params)


def test_symlink_outside_raw_dir_is_refused(raw_dir, tmp_path, params):
    outside = write_crop(tmp_path / "elsewhere" / "secret.tif", blob())
    os.symlink(outside, raw_dir / "ALS" / "SD000_10_crops_r" / "link.tif")
    with pytest.raises(PipelineError, match="symlink pointing outside"):
        run(raw_dir, tmp_path, params)


@pytest.mark.parametrize("how, fit", [("resize", "resized"), ("pad", "padded")])
def test_mixed_sizes(raw_dir, tmp_path, params, how, fit):
    write_crop(raw_dir / "ALS" / "SD000_10_crops_r" / "small.tif", blob(size=100))
    manifest = run(raw_dir, tmp_path, params, on_size_mismatch=how).manifest
    row = manifest[manifest["path"].str.endswith("small.tif")].iloc[0]
    assert row["fit"] == fit and row["height"] == 100
    assert load_array(tmp_path / "cache" / row["cache_file"]).shape == (1, 128, 128)
    with pytest.raises(PipelineError, match=r"2 sizes \(128x128 px: 14, 100x100 px: 1\)") as err:
        run(raw_dir, tmp_path, params, on_size_mismatch="error")
    assert str(err.value).endswith("remove the odd ones (100x100 px: "
                                   f"{raw_dir / 'ALS' / 'SD000_10_crops_r' / 'small.tif'})")


def test_relative_raw_dir_message_mentions_dvc_queue(tmp_path, params, monkeypatch):
    exp_dir = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "run1"
    exp_dir.mkdir(parents=True)
    monkeypatch.chdir(exp_dir)
    from pathlib import Path
    with pytest.raises(PipelineError, match="absolute path, or `dvc add`"):
        run(Path("../shared/data/nuclei"), tmp_path, params)


def _ingest_cli(raw, out, tmp_path, params_file):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.stages.ingest", "--raw-dir", str(raw), "--out", str(out),
         "--metrics", str(tmp_path / "m.json"), "--report", str(tmp_path / "bad.csv"),
         "--params", str(params_file)], capture_output=True, text=True, cwd=REPO)


def test_cli_bad_input_is_one_line_and_keeps_earlier_output(raw_dir, tmp_path):
    params_file = write_params(tmp_path / "params.yaml", data={"crop_size": 128})
    out = tmp_path / "ingested"
    first = _ingest_cli(raw_dir, out, tmp_path, params_file)
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in (out / "crops").iterdir())
    manifest_before = (out / "manifest.csv").read_bytes()
    _corrupt(raw_dir / "ALS" / "SD000_10_crops_r" / "broken.tif")
    second = _ingest_cli(raw_dir, out, tmp_path, params_file)
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    error_lines = [line for line in second.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "broken.tif" in error_lines[0]
    assert sorted(p.name for p in (out / "crops").iterdir()) == before
    assert (out / "manifest.csv").read_bytes() == manifest_before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert len(pd.read_csv(out / "manifest.csv")) == 14


def test_files_of_other_extensions_are_counted_by_extension_on_the_console(raw_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    for index in range(3):
        (raw_dir / "ALS" / "SD000_10_crops_r" / f"extra{index}.jpg").write_bytes(b"\xff\xd8")
    (raw_dir / "Control" / "CT000_10_crops_r" / "notes.txt").write_text("settings")
    params_file = write_params(tmp_path / "params.yaml", data={"crop_size": 128})
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.ingest", "--raw-dir", raw_dir, "--out",
         tmp_path / "out", "--metrics", tmp_path / "m.json", "--report", tmp_path / "bad.csv",
         "--params", params_file], capture_output=True, text=True, cwd=REPO,
        env=os.environ | {"COLUMNS": "200"})
    said = result.stdout + result.stderr
    assert result.returncode == 0, said
    assert "left out by extension (not in data.extensions): 3 .jpg, 1 .txt" in said
    assert json.loads((tmp_path / "m.json").read_text())["ignored_files"] == 4
