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
