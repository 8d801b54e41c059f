"""bench/gpu_profile_table.py: nvidia-smi samples are given to the stage that was running."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import load_params
from tests.conftest import REPO, SHARED_DATA

SCRIPT = REPO / "bench" / "gpu_profile_table.py"


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

    readme = (REPO / "README.md").read_text()
    command = "dvc exp run -S profile=gpu -S data.raw_dir=/abs/path/to/crops -S data.positive=ALS"
    assert command in readme
    path = tmp_path / "params.yaml"
    compose_and_dump(path, str(REPO / "pipeline" / "conf"), None, "config", "",
                     [arg for arg in command.split()[3:] if arg != "-S"])
    params = load_params(path)
    assert params.profile == "gpu" and params.sr.hr_patch == 128 and params.data.crop_size == 128
    assert params.sr.discriminator == "vgg" and params.classifier.precision == "auto"


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "nuclei").is_dir(),
                    reason="needs ../shared/data/nuclei (real crops beside the repository)")
def test_the_gpu_profile_script_runs_end_to_end_in_its_dry_mode(tmp_path):
    """bench/gpu_profile.sh with GPU_PROFILE_DRY=1: the gpu profile's own path (online
    augmentation, nothing stored) through every stage at toy size on real crops, then both
    benches, and a table. Catches a profile override that no longer composes before anyone
    spends GPU time on it (the dry run once stopped at ingest: real 128 px crops, toy 32)."""
    crops = tmp_path / "crops"
    for cell_line in ("NIH3T3", "U2OS"):  # 8 fields each: every stage, a quarter of the time
        for sample in sorted((SHARED_DATA / "nuclei" / cell_line).iterdir())[:8]:
            shutil.copytree(sample, crops / cell_line / sample.name)
    out = tmp_path / "out"
    env = os.environ | {"GPU_PROFILE_DRY": "1", "DVC_NO_ANALYTICS": "1",
                        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "bench/gpu_profile.sh", str(crops), str(out)], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    table = (out / "table.md").read_text()
    assert "The DAG failed" not in table
    for stage in ("| ingest ", "| train_sr ", "| augment ", "| train_classifier@mobilenet_v3_large",
                  "| evaluate@mobilenet_v3_large", "| report "):
        assert stage in table
    project = out / "project"
    augment = json.loads((project / "reports" / "augment" / "metrics.json").read_text())
    assert augment["online"] is True and augment["images_stored"] is False
    assert not (project / "data" / "augmented" / "train_images.npy").exists()
    trained = json.loads(
        (project / "reports" / "train" / "mobilenet_v3_large" / "metrics.json").read_text())
    assert trained["train_images_on"] == "host" and trained["cache_on_device"] == "auto"
    assert "ratios (train_classifier / bare loop" in table and "gan phase" in table


def test_a_failed_dag_heads_the_gpu_profile_table(tmp_path, table_module, monkeypatch):
    (tmp_path / "util.csv").write_text("")
    (tmp_path / "dag_exit_status").write_text("1\n")
    monkeypatch.setattr(sys, "argv", ["gpu_profile_table.py", str(tmp_path)])
    table_module.main()
    assert "The DAG failed (exit status 1)" in (tmp_path / "table.md").read_text()
    (tmp_path / "dag_exit_status").write_text("0\n")
    table_module.main()
    assert "The DAG failed" not in (tmp_path / "table.md").read_text()
