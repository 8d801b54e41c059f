"""Train one backbone (ALS vs control) on the augmented training set; pick the epoch by val AUC.

Adam with a cosine schedule; the best epoch is chosen on the validation split (groups
never seen in training), never on training accuracy, which the study reported as a result.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from models.classifier import build_classifier
from models.weights import WeightsError
from pipeline.augment import build_augmentation
from pipeline.common import (
    PipelineError,
    console,
    environment_record,
    load_array,
    load_checkpoint,
    progress,
    remove_stale_temporaries,
    save_torch_atomic,
    stage_main,
    write_csv_atomic,
    write_json_atomic,
)
from pipeline.config import Params, load_params
from pipeline.datasets import classifier_image_size, image_folder, load_images, split_subset
from pipeline.device import autocast_for, peak_memory_mb, resolve_device, seed_everything
from pipeline.distributed import (
    SINGLE_PROCESS,
    DistContext,
    barrier,
    init_distributed,
    mean_across_ranks,
    replica_digests,
    shutdown,
    wrap,
)
from pipeline.images import from_uint16

EVAL_ONLY = {"backbones", "eval_batch_size", "bootstrap", "num_workers"}


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, device: torch.device, batch: int,
                  precision: str, channels_last: bool) -> np.ndarray:
    """P(positive) per image."""
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch].to(device, non_blocking=True)
        with autocast_for(device, precision):
            logits = model(chunk.contiguous(memory_format=memory_format))
        out.append(torch.softmax(logits.float(), 1)[:, 1].cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


def training_config(backbone: str, params: Params, data_digest: str) -> dict:
    classifier = {k: v for k, v in dataclasses.asdict(params.classifier).items()
                  if k not in EVAL_ONLY}
    config = {"backbone": backbone, "lr": params.lr, "batch_size": params.batch_size,
              "epochs": params.epochs, "seed": params.seed, "classifier": classifier,
              "data_sha256": data_digest}
    if params.augment.online:
        config["augment"] = dataclasses.asdict(params.augment)
    return config


def train_classifier(backbone: str, train_images: torch.Tensor, train_labels: np.ndarray,
                     val_images: torch.Tensor, val_labels: np.ndarray, params: Params,
                     device: torch.device, checkpoint_dir: Path,
                     stop_after_epoch: int | None = None,
                     context: DistContext = SINGLE_PROCESS) -> dict:
    """Train with resume; return {best_state, curves, metrics} (best_state None if stopped).

    Under torchrun (`context.enabled`) each rank trains on its shard of every epoch with
    batch_size / world_size images per step, so the global batch is still `batch_size`;
    only rank 0 writes checkpoints.
    """
    cp = params.classifier
    digest = hashlib.sha256(train_images.numpy().tobytes() + train_labels.tobytes()
                            + val_images.numpy().tobytes()).hexdigest()
    config = training_config(backbone, params, digest)
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    checkpoint_path = checkpoint_dir / f"{backbone}-{key}.pt"
    remove_stale_temporaries(checkpoint_dir)
    seed_everything(params.seed, deterministic=device.type == "cpu")
    if device.type == "cuda":
        # Fixed input sizes: let cuDNN pick the fastest kernels (not bit-reproducible on GPU).
        torch.backends.cudnn.benchmark = True

    try:
        model, loaded = build_classifier(backbone, cp.pretrained)
    except WeightsError as exc:
        raise PipelineError(str(exc)) from None
    memory_format = torch.channels_last if cp.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    parallel_model = wrap(model, context, device)
    run_model = torch.compile(parallel_model) if cp.compile else parallel_model
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=cp.weight_decay)
    sampler = torch.Generator().manual_seed(params.seed)
    dataset = TensorDataset(train_images, torch.from_numpy(np.array(train_labels)).long())
    if context.enabled:
        if params.batch_size % context.world_size:
            raise PipelineError(f"batch_size {params.batch_size} does not divide over "
                                f"{context.world_size} processes")
        shard_sampler = DistributedSampler(dataset, context.world_size, context.rank,
                                           shuffle=True, seed=params.seed, drop_last=True)
        loader = DataLoader(dataset, batch_size=params.batch_size // context.world_size,
                            sampler=shard_sampler, drop_last=True, num_workers=cp.num_workers,
                            pin_memory=device.type == "cuda")
    else:
        shard_sampler = None
        loader = DataLoader(dataset, batch_size=params.batch_size, shuffle=True,
                            generator=sampler, drop_last=len(train_images) > params.batch_size,
                            num_workers=cp.num_workers, pin_memory=device.type == "cuda")
    total_steps = params.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=cp.precision == "fp16")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cp.label_smoothing)
    augmentation = build_augmentation(params.augment).to(device) if params.augment.online else None

    epoch, curves, best = 0, [], {"auc": -1.0, "epoch": 0, "state": None}
    seconds, images_seen = 0.0, 0
    state = load_checkpoint(checkpoint_path, config)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.set_state(state["sampler"])
        torch.set_rng_state(state["torch_rng"])
        epoch, curves, seconds = state["epoch"], state["curves"], state["train_seconds"]
        images_seen = state["images_seen"]
        best = {"auc": state["best_auc"], "epoch": state["best_epoch"],
                "state": state["best_state"]}
        console.print(f"resuming {backbone} from {checkpoint_path} after epoch {epoch}")

    with progress() as bar:
        task = bar.add_task(f"train {backbone}", total=params.epochs, completed=epoch, status="")
        while epoch < params.epochs:
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                break
            model.train()
            if shard_sampler is not None:
                shard_sampler.set_epoch(epoch)  # a different, reproducible shuffle per epoch
            started = time.perf_counter()
            losses, scores, targets = [], [], []
            for images, labels in loader:
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                if augmentation is not None:
                    with torch.no_grad():
                        images = augmentation(images).clamp(0, 1)
                images = images.contiguous(memory_format=memory_format)
                with autocast_for(device, cp.precision):
                    logits = run_model(images)
                    loss = loss_fn(logits.float(), labels)
                if not torch.isfinite(loss):
                    raise PipelineError(f"{backbone}: non-finite training loss in epoch "
                                        f"{epoch + 1}; lower lr or use classifier.precision: fp32")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                losses.append(loss.item())
                scores.append(torch.softmax(logits.detach().float(), 1)[:, 1].cpu())
                targets.append(labels.cpu())
                images_seen += len(labels)
            seconds += time.perf_counter() - started
            train_scores, train_targets = torch.cat(scores).numpy(), torch.cat(targets).numpy()
            val_scores = predict_proba(model, val_images, device, cp.eval_batch_size,
                                       cp.precision, cp.channels_last)
            val_loss = float(nn.functional.binary_cross_entropy(
                torch.from_numpy(val_scores).double().clamp(1e-7, 1 - 1e-7),
                torch.from_numpy(val_labels).double()))
            epoch += 1
            row = {"epoch": epoch, "train_loss": mean_across_ranks(float(np.mean(losses)), context),
                   "train_accuracy": float(((train_scores >= 0.5) == train_targets).mean()),
                   "train_auc": _safe_auc(train_targets, train_scores),
                   "val_loss": val_loss,
                   "val_accuracy": float(((val_scores >= 0.5) == val_labels).mean()),
                   "val_auc": _safe_auc(val_labels, val_scores),
                   "lr": scheduler.get_last_lr()[0]}
            curves.append(row)
            if row["val_auc"] > best["auc"]:
                best = {"auc": row["val_auc"], "epoch": epoch,
                        "state": {k: v.detach().cpu().clone()
                                  for k, v in model.state_dict().items()}}
            if context.is_main:
                save_torch_atomic(checkpoint_path, {
                    "config": config, "epoch": epoch, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "sampler": sampler.get_state(), "torch_rng": torch.get_rng_state(),
                    "curves": curves, "train_seconds": seconds, "images_seen": images_seen,
                    "best_auc": best["auc"], "best_epoch": best["epoch"],
                    "best_state": best["state"]})
            barrier(context)
            bar.update(task, completed=epoch, status=(
                f"loss {row['train_loss']:.3f} val_auc {row['val_auc']:.3f} "
                f"val_acc {row['val_accuracy']:.3f}"))

    if epoch < params.epochs:
        return {"best_state": None, "curves": curves, "checkpoint": checkpoint_path,
                "epoch": epoch}
    metrics = {"best_epoch": best["epoch"], "best_val_auc": best["auc"],
               "train_seconds": round(seconds, 2),
               "train_images_per_s": round(images_seen / max(seconds, 1e-9), 2),
               "peak_memory_mb": round(peak_memory_mb(device), 1),
               "params_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
               "pretrained": loaded, "epochs": epoch, "world_size": context.world_size,
               "replica_weight_digests": replica_digests(model, context),
               "environment": environment_record(device)}
    return {"best_state": best["state"], "curves": curves, "metrics": metrics,
            "checkpoint": checkpoint_path, "epoch": epoch, "model": model}


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--augmented", type=Path, required=True)
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--sr", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--curves", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    if args.backbone not in params.classifier.backbones:
        raise PipelineError(f"backbone {args.backbone!r} is not in classifier.backbones")
    context, device = init_distributed(resolve_device(params.device))
    train_images = torch.from_numpy(from_uint16(load_array(args.augmented / "train_images.npy")))
    train_labels = pd.read_csv(args.augmented / "train_index.csv")["label"].to_numpy()
    val = split_subset(pd.read_csv(args.split), "val")
    folder = image_folder(params.classifier.input, args.crops, args.sr)
    val_images = load_images(folder, val["crop_id"].tolist(), classifier_image_size(params))
    if train_images.shape[-1] != classifier_image_size(params):
        raise PipelineError("augmented images do not match classifier.image_size; rerun augment")
    args.checkpoints.mkdir(parents=True, exist_ok=True)  # a DVC out, even if never written
    result = train_classifier(args.backbone, train_images, train_labels, val_images,
                              val["label"].to_numpy(), params, device, args.checkpoints,
                              context=context)
    shutdown(context)
    if not context.is_main:
        console.print(f"rank {context.rank}: training done; rank 0 writes the outputs")
        return
    save_torch_atomic(args.model, {"model": result["best_state"], "backbone": args.backbone,
                                   "best_epoch": result["metrics"]["best_epoch"]})
    write_csv_atomic(args.curves, pd.DataFrame(result["curves"]))
    write_json_atomic(args.metrics, result["metrics"])
    result["checkpoint"].unlink(missing_ok=True)
    m = result["metrics"]
    console.print(f"{args.backbone}: best epoch {m['best_epoch']} val AUC {m['best_val_auc']:.3f}"
                  f", {m['train_images_per_s']} img/s, peak {m['peak_memory_mb']} MB")


if __name__ == "__main__":
    main()
