"""Stages that do no tensor work start without torch: `--help`, ingest, split, compare and
report stay fast, and parameter validation needs no torchvision."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

TORCH_FREE = ["stages.check_params", "stages.make_demo", "stages.ingest", "stages.split",
              "stages.compare", "stages.report", "tools.grid", "tools.ablation",
              "tools.results", "tools.run_demo", "tools.experiments_page"]

PROBE = """
import runpy, sys
sys.argv = ["stage", "--help"]
try:
    runpy.run_module("pipeline.{module}", run_name="__main__")
except SystemExit:
    pass
from pipeline.config import load_params
load_params("params.yaml")
print(sorted(m for m in ("torch", "torchvision", "kornia", "basicsr") if m in sys.modules))
"""


@pytest.mark.parametrize("module", TORCH_FREE)
def test_torch_free_stage_imports_no_torch(module):
    result = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", (module, result.stdout)
