"""Is it the disease or the microscope? What each class's files say of their acquisition.

If every ALS crop was imaged at 0.1 µm per pixel and every control at 0.2 µm, or saved by
another program (another container, codec or bit depth), a classifier can separate the
classes by that alone. Ingest compares these fields per class from the manifest and names
any that separates the classes, before a model is trained on them.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

# Manifest column (or derived field) -> what a reader calls it.
ACQUISITION_FIELDS = {
    "pixel_size_um": "pixel size (um)",
    "bits_per_sample": "bit depth",
    "format": "container",
    "compression": "compression",
    "stored_size": "image size",
    "channel_names": "channel names",
}
UNKNOWN = "unknown"


def _field_values(manifest: pd.DataFrame, name: str) -> pd.Series:
    """One text value per crop for an acquisition field; UNKNOWN where the file said none."""
    if name == "stored_size":
        return manifest["height"].astype(str) + "x" + manifest["width"].astype(str)
    if name not in manifest:
        return pd.Series(UNKNOWN, index=manifest.index)
    values = manifest[name]
    if name == "pixel_size_um":
        numbers = pd.to_numeric(values, errors="coerce")
        return numbers.map(lambda v: UNKNOWN if pd.isna(v) else f"{v:g}")
    return values.map(lambda v: UNKNOWN if v is None or pd.isna(v) or str(v) == ""
                      else str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))


def summarise(values: pd.Series) -> str:
    """'0.1' for one value, '0.1 (120), 0.2 (30)' for several (most frequent first)."""
    counts = Counter(values.tolist())
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{value} ({count})" for value, count in counts.most_common())


def acquisition_by_class(manifest: pd.DataFrame) -> dict[str, dict[str, str]]:
    """{field: {class: summary}} for every acquisition field."""
    summary = {}
    for name in ACQUISITION_FIELDS:
        values = _field_values(manifest, name)
        summary[name] = {str(c): summarise(values[manifest["class_name"] == c])
                         for c in sorted(manifest["class_name"].unique())}
    return summary


def separating_fields(manifest: pd.DataFrame) -> dict[str, dict[str, str]]:
    """The fields whose values never overlap between the classes (no value is found in
    both), with each class's values: a field like that can tell the classes apart alone.
    A field unknown for every crop separates nothing."""
    found = {}
    classes = sorted(manifest["class_name"].unique())
    for name in ACQUISITION_FIELDS:
        values = _field_values(manifest, name)
        sets = [set(values[manifest["class_name"] == c]) for c in classes]
        if len(sets) == 2 and not (sets[0] & sets[1]) and (sets[0] | sets[1]) != {UNKNOWN}:
            found[name] = {str(c): summarise(values[manifest["class_name"] == c])
                           for c in classes}
    return found


def confound_warning(name: str, by_class: dict[str, str]) -> str:
    """'pixel size (um) differs by class: ALS 0.1, Control 0.2' and what follows from it."""
    shown = ", ".join(f"{c} {v}" for c, v in by_class.items())
    return (f"{ACQUISITION_FIELDS[name]} differs by class: {shown}. A model can tell the "
            "classes apart by this alone: image both classes alike, or read the baseline and "
            "the report's shortcut check before trusting a result")


def pixel_size_mix(manifest: pd.DataFrame) -> str | None:
    """'0.1 um: 120, 0.2 um: 30' when the known pixel sizes differ within the data."""
    values = _field_values(manifest, "pixel_size_um")
    known = values[values != UNKNOWN]
    counts = Counter(known.tolist())
    if len(counts) < 2:
        return None
    return ", ".join(f"{value} um: {count}" for value, count in counts.most_common())


def acquisition_metrics(manifest: pd.DataFrame) -> tuple[dict, list[str]]:
    """(the metrics ingest records, the warnings it prints)."""
    confounds = separating_fields(manifest)
    warnings = [confound_warning(name, by_class) for name, by_class in confounds.items()]
    mix = pixel_size_mix(manifest)
    if mix:
        warnings.append(f"pixel sizes differ within the data ({mix}); crops of one size in "
                        "pixels then show cells at different scales")
    metrics = {"acquisition": acquisition_by_class(manifest),
               "acquisition_confounds": ", ".join(confounds) or "none",
               "acquisition_confound_count": len(confounds),
               "pixel_sizes_um": mix or summarise(_field_values(manifest, "pixel_size_um"))}
    return metrics, warnings
