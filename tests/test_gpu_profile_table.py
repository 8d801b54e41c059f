"""bench/gpu_profile_table.py: nvidia-smi samples are given to the stage that was running."""

from __future__ import annotations

import datetime
import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_params

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


def test_the_readme_gpu_profile_command_validates(tmp_path):
    """The README's command for a GPU server composes to valid params: the gpu profile with
    the data keys it names, and nothing else needed."""
    from dvc.utils.hydra import compose_and_dump

    repo = SCRIPT.parents[1]
    readme = (repo / "README.md").read_text()
    command = "dvc exp run -S profile=gpu -S data.raw_dir=/abs/path/to/crops -S data.positive=ALS"
    assert command in readme
    path = tmp_path / "params.yaml"
    compose_and_dump(path, str(repo / "pipeline" / "conf"), None, "config", "",
                     [arg for arg in command.split()[3:] if arg != "-S"])
    params = load_params(path)
    assert params.profile == "gpu" and params.sr.hr_patch == 128 and params.data.crop_size == 128
    assert params.sr.discriminator == "vgg" and params.classifier.precision == "auto"
