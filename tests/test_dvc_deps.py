"""DVC caching that cannot go stale: each stage's deps hold all the code it imports, and the
committed dvc.lock records the code as it is in the working tree.

`python tests/test_dvc_deps.py` lists what is missing, stage by stage.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("pipeline", "models")
LAUNCHER = "pipeline.launch"
FIX = "run dvc repro and commit dvc.lock"

# ---------------------------------------------------------------------------------------------
# dvc.yaml: stages with ${...} resolved and foreach expanded, as DVC names them (stage@item)
# ---------------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{\s*([^}\s]+)\s*\}")


def _lookup(context: dict, dotted: str):
    value = context
    for key in dotted.split("."):
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def _interpolate(value, context: dict):
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: str(_lookup(context, m.group(1))), value)
    if isinstance(value, list):
        return [_interpolate(v, context) for v in value]
    if isinstance(value, dict):
        return {_interpolate(k, context): _interpolate(v, context) for k, v in value.items()}
    return value


def _dep_paths(deps: list) -> list[str]:
    # A dep is a path, or a one-key mapping {path: options}.
    return [next(iter(d)) if isinstance(d, dict) else d for d in deps or []]


def load_stages(root: Path = REPO) -> dict[str, dict]:
    """name -> {"cmd": str, "deps": [path, ...]} for every stage of root/dvc.yaml."""
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    params_file = root / "params.yaml"
    context = yaml.safe_load(params_file.read_text()) if params_file.exists() else {}
    for entry in dvc_yaml.get("vars", []):
        if isinstance(entry, dict):
            context = {**context, **entry}
    stages = {}
    for name, body in dvc_yaml["stages"].items():
        if "matrix" in body:
            raise NotImplementedError(f"stage {name}: matrix stages are not expanded here")
        if "foreach" not in body:
            stages[name] = _interpolate(body, context)
            continue
        items = _interpolate(body["foreach"], context)
        if isinstance(items, str):  # foreach: ${some.list}
            items = _lookup(context, _INTERPOLATION.fullmatch(body["foreach"]).group(1))
        pairs = items.items() if isinstance(items, dict) else (
            (str(item) if not isinstance(item, dict | list) else str(i), item)
            for i, item in enumerate(items))
        for key, item in pairs:
            stages[f"{name}@{key}"] = _interpolate(body["do"],
                                                   {**context, "item": item, "key": key})
    return {name: {"cmd": " ".join(body["cmd"]) if isinstance(body["cmd"], list)
                   else body["cmd"], "deps": _dep_paths(body.get("deps"))}
            for name, body in stages.items()}


# ---------------------------------------------------------------------------------------------
# The import closure of a stage's entry modules inside the project, by reading source with ast
# ---------------------------------------------------------------------------------------------


def _module_path(name: str, root: Path) -> str | None:
    """Project-relative file that `import name` executes last: a module or a package __init__."""
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return (base / "__init__.py").relative_to(root).as_posix()
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py").relative_to(root).as_posix()
    return None


def _files_for_import(name: str, root: Path) -> list[str]:
    """Every project file `import name` runs: each parent package's __init__ and the module."""
    if name.split(".")[0] not in CODE_ROOTS:
        return []
    parts = name.split(".")
    found = (_module_path(".".join(parts[:i]), root) for i in range(1, len(parts) + 1))
    return [f for f in found if f]


