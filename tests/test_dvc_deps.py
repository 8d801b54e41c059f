"""DVC caching that cannot go stale: each stage's deps hold all the code it imports (and a
folder dep only where the stage imports the whole folder), no stage module imports another,
and the committed dvc.lock records the code as it is in the working tree (`dvc status`).

`python tests/test_dvc_deps.py` lists what is missing or too much, stage by stage.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("pipeline", "models")
STAGE_MODULE = re.compile(r"-m\s+(pipeline\.stages\.\w+)")


def module_file(module: str, root: Path) -> Path | None:
    """The file of a project module (a package's __init__.py), None outside the project."""
    if module.split(".")[0] not in CODE_ROOTS:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path) -> set[str]:
    """Project modules `path` imports anywhere in it (functions included), with the
    packages Python imports on the way (`a.b.c` imports `a` and `a.b` first)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)
                      if module_file(".".join(parts[:i]), root)}
    return found


def import_closure(modules: list[str], root: Path = REPO) -> set[str]:
    """Repository-relative files of `modules` (with the packages above them, which `python
    -m` imports first) and of everything they import, transitively."""
    seen = set()
    todo = [".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 2)]
    while todo:
        module = todo.pop()
        path = module_file(module, root)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo += sorted(imported_modules(path, root))
    return {p.relative_to(root).as_posix() for p in seen}


def load_stages(root: Path = REPO) -> dict[str, dict]:
    """name -> {cmd, deps} for every stage, as DVC itself resolves dvc.yaml (foreach, ${})."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {stage.addressing: {"cmd": stage.cmd, "deps": [d.def_path for d in stage.deps]}
                for stage in repo.index.stages}


def code_files(root: Path = REPO) -> set[str]:
    return {p.relative_to(root).as_posix() for top in CODE_ROOTS
            for p in (root / top).rglob("*.py")}


def deps_problems(stages: dict[str, dict], root: Path = REPO) -> list[str]:
    """For each stage: code it imports that no dep covers, and folder deps it does not
    import whole (a change anywhere in such a folder would rerun it for nothing)."""
    problems = []
    every_file = code_files(root)
    for name, stage in stages.items():
        closure = import_closure(STAGE_MODULE.findall(stage["cmd"]), root)
        if not closure:
            problems.append(f"{name}: runs no `python -m pipeline.stages.<stage>`")
            continue
        code_deps = [d.rstrip("/") for d in stage["deps"] if d.split("/")[0] in CODE_ROOTS]
        covered = set()
        for dep in code_deps:
            inside = {f for f in every_file if f == dep or f.startswith(dep + "/")}
            covered |= inside
            if (root / dep).is_dir() and not inside <= closure:
                problems.append(f"{name}: folder dep {dep}/ holds code it never imports: "
                                f"{', '.join(sorted(inside - closure))}")
        for missing in sorted(closure - covered):
            problems.append(f"{name}: imports {missing}, which is not in its deps")
        deps = {d.rstrip("/") for d in stage["deps"]}
        for module in sorted(closure):
            for folder in files_read_beside(root / module, root):
                if folder not in deps:
                    problems.append(f"{name}: {module} reads {folder}/, which is not in its "
                                    "deps")
    return problems


def files_read_beside(module: Path, root: Path) -> list[str]:
    """Folders of non-Python files a module reads beside itself (`Path(__file__).with_name(
    "templates")`): code as much as the module, so its stages must list them."""
    folders = re.findall(r'with_name\("([^"]+)"\)', module.read_text())
    return [(module.parent / f).relative_to(root).as_posix() for f in folders
            if (module.parent / f).is_dir()]


def test_a_folder_a_module_reads_beside_itself_must_be_a_dep():
    stages = load_stages()
    without = {name: {**stage, "deps": [d for d in stage["deps"]
                                        if d.rstrip("/") != "pipeline/reporting/templates"]}
               for name, stage in stages.items()}
    assert "report: pipeline/reporting/html.py reads pipeline/reporting/templates/, which " \
           "is not in its deps" in deps_problems(without)


