"""Threads that fit the machine: usable CPUs shared among the pipeline stages running."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import ParamsError, load_params
from pipeline.runtime.threads import fit_threads, fitting_threads, running_stages
from tests.conftest import write_params


def fake_proc(root, commands: list[list[str]]):
    for pid, command in enumerate(commands, start=100):
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(b"\x00".join(c.encode() for c in command))
    (root / "self").mkdir()  # not a process id: ignored
    return root


def test_running_stages_counts_stage_processes_only(tmp_path):
    proc = fake_proc(tmp_path, [
        ["python", "-m", "pipeline.stages.train_sr", "--pairs", "data/pairs"],
        ["/usr/bin/python3", "-m", "pipeline.stages.train_classifier", "--backbone", "vgg16"],
        ["python", "-m", "pytest", "tests/test_threads.py"],
        ["dvc", "exp", "run"],
        ["vim", "pipeline.stages.train_sr.py"],  # the name alone is not a stage
    ])
    assert running_stages(proc) == 2
    assert running_stages(tmp_path / "missing") == 1


@pytest.mark.parametrize(("cpus", "stages", "expected"),
                         [(2, 1, 2), (2, 2, 1), (2, 3, 1), (16, 4, 4), (16, 3, 5), (1, 1, 1)])
def test_auto_shares_the_usable_cpus_among_the_running_stages(cpus, stages, expected,
                                                              monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert fitting_threads("auto", cpus=cpus, stages=stages) == expected


def test_omp_num_threads_is_a_ceiling_for_auto(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert fitting_threads("auto", cpus=16, stages=1) == 3
    assert fitting_threads("auto", cpus=16, stages=2) == 1
    assert fitting_threads(8, cpus=16, stages=1) == 8  # a number is taken as it is


def test_a_number_fixes_the_threads_and_fit_threads_applies_it():
    before = torch.get_num_threads()
    try:
        assert fitting_threads(3, cpus=2, stages=5) == 3
        assert fit_threads(1) == 1 and torch.get_num_threads() == 1
        assert fit_threads() == 1  # a loop refits with the process's setting
    finally:
        torch.set_num_threads(before)
        fit_threads("auto")


def test_runtime_threads_is_checked(tmp_path):
    assert load_params(write_params(tmp_path / "a.yaml", runtime={"threads": 2})
                       ).runtime.threads == 2
    for bad in (0, "many"):
        with pytest.raises(ParamsError, match="runtime.threads"):
            load_params(write_params(tmp_path / "b.yaml", runtime={"threads": bad}))