def _imported_names(path: Path, module: str) -> set[str]:
    """Dotted names a module imports anywhere (top level, in functions, in branches)."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module
            names.add(base)
            # `from a import b`: b may be a submodule; resolving it as one is harmless if not.
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def import_closure(modules: list[str], root: Path = REPO) -> set[str]:
    """Project-relative paths of every file under pipeline/ and models/ the modules import."""
    seen: set[str] = set()
    pending = [f for m in modules for f in _files_for_import(m, root)]
    while pending:
        relative = pending.pop()
        if relative in seen:
            continue
        seen.add(relative)
        path = root / relative
        parts = PurePosixPath(relative).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for name in _imported_names(path, module):
            pending.extend(_files_for_import(name, root))
    return seen


def entry_modules(cmd: str, root: Path = REPO) -> list[str]:
    """Project modules a stage's cmd runs: `-m pipeline.X`, and the module pipeline.launch
    starts (`-m pipeline.launch --nproc N pipeline.X ...`); a `pipeline/x.py` script too."""
    tokens = shlex.split(cmd)
    modules: list[str] = []
    for i, token in enumerate(tokens):
        if token == "-m" and i + 1 < len(tokens):
            modules.append(tokens[i + 1])
        elif token.endswith(".py") and PurePosixPath(token).parts[:1] in [(r,) for r in CODE_ROOTS]:
            modules.append(".".join(PurePosixPath(token).with_suffix("").parts))
    if LAUNCHER in modules:
        after = tokens[tokens.index(LAUNCHER) + 1:]
        launched = next((t for t in after if re.fullmatch(r"[A-Za-z_][\w.]*", t)
                         and t.split(".")[0] in CODE_ROOTS and _module_path(t, root)), None)
        if launched:
            modules.append(launched)
    return [m for m in modules if m.split(".")[0] in CODE_ROOTS]


def _covered(file: str, deps: list[str]) -> bool:
    path = PurePosixPath(file)
    for dep in deps:
        dep_path = PurePosixPath(dep.rstrip("/") or ".")
        if path == dep_path or dep_path in path.parents:
            return True
    return False


def missing_deps(root: Path = REPO) -> dict[str, list[str]]:
    """stage -> code files its entry modules import that none of its deps covers."""
    missing = {}
    for name, stage in load_stages(root).items():
        modules = entry_modules(stage["cmd"], root)
        if not modules:
            missing[name] = ["<no pipeline/models module found in cmd>"]
            continue
        files = import_closure(modules, root)
        absent = sorted(f for f in files if not _covered(f, stage["deps"]))
        if absent:
            missing[name] = absent
    return missing


# ---------------------------------------------------------------------------------------------
# dvc.lock: DVC's hashes of the code deps, recomputed the way dvc_data.hashfile does
# ---------------------------------------------------------------------------------------------

# dvc_data.hashfile.istextfile: the first 512 bytes decide whether a chunk counts as text.
_TEXT_CHARS = bytes(range(32, 127)) + b"\n\r\t\f\b"
_CHUNK = 2**20  # dvc_data.hashfile.hash.fobj_md5 reads 1 MiB at a time


def _is_text(block: bytes) -> bool:
    if not block:
        return True
    if b"\x00" in block:
        return False
    return len(block.translate(None, _TEXT_CHARS)) / len(block) <= 0.30


def file_hash(path: Path, hash_name: str = "md5") -> str:
    """DVC's file hash: md5 of the bytes ("md5", DVC 3), or of the bytes with CRLF -> LF in
    text chunks ("md5-dos2unix", what a DVC 2 lock entry without `hash: md5` recorded)."""
    hasher = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            if hash_name == "md5-dos2unix" and _is_text(chunk[:512]):
                chunk = chunk.replace(b"\r\n", b"\n")
            hasher.update(chunk)
    return hasher.hexdigest()


def _dvcignored(relative: PurePosixPath, patterns: list[str]) -> bool:
    # Enough of .dvcignore for code folders: unanchored name patterns (__pycache__/, *.pyc).
    return any(PurePosixPath(part).match(p.rstrip("/")) for part in relative.parts
               for p in patterns if "/" not in p.rstrip("/") and not p.startswith("!"))


def dir_hash(path: Path, hash_name: str = "md5", root: Path = REPO) -> str:
    """DVC's folder hash (dvc_data Tree.digest): md5 of the sorted JSON list of its files."""
    ignore_file = root / ".dvcignore"
    patterns = [line.strip() for line in ignore_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")] if ignore_file.exists() else []
    entries = []
    for file in path.rglob("*"):
        relative = PurePosixPath(file.relative_to(path).as_posix())
        if file.is_file() and not _dvcignored(relative, patterns):
            entries.append({"md5": file_hash(file, hash_name), "relpath": str(relative)})
    entries.sort(key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8"),
                       usedforsecurity=False).hexdigest() + ".dir"


def stale_lock_entries(root: Path = REPO) -> list[str]:
    """Problems with dvc.lock's record of the code: stages it lacks, code deps whose hash no
    longer matches the working tree."""
    lock = yaml.safe_load((root / "dvc.lock").read_text()) if (root / "dvc.lock").exists() else {}
    locked = (lock or {}).get("stages", {})
    problems = [f"stage {name}: in dvc.yaml but not in dvc.lock; {FIX}"
                for name in load_stages(root) if name not in locked]
    for name, stage in locked.items():
        for dep in stage.get("deps", []):
            path = PurePosixPath(dep["path"])
            if path.parts[0] not in CODE_ROOTS:
                continue
            recorded = dep.get("md5")
            # A DVC 2 entry has no `hash` field and was hashed as md5-dos2unix.
            hash_name = "md5" if dep.get("hash") == "md5" else "md5-dos2unix"
            file = root / path
            if not file.exists():
                problems.append(f"stage {name}: dvc.lock lists {path}, which no longer exists; "
                                f"{FIX}")
                continue
            current = (dir_hash(file, hash_name, root) if str(recorded).endswith(".dir")
                       else file_hash(file, hash_name))
            if current != recorded:
                problems.append(f"stage {name}: dvc.lock's md5 of {path} is stale "
                                f"(lock {recorded}, working tree {current}); {FIX}")
    return problems


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def test_every_stage_lists_its_import_closure_as_deps():
    missing = missing_deps()
    assert not missing, "\n".join(f"stage {name}: deps miss {', '.join(files)}"
                                  for name, files in missing.items())


def test_dvc_lock_records_the_code_in_the_working_tree():
    problems = stale_lock_entries()
    assert not problems, "\n".join(problems)


# The machinery itself, on a small made-up project, so that a pass above means something.


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)


