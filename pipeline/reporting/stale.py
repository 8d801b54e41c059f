"""Reports of backbones no longer in classifier.backbones.

DVC leaves the outputs of a stage that left the DAG where they are: after a run with
`-S 'classifier.backbones=[resnet50]'`, reports/eval/vgg16 still holds the demo's VGG16, and
anything that lists reports/eval/ reads it as this run's. compare, which runs after every
evaluate, removes them, so a run on one's own data shows only its own results.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from models.backbones import BACKBONE_NAMES
from pipeline.reporting.labels import BASELINE


def stale_backbone_reports(per_backbone: list[Path], environment: Path | None,
                           backbones: list[str]) -> list[Path]:
    """`<folder>/<x>/` of each folder in `per_backbone` (reports/eval, reports/train, ...) and
    `<environment>/<stage>-<x>.json` for every backbone x not in `backbones`.

    Only names of backbones the project knows (models.backbones) are touched: the shortcut
    baseline's folder and anything a person put there stay."""
    kept = set(backbones) | {BASELINE}
    dropped = set(BACKBONE_NAMES) - kept
    stale = [folder / name for folder in per_backbone for name in sorted(dropped)
             if (folder / name).is_dir()]
    if environment is not None and environment.is_dir():
        stale += [path for path in sorted(environment.glob("*-*.json"))
                  if path.stem.split("-", 1)[1] in dropped]
    return stale


def remove_stale_backbone_reports(per_backbone: list[Path], environment: Path | None,
                                  backbones: list[str]) -> list[Path]:
    """Delete stale_backbone_reports; return what was removed."""
    stale = stale_backbone_reports(per_backbone, environment, backbones)
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return stale
