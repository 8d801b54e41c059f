"""Memory as the data grows: the real stages on the demo generator at about 1k, 4k and 16k
crops, each stage's peak RSS, and its slope in MB per 1,000 crops against what holding the
split as float32 at the classifier's size (the old path) and as uint16 would take.

    python bench/bench_memory_scale.py [--sizes 1000 4000 16000] [--epochs 1]

Every stage runs in its own process (os.wait4 gives that process's peak RSS). The demo
profile's sizes: 32 px crops, SR x4 read at 128 px; one seed, mobilenet_v3_small, short SR
training, so that the memory, not the accuracy, is measured. augment and train_classifier
run twice on the same data: as the demo profile runs them (augment stores the augmented set,
the loop reads it from disk) and with augment.online (the cpu and gpu profiles: nothing
stored, the loop makes each batch from the split's images and augments it). The last line
is the ratio: the hungriest stage's slope over one uint16 copy of the extra crops at the
classifier's size.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "mobilenet_v3_small"


def params_file(root: Path, crops: int, epochs: int, online: bool = False) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    per_sample = 8  # crops per folder; 30% of samples have a second folder
    samples = max(8, round(crops / (per_sample * 1.3)))
    raw["demo"] |= {"n_als_samples": samples * 28 // 39, "n_control_samples": samples * 11 // 39,
                    "crops_per_sample": [per_sample - 1, per_sample + 1]}
    raw["sr"] |= {"iters_psnr": 20, "iters_gan": 0, "val_every": 20, "checkpoint_every": 20,
                  "generator": "psnr"}
    raw["classifier"] |= {"backbones": [BACKBONE], "seeds": 1}
    raw["augment"]["online"] = online
    raw |= {"epochs": epochs, "device": "cpu"}
    path = root / ("params_online.yaml" if online else "params.yaml")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def stages(root: Path) -> list[tuple[str, list]]:
    d = root
    return [
        ("make_demo", ["--out", d / "raw", "--metrics", d / "demo.json"]),
        ("ingest", ["--raw-dir", d / "raw", "--out", d / "ingested", "--metrics",
                    d / "ingest.json", "--report", d / "bad.csv"]),
        ("split", ["--manifest", d / "ingested/manifest.csv", "--out", d / "split.csv",
                   "--folds", d / "folds.csv", "--metrics", d / "split.json"]),
        ("baseline", ["--split", d / "split.csv", "--crops", d / "ingested/crops", "--out",
                      d / "eval/baseline", "--features", d / "features.csv", "--groups",
                      d / "groups.csv"]),
        ("make_pairs", ["--crops", d / "ingested/crops", "--split", d / "split.csv",
                        "--manifest", d / "ingested/manifest.csv", "--out", d / "pairs"]),
        ("train_sr", ["--pairs", d / "pairs", "--model-dir", d / "sr_model", "--checkpoints",
                      d / "ck_sr", "--metrics", d / "sr.json", "--curves", d / "sr.csv",
                      "--samples", d / "sr.png"]),
        ("sr_infer", ["--model", d / "sr_model/generator.pt", "--manifest",
                      d / "ingested/manifest.csv", "--crops", d / "ingested/crops", "--out",
                      d / "sr_images", "--metrics", d / "sr_infer.json"]),
        ("augment", ["--split", d / "split.csv", "--crops", d / "ingested/crops", "--sr",
                     d / "sr_images", "--out", d / "augmented", "--metrics", d / "aug.json"]),
        ("train_classifier", ["--backbone", BACKBONE, "--augmented", d / "augmented", "--split",
                              d / "split.csv", "--crops", d / "ingested/crops", "--sr",
                              d / "sr_images", "--model-dir", d / "model", "--checkpoints",
                              d / "ck_cls", "--metrics", d / "train.json", "--curves",
                              d / "train.csv"]),
        ("evaluate", ["--backbone", BACKBONE, "--model-dir", d / "model", "--train-metrics",
                      d / "train.json", "--split", d / "split.csv", "--crops",
                      d / "ingested/crops", "--sr", d / "sr_images", "--out",
                      d / "eval" / BACKBONE]),
    ]


def online_stages(root: Path) -> list[tuple[str, list]]:
    """augment and train_classifier again, with augment.online, into their own folders."""
    d = root
    return [
        ("augment (online)", ["--split", d / "split.csv", "--crops", d / "ingested/crops",
                              "--sr", d / "sr_images", "--out", d / "augmented_online",
                              "--metrics", d / "aug_online.json"]),
        ("train_classifier (online)", [
            "--backbone", BACKBONE, "--augmented", d / "augmented_online", "--split",
            d / "split.csv", "--crops", d / "ingested/crops", "--sr", d / "sr_images",
            "--model-dir", d / "model_online", "--checkpoints", d / "ck_cls_online",
            "--metrics", d / "train_online.json", "--curves", d / "train_online.csv"]),
    ]


def peak_rss_mb(module: str, args: list, params: Path) -> float:
    """Run one stage in its own process; its peak resident memory in MB."""
    with tempfile.TemporaryFile(mode="w+") as log:  # a file: a full pipe would stall it
        process = subprocess.Popen(
            [sys.executable, "-m", f"pipeline.stages.{module.split()[0]}", *map(str, args),
             "--params", str(params)], cwd=REPO, stdout=log, stderr=log,
            env=os.environ | {"PYTHONPATH": str(REPO)})
        _, status, usage = os.wait4(process.pid, 0)
        if os.waitstatus_to_exitcode(status):
            log.seek(0)
            raise SystemExit(f"{module} failed:\n{log.read()[-2000:]}")
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000],
                        help="approximate crop counts to run")
    parser.add_argument("--epochs", type=int, default=1, help="classifier epochs")
    args = parser.parse_args()
    rows, counts = {}, []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            params = params_file(root, size, args.epochs)
            online = params_file(root, size, args.epochs, online=True)
            for module, stage_args in stages(root) + online_stages(root):
                rows.setdefault(module, []).append(peak_rss_mb(
                    module, stage_args, online if "online" in module else params))
                if module == "ingest":
                    counts.append(sum(1 for _ in (root / "ingested/crops").glob("*.npy")))
            print(f"{counts[-1]} crops: " + ", ".join(f"{m} {v[-1]:.0f} MB"
                                                       for m, v in rows.items()), flush=True)
    size = yaml.safe_load((REPO / "params.yaml").read_text())["demo"]["crop_size"] * 4
    float32_mb, uint16_mb = size * size * 4 / 1e3, size * size * 2 / 1e3  # per 1,000 crops
    print("\n| stage | " + " | ".join(f"{c} crops (MB)" for c in counts)
          + " | slope MB per 1,000 crops |")
    print("|---" * (len(counts) + 2) + "|")
    slopes = {}
    for module, peaks in rows.items():
        slopes[module] = float(np.polyfit(np.asarray(counts) / 1000, peaks, 1)[0])
        print(f"| {module} | " + " | ".join(f"{p:.0f}" for p in peaks)
              + f" | {slopes[module]:.1f} |")
    hungriest = max(rows, key=lambda m: max(rows[m]))
    print(f"\nper 1,000 crops at the classifier's {size} px: float32 {float32_mb:.1f} MB, "
          f"uint16 {uint16_mb:.1f} MB")
    print(f"ratio: hungriest stage ({hungriest}) grows {slopes[hungriest]:.1f} MB per 1,000 "
          f"crops = {slopes[hungriest] / uint16_mb:.2f}x one uint16 copy "
          f"({slopes[hungriest] / float32_mb:.2f}x the float32 copy the old path held)")


if __name__ == "__main__":
    main()
