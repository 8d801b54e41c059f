"""The raw folder layout: `<class>/<sample>_crops[N]_r/<crop>`, and what is wrong with a folder.

Ingest and predict both walk sample folders through here, so a new patient's folder is
read by the same rules as the training data. No image is decoded here.
"""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.cli import PipelineError
from pipeline.config import DataParams


def check_raw_dir(raw_dir: Path) -> None:
    """Fail with a message that says why a raw folder is not there, DVC queue case included.

    check_params calls this before DVC looks at ingest's deps (DVC's own error for a
    missing dep, `No such file or directory: .../.dvc/tmp/exps/...`, says nothing of why).
    """
    raw_dir = Path(raw_dir)
    if raw_dir.is_dir():
        return
    hint = ""
    if not raw_dir.is_absolute() and ".dvc/tmp/exps" in Path.cwd().as_posix():
        hint = (" - this run is in a DVC temporary copy (.dvc/tmp/exps/...), where a relative "
                "path outside the repository no longer resolves: give data.raw_dir as an "
                "absolute path, or `dvc add` the data inside the repository")
    elif not raw_dir.is_absolute() and str(raw_dir).startswith(".."):
        hint = (" - relative paths outside the repository break under `dvc exp run --queue`; "
                "prefer an absolute path")
    raise PipelineError(f"data.raw_dir: folder not found: {raw_dir}{hint}")


def find_class_folders(raw_dir: Path, positive: str) -> list[str]:
    classes = sorted(p.name for p in raw_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) != 2:
        raise PipelineError(f"{raw_dir}: expected exactly 2 class folders, found {len(classes)}"
                            f" ({', '.join(classes) or 'none'})")
    if positive not in classes:
        raise PipelineError(f"data.positive: class folder {positive!r} not found in {raw_dir} "
                            f"(found {', '.join(classes)}); set -S data.positive=<folder>")
    return classes


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


class BadFiles:
    """Where a bad file goes: an error (data.on_bad_file: error) or the skipped list."""

    def __init__(self, on_bad_file: str, how_to_skip: str = "set data.on_bad_file: skip"):
        self.on_bad_file, self.how_to_skip, self.problems = on_bad_file, how_to_skip, []

    def __call__(self, path: Path, why: str) -> None:
        if self.on_bad_file == "error":
            raise PipelineError(f"{path}: {why} ({self.how_to_skip} to leave it out)")
        self.problems.append({"path": str(path), "problem": why})


def collect_sample_crops(sample_dirs: list[Path], params: DataParams,
                         bad: BadFiles) -> tuple[list[tuple[str, str, Path]], dict[str, int]]:
    """Every crop file of the sample folders as (sample folder, group, path), and the files
    left out for their extension, counted per extension. Ingest and predict share it."""
    group_pattern = re.compile(params.group_regex)
    extensions = {e.lower() for e in params.extensions}
    crops_found, ignored = [], {}
    for sample_dir in sample_dirs:
        if sample_dir.name.startswith("."):
            continue
        if not sample_dir.is_dir():
            bad(sample_dir, "a file where sample folders belong; crops belong in "
                            "<sample>_crops_r/")
            continue
        match = group_pattern.match(sample_dir.name)
        if not match:
            raise PipelineError(
                f"{sample_dir}: folder name does not match data.group_regex "
                f"{params.group_regex} (sample folders are named <sample>_crops_r or "
                f"<sample>_crops2_r). Rename the folder, or use the whole folder name as the "
                f"sample: dvc exp run -S \"data.group_regex='^(?P<group>.+)$'\"")
        files = [p for p in sorted(sample_dir.iterdir())
                 if not p.name.startswith(".") and not p.is_dir()]
        crops = [p for p in files if p.suffix.lower() in extensions]
        for other in files:
            if other.suffix.lower() not in extensions:
                suffix = other.suffix.lower() or "(none)"
                ignored[suffix] = ignored.get(suffix, 0) + 1
        if not crops:
            bad(sample_dir, f"sample folder holds no crops ({', '.join(sorted(extensions))})")
            continue
        crops_found += [(sample_dir.name, match.group("group"), p) for p in crops]
    return crops_found, ignored


def collect_candidates(raw_dir: Path, classes: list[str], params: DataParams, bad: BadFiles
                       ) -> tuple[list[tuple[str, str, str, Path]], dict[str, int]]:
    """Every crop file as (class, sample folder, group, path), and the files with other
    extensions counted per extension; collected first so the progress bar knows its total."""
    candidates, ignored = [], {}
    for class_name in classes:
        found, left_out = collect_sample_crops(sorted((raw_dir / class_name).iterdir()),
                                               params, bad)
        candidates += [(class_name, sample, group, path) for sample, group, path in found]
        for suffix, count in left_out.items():
            ignored[suffix] = ignored.get(suffix, 0) + count
    return candidates, ignored
