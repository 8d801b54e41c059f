"""Named profiles (pipeline/conf, composed by DVC's Hydra into params.yaml), and crops taken
at their own size: nothing resized unless asked for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from dvc.utils.hydra import compose_and_dump

from pipeline.cli import PipelineError
from pipeline.config import CONF_DIR, load_params
from pipeline.data.ingest import ingest_crops
from pipeline.stages.check_params import check_profile
from tests.conftest import REPO, blob, write_crop, write_params

PROFILES = sorted(p.stem for p in (CONF_DIR / "profile").glob("*.yaml"))


def compose(tmp_path: Path, *overrides: str) -> Path:
    """params.yaml as `dvc exp run -S ...` composes it."""
    out = tmp_path / f"params-{len(list(tmp_path.glob('params-*')))}.yaml"
    compose_and_dump(out, str(CONF_DIR), None, "config", "", list(overrides))
    return out


def test_the_committed_params_yaml_is_the_default_composition(tmp_path):
    """params.yaml cannot drift from pipeline/conf: it is what `dvc exp run` would write."""
    composed = yaml.safe_load(compose(tmp_path).read_text())
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == composed
    assert composed["profile"] == "demo"


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_composes_to_valid_params(tmp_path, name):
    assert PROFILES == ["cpu", "demo", "gpu"]
    params = load_params(compose(tmp_path, f"profile={name}"))
    assert params.profile == name
    assert params.data.on_size_mismatch == "error"  # no profile resizes silently


def test_an_override_sits_on_top_of_a_profile_and_check_params_lists_it(tmp_path):
    path = compose(tmp_path, "profile=cpu", "sr.iters_psnr=100")
    params = load_params(path)
    assert params.sr.iters_psnr == 100 and params.data.crop_size == 128
    overrides = check_profile(params, yaml.safe_load(path.read_text()))
    assert overrides == {"sr.iters_psnr": (100, 3000)}


def test_a_profile_line_edited_by_hand_is_refused_with_the_command_that_composes(tmp_path):
    path = compose(tmp_path)  # the demo's values
    edited = tmp_path / "edited.yaml"
    edited.write_text(path.read_text().replace("profile: demo", "profile: cpu"))
    with pytest.raises(PipelineError, match="its values are profile demo's.*dvc exp run -S "
                                            "profile=cpu"):
        check_profile(load_params(edited), yaml.safe_load(edited.read_text()))


def _raw(root: Path, size: int, odd: dict[str, int] | None = None) -> Path:
    for class_name in ("ALS", "Control"):
        for group in range(3):
            for crop in range(2):
                edge = (odd or {}).get(f"{class_name}{group}{crop}", size)
                write_crop(root / class_name / f"{class_name[:2]}{group}_crops_r" / f"{crop}.tif",
                           blob(size=edge, seed=group + crop))
    return root


def test_crops_of_another_size_stop_ingest_naming_both_sizes(tmp_path):
    raw = _raw(tmp_path / "raw", 128)
    demo = load_params(write_params(tmp_path / "p.yaml", data={"crop_size": 32}))
    with pytest.raises(PipelineError) as caught:
        ingest_crops(raw, tmp_path / "cache", demo.data)
    said = str(caught.value)
    assert "128x128 px (12 of them)" in said and "data.crop_size is 32" in said
    assert "-S data.crop_size=128" in said and "on_size_mismatch=resize|pad" in said
    mixed = _raw(tmp_path / "mixed", 128, {"ALS00": 120, "ALS01": 120})
    with pytest.raises(PipelineError, match=r"2 sizes \(128x128 px: 10, 120x120 px: 2\)"):
        ingest_crops(mixed, tmp_path / "cache2", load_params(write_params(
            tmp_path / "q.yaml", data={"crop_size": 128})).data)


@pytest.mark.parametrize("how", ["resize", "pad"])
def test_resize_or_pad_only_when_asked_and_counted(tmp_path, how):
    raw = _raw(tmp_path / "raw", 128)
    params = load_params(write_params(tmp_path / "p.yaml", data={
        "crop_size": 32, "on_size_mismatch": how}))
    metrics = ingest_crops(raw, tmp_path / "cache", params.data).metrics
    assert metrics["padded" if how == "pad" else "resized"] == 12


def test_crops_at_the_profile_size_are_taken_as_they_are(tmp_path):
    raw = _raw(tmp_path / "raw", 128)
    params = load_params(compose(tmp_path, "profile=cpu", f"data.raw_dir={raw}"))
    metrics = ingest_crops(raw, tmp_path / "cache", params.data).metrics
    assert metrics["crops"] == 12 and metrics["resized"] == 0 and metrics["padded"] == 0
    stored = np.load(next((tmp_path / "cache").glob("*.npy")))
    assert stored.shape == (1, 128, 128)
    json.dumps(metrics)  # the metrics file can hold it
