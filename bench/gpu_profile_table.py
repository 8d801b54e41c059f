"""The table of bench/gpu_profile.sh: per stage, its wall time and the GPU's mean
utilisation while it ran (from `nvidia-smi` samples), then the bench ratios.

    python bench/gpu_profile_table.py OUT_DIR      (reads util.csv, timeline.csv, *.txt)
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import pandas as pd

from pipeline.cli import first_line

TRAINING_STAGES = ("train_sr", "train_classifier")


def read_utilisation(path: Path) -> pd.DataFrame:
    """nvidia-smi's `timestamp, utilization.gpu, memory.used` rows (csv, noheader,
    nounits), with Unix times; the machine's local time, as time.time() sees it."""
    rows = []
    for line in path.read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[1].replace(".", "").isdigit():
            continue
        when = datetime.datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f").timestamp()
        rows.append({"time": when, "util": float(parts[1]), "memory_mib": float(parts[2])})
    return pd.DataFrame(rows, columns=["time", "util", "memory_mib"])


def stage_table(timeline: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """One row per stage: seconds, mean and peak utilisation, peak memory, sample count."""
    rows = []
    for stage in timeline.itertuples():
        inside = samples[(samples["time"] >= stage.start) & (samples["time"] < stage.end)]
        rows.append({"stage": stage.stage, "seconds": round(stage.end - stage.start, 1),
                     "gpu_util_mean_%": round(inside["util"].mean(), 1) if len(inside) else None,
                     "gpu_util_max_%": inside["util"].max() if len(inside) else None,
                     "memory_max_mib": inside["memory_mib"].max() if len(inside) else None,
                     "samples": len(inside)})
    return pd.DataFrame(rows)


def summary(timeline: pd.DataFrame, samples: pd.DataFrame) -> list[str]:
    """Whole-run and training-stage mean utilisation, time-weighted by samples."""
    lines = []
    if timeline.empty:
        return ["no stage ran (see repro.log)"]
    run = samples[(samples["time"] >= timeline["start"].min())
                  & (samples["time"] < timeline["end"].max())]
    lines.append(f"whole DAG: {timeline['end'].max() - timeline['start'].min():.0f} s wall, "
                 f"mean GPU utilisation {run['util'].mean():.1f}% ({len(run)} samples)")
    training = timeline[timeline["stage"].str.startswith(TRAINING_STAGES)]
    mask = pd.Series(False, index=samples.index)
    for stage in training.itertuples():
        mask |= (samples["time"] >= stage.start) & (samples["time"] < stage.end)
    lines.append(f"training stages ({', '.join(training['stage'])}): mean GPU utilisation "
                 f"{samples.loc[mask, 'util'].mean():.1f}% (target >= 70%)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    path = args.out / "timeline.csv"  # missing when dvc stopped before any stage ran
    timeline = (pd.read_csv(path) if path.is_file()
                else pd.DataFrame(columns=["stage", "start", "end"]))
    samples = read_utilisation(args.out / "util.csv")
    table = stage_table(timeline, samples)
    gpu = args.out / "gpu.txt"
    machine = gpu.read_text().strip() if gpu.is_file() else "no nvidia-smi: a dry run"
    text = [f"# GPU profile ({machine})", ""]
    status_file = args.out / "dag_exit_status"
    status = status_file.read_text().strip() if status_file.is_file() else "0"
    if status != "0":
        text += [f"**The DAG failed (exit status {status}): the table stops at the stage "
                 "that failed; its error is at the end of repro.log.**", ""]
    text += [table.to_markdown(index=False), "", *summary(timeline, samples), ""]
    for name in ("loop.txt", "sr.txt"):
        path = args.out / name
        if path.is_file():
            text += [f"## {name}", "```", path.read_text().strip()[-3000:], "```", ""]
    (args.out / "table.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
