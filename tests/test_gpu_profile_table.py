"""bench/gpu_profile_table.py: nvidia-smi samples are given to the stage that was running."""

from __future__ import annotations

import datetime
import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.config import ParamsError, load_params

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_profile_table.py"


@pytest.fixture(scope="module")
def table_module():
    spec = importlib.util.spec_from_file_location("gpu_profile_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_samples_are_attributed_to_the_running_stage(tmp_path, table_module):
    start = datetime.datetime(2026, 11, 29, 3, 0, 0)
    lines = ["# nvidia-smi may print a header or a blank line", ""]
    for second, util in enumerate([10, 20, 90, 100, 80, 0]):
        when = (start + datetime.timedelta(seconds=second)).strftime("%Y/%m/%d %H:%M:%S.%f")
        lines.append(f"{when[:-3]}, {util}, {1000 + second}")
    (tmp_path / "util.csv").write_text("\n".join(lines) + "\n")
    t0 = start.timestamp()
    timeline = pd.DataFrame({"stage": ["ingest", "train_sr", "report"],
                             "start": [t0, t0 + 2, t0 + 5], "end": [t0 + 2, t0 + 5, t0 + 6]})
    samples = table_module.read_utilisation(tmp_path / "util.csv")
    assert len(samples) == 6
    table = table_module.stage_table(timeline, samples).set_index("stage")
    assert table.loc["ingest", "gpu_util_mean_%"] == 15.0
    assert table.loc["train_sr", "gpu_util_mean_%"] == 90.0
    assert table.loc["train_sr", "memory_max_mib"] == 1004
    lines = table_module.summary(timeline, samples)
    assert "mean GPU utilisation 50.0%" in lines[0]
    assert lines[1].startswith("training stages (train_sr)") and "90.0%" in lines[1]


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`dvc exp run -S key.sub=value` on a params dict (values parsed as YAML, as DVC does)."""
    for override in overrides:
        key, value = override.split("=", 1)
        *parents, leaf = key.split(".")
        node = raw
        for parent in parents:
            node = node[parent]
        assert leaf in node, f"{key} is not a key of params.yaml"
        node[leaf] = yaml.safe_load(value)
    return raw


def test_the_readme_gpu_profile_command_validates(tmp_path):
    """The README's command: the profile, then the data keys it names (crop_size included:
    the profile's 128 px SR patches need crops at least that large)."""
    repo = SCRIPT.parents[1]
    profile = [line.strip() for line in (repo / "bench" / "gpu_profile.txt").read_text()
               .splitlines() if line.strip() and not line.startswith("#")]
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    data_keys = ["data.raw_dir=/abs/path/to/crops", "data.positive=ALS"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(raw, profile + data_keys)))
    with pytest.raises(ParamsError, match="smaller than the SR patch"):
        load_params(path)  # without data.crop_size: the README says to add it
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    path.write_text(yaml.safe_dump(apply_overrides(raw, profile + data_keys
                                                   + ["data.crop_size=128"])))
    params = load_params(path)
    assert params.sr.hr_patch == 128 and params.batch_size == 64
    readme = (repo / "README.md").read_text()
    assert "-S data.positive=ALS -S data.crop_size=128" in readme
