"""How tables name a classifier's input: `sr` only where SR did something."""

from __future__ import annotations

NO_GAIN = "sr (no gain over bicubic)"


def input_label(input_kind: str, sr_better_than_bicubic: bool | None) -> str:
    """`sr (no gain over bicubic)` for an sr input whose generator did not beat bicubic by
    sr.min_gain_db (train_sr's sr_better_than_bicubic); the input's own name otherwise, and
    where no such record exists (SR metrics from before it was kept)."""
    if input_kind == "sr" and sr_better_than_bicubic is False:
        return NO_GAIN
    return input_kind


# The shortcut baseline sits in reports/eval/ beside the backbones (the same files, so every
# table reads it alike) under this folder name, and every table shows it by its label.
BASELINE = "baseline"
BASELINE_LABEL = "baseline (simple features)"


def classifier_label(name: str) -> str:
    """How a table names a classifier: a backbone by its own name, the baseline by its label."""
    return BASELINE_LABEL if name == BASELINE else name
