"""Super-resolve every ingested crop with the chosen generator (tiled, batched).

SR images are stored at the size the classifier reads them (sr.store_full_size keeps the
full crop x scale). The bicubic input of the SR ablation is not stored: the stages that
read it upscale the crops at load time (datasets.load_classifier_images), which costs
less than writing and reading back 16x the crops' pixels at x4.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from pipeline.common import (
    PipelineError,
    atomic_path,
    console,
    progress,
    read_crop_table,
    save_array_atomic,
    stage_main,
    write_environment,
    write_json_atomic,
)
from pipeline.config import load_params
from pipeline.datasets import read_stack, sr_as_stored, sr_storage_size
from pipeline.device import resolve_device
from pipeline.images import to_uint16
from pipeline.sr_metrics import generator_from_state
from pipeline.tiling import upscale_tiled


def load_generator(path: Path, expected_scale: int) -> tuple[torch.nn.Module, str]:
    """The generator in `path` and its name (psnr | gan), refusing a scale mismatch."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = generator_from_state(saved["model"], saved["config"])
    except Exception as exc:
        raise PipelineError(f"{path}: not a generator file from train_sr "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    if saved["config"]["scale"] != expected_scale:
        raise PipelineError(f"{path}: generator is x{saved['config']['scale']} but sr.scale is "
                            f"{expected_scale}; rerun train_sr")
    return model, str(saved.get("name", "unknown"))


def super_resolve_crops(model: torch.nn.Module, crop_ids: list[str], crops_dir: Path,
                        out_dir: Path, scale: int, tile: int, overlap: int, batch: int,
                        device: torch.device, precision: str, channels_last: bool = False,
                        store_size: int | None = None) -> dict:
    """Write out_dir/sr/<id>.npy (uint16, `store_size` px or crop x scale); return
    throughput and the bytes written."""
    model = model.to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    pixels, written, started = 0, 0, time.perf_counter()
    with progress() as bar:
        task = bar.add_task("sr_infer", total=len(crop_ids), status="")
        for first in range(0, len(crop_ids), batch):
            ids = crop_ids[first:first + batch]
            images = torch.from_numpy(read_stack(crops_dir, ids).astype("float32") / 65535.0)
            sr = upscale_tiled(model, images, scale, tile, overlap, batch, precision)
            sr = sr_as_stored(sr, store_size or sr.shape[-1])
            for index, crop_id in enumerate(ids):
                path = out_dir / "sr" / f"{crop_id}.npy"
                save_array_atomic(path, to_uint16(sr[index].numpy()))
                written += path.stat().st_size
            pixels += images.shape[0] * images.shape[-1] * images.shape[-2]
            bar.update(task, advance=len(ids), status="")
    seconds = time.perf_counter() - started
    return {"crops": len(crop_ids), "seconds": round(seconds, 2),
            "lr_megapixels_per_s": round(pixels / 1e6 / max(seconds, 1e-9), 4),
            "stored_size": int(sr.shape[-1]) if crop_ids else store_size,
            "bytes_written": written}


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    device = resolve_device(params.device)
    model, generator_name = load_generator(args.model, params.sr.scale)
    crop_ids = read_crop_table(args.manifest)["crop_id"].tolist()
    with atomic_path(args.out) as staging:
        staging.unlink()
        metrics = super_resolve_crops(model, crop_ids, args.crops, staging, params.sr.scale,
                                      params.sr.tile, params.sr.tile_overlap,
                                      params.sr.infer_batch, device, params.sr.precision,
                                      params.sr.channels_last, sr_storage_size(params))
        if args.out.exists():
            shutil.rmtree(args.out)
    metrics["generator"] = generator_name
    write_json_atomic(args.metrics, metrics)
    write_environment(args.metrics, device)
    console.print(f"sr_infer: {metrics['crops']} crops in {metrics['seconds']} s")


if __name__ == "__main__":
    main()