def test_closure_follows_every_import_form(tmp_path):
    _write(tmp_path, {
        "pipeline/__init__.py": "",
        "pipeline/stage.py": "import numpy\nfrom pipeline.helper import thing\n"
                             "def main():\n    from pipeline import lazy\n",
        "pipeline/helper.py": "from models.net import Net\nimport pipeline.sub.deep\n",
        "pipeline/lazy.py": "from . import rel\nfrom .pkg import x\n",
        "pipeline/rel.py": "",
        "pipeline/pkg/__init__.py": "from ..unused_elsewhere import y\n",
        "pipeline/unused_elsewhere.py": "",
        "pipeline/sub/__init__.py": "",
        "pipeline/sub/deep.py": "",
        "pipeline/untouched.py": "",
        "models/__init__.py": "",
        "models/net.py": "import torch\n",
    })
    assert import_closure(["pipeline.stage"], tmp_path) == {
        "pipeline/__init__.py", "pipeline/stage.py", "pipeline/helper.py", "pipeline/lazy.py",
        "pipeline/rel.py", "pipeline/pkg/__init__.py", "pipeline/unused_elsewhere.py",
        "pipeline/sub/__init__.py", "pipeline/sub/deep.py", "models/__init__.py",
        "models/net.py"}


def test_missing_deps_names_stage_and_file_and_accepts_folders(tmp_path):
    _write(tmp_path, {
        "pipeline/__init__.py": "", "pipeline/launch.py": "",
        "pipeline/train.py": "from models import net\n",
        "models/__init__.py": "", "models/net.py": "",
        "params.yaml": "nets: [a, b]\nnproc: 2\n",
        "dvc.yaml": yaml.safe_dump({"stages": {
            "one": {"cmd": "python -m pipeline.train --x 1", "deps": ["pipeline", "data/in"]},
            "two": {"foreach": "${nets}", "do": {
                "cmd": "python -m pipeline.launch --nproc ${nproc} pipeline.train --n ${item}",
                "deps": ["pipeline/train.py", "models/", {"data/${item}": {}}]}},
        }}),
    })
    stages = load_stages(tmp_path)
    assert set(stages) == {"one", "two@a", "two@b"}
    assert stages["two@b"]["cmd"].endswith("pipeline.train --n b")
    assert entry_modules(stages["two@a"]["cmd"], tmp_path) == ["pipeline.launch", "pipeline.train"]
    assert missing_deps(tmp_path) == {
        "one": ["models/__init__.py", "models/net.py"],
        "two@a": ["pipeline/__init__.py", "pipeline/launch.py"],
        "two@b": ["pipeline/__init__.py", "pipeline/launch.py"]}