def stage_modules_importing_stages(root: Path = REPO) -> list[str]:
    found = []
    for path in sorted((root / "pipeline" / "stages").glob("*.py")):
        own = f"pipeline.stages.{path.stem}"
        others = {m for m in imported_modules(path, root)
                  if m.startswith("pipeline.stages.") and m != own}
        found += [f"{path.name} imports {m}" for m in sorted(others)]
    return found


def test_every_stage_lists_its_import_closure_and_only_whole_folders():
    assert deps_problems(load_stages()) == []


def test_stage_modules_are_one_per_stage_short_and_import_no_stage():
    stages = load_stages()
    run = {module.rsplit(".", 1)[1] for stage in stages.values()
           for module in STAGE_MODULE.findall(stage["cmd"])}
    # predict@<folder> exists only with predict.input_dir set: it is a stage all the same
    run.add("predict")
    files = {p.stem for p in (REPO / "pipeline" / "stages").glob("*.py")} - {"__init__"}
    assert files == run
    too_long = {p.name: n for p in (REPO / "pipeline" / "stages").glob("*.py")
                if (n := len(p.read_text().splitlines())) > 150}
    assert too_long == {}
    assert stage_modules_importing_stages() == []
    for stage in stages.values():  # every module dvc.yaml runs is a stage module
        assert all(m.startswith("pipeline.stages.")
                   for m in re.findall(r"-m\s+(\S+)", stage["cmd"])), stage["cmd"]


def test_closure_follows_every_import_form(tmp_path):
    files = {
        "pipeline/__init__.py": "", "pipeline/stages/__init__.py": "",
        "pipeline/stages/one.py": "import os\nfrom pipeline import helper\n"
                                  "def main():\n    from pipeline.sub import lazy\n",
        "pipeline/helper.py": "from models.net import Net\nimport pipeline.sub.deep\n",
        "pipeline/sub/__init__.py": "", "pipeline/sub/lazy.py": "", "pipeline/sub/deep.py": "",
        "pipeline/unused.py": "", "models/__init__.py": "", "models/net.py": "import torch\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert import_closure(["pipeline.stages.one"], tmp_path) == {
        "pipeline/__init__.py", "pipeline/stages/__init__.py", "pipeline/stages/one.py",
        "pipeline/helper.py", "pipeline/sub/__init__.py", "pipeline/sub/lazy.py",
        "pipeline/sub/deep.py", "models/__init__.py", "models/net.py"}
    stage = {"cmd": "python -m pipeline.stages.one --x 1"}
    assert deps_problems({"one": stage | {"deps": ["pipeline/stages/one.py", "pipeline/sub",
                                                    "models", "pipeline/__init__.py",
                                                    "pipeline/stages/__init__.py",
                                                    "pipeline/helper.py"]}}, tmp_path) == []
    said = deps_problems({"one": stage | {"deps": ["pipeline", "models/net.py"]}}, tmp_path)
    assert said == ["one: folder dep pipeline/ holds code it never imports: pipeline/unused.py",
                    "one: imports models/__init__.py, which is not in its deps"]


def test_dvc_status_finds_the_committed_lock_in_step_with_the_code(tmp_path):
    """`dvc status` on a copy of the tracked files: no stage may have a changed code dep.
    (Outputs are absent in a copy; only code deps are judged.)"""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    for name in tracked:
        if (REPO / name).is_file():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_bytes((REPO / name).read_bytes())
    env = os.environ | {"DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = subprocess.run([str(Path(sys.executable).with_name("dvc")), "status", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    stale = {f"{stage}: {path}" for stage, changes in json.loads(result.stdout).items()
             for change in changes if isinstance(change, dict)
             for path, state in change.get("changed deps", {}).items()
             if path.split("/")[0] in CODE_ROOTS or path == "params.yaml"}
    assert stale == set(), "run dvc repro and commit dvc.lock"


def test_every_param_a_stage_lists_exists_in_params_yaml():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        body = stage.get("do", stage)
        for entry in body.get("params", []):
            keys = [entry] if isinstance(entry, str) else []
            for key in keys:
                value = params
                for part in key.split("."):
                    assert isinstance(value, dict) and part in value, f"{name}: {key}"
                    value = value[part]


if __name__ == "__main__":
    print("\n".join(deps_problems(load_stages()) + stage_modules_importing_stages())
          or "every stage's deps hold its code")