def test_hashes_match_dvc_data(tmp_path):
    """Our file and folder hashes are DVC's (checked against dvc_data where it is installed)."""
    hashfile = pytest.importorskip("dvc_data.hashfile.hash")
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    _write(tmp_path, {"code/a.py": "x = 1\r\ny = 2\r\n", "code/sub/b.py": "z = 3\n",
                      "code/__pycache__/a.pyc": "junk", ".dvcignore": "__pycache__/\n"})
    crlf = tmp_path / "code/a.py"
    for name in ("md5", "md5-dos2unix"):
        assert file_hash(crlf, name) == hashfile.file_md5(crlf, name=name)
    assert file_hash(crlf, "md5") != file_hash(crlf, "md5-dos2unix")
    tree = Tree()
    for relative in ("a.py", "sub/b.py"):
        tree.add(tuple(relative.split("/")), Meta(),
                 HashInfo("md5", file_hash(tmp_path / "code" / relative)))
    tree.digest()
    assert dir_hash(tmp_path / "code", root=tmp_path) == tree.hash_info.value


def test_lock_check_reports_stale_and_missing_stages(tmp_path):
    _write(tmp_path, {
        "pipeline/__init__.py": "", "pipeline/a.py": "print(1)\n", "params.yaml": "{}\n",
        "dvc.yaml": yaml.safe_dump({"stages": {
            "a": {"cmd": "python -m pipeline.a", "deps": ["pipeline"]},
            "b": {"cmd": "python -m pipeline.a", "deps": ["pipeline/a.py"]}}}),
    })
    fresh = dir_hash(tmp_path / "pipeline", "md5", tmp_path)
    lock = {"schema": "2.0", "stages": {"a": {"deps": [
        {"path": "pipeline", "hash": "md5", "md5": fresh}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert stale_lock_entries(tmp_path) == [
        f"stage b: in dvc.yaml but not in dvc.lock; {FIX}"]
    lock["stages"]["b"] = {"deps": [{"path": "pipeline/a.py", "hash": "md5",
                                     "md5": hashlib.md5(b"print(0)\n").hexdigest()}]}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    (tmp_path / "pipeline/a.py").write_text("print(0)\n")
    problems = stale_lock_entries(tmp_path)
    assert len(problems) == 1 and problems[0].startswith("stage a: dvc.lock's md5 of pipeline ")
    assert problems[0].endswith(FIX)


if __name__ == "__main__":
    for stage_name, files in missing_deps().items():
        print(f"stage {stage_name}: deps miss {', '.join(files)}")
    for problem in stale_lock_entries():
        print(problem)


def test_every_param_a_stage_lists_exists_in_params_yaml():
    """DVC refuses a stage whose listed param is gone from params.yaml, but only when that
    stage runs; a key removed from params.yaml must leave dvc.yaml in the same change."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    missing = []
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        for entry in stage.get("do", stage).get("params", []):
            keys = [entry] if isinstance(entry, str) else []
            for key in keys:
                node = params
                for part in key.split("."):
                    if not isinstance(node, dict) or part not in node:
                        missing.append(f"{name}: {key}")
                        break
                    node = node[part]
    assert missing == []
