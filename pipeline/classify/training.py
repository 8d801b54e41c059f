"""Train one backbone (ALS vs control) on the augmented training set; pick the epoch by val AUC.

Adam with a cosine schedule; the best epoch is chosen on the validation split (groups
never seen in training), never on training accuracy, which the study reported as a result.
The loop follows torchvision's references/classification: `set_up_training` builds what a
run trains with, `train_one_epoch` and `validate` do one epoch, `train_classifier` drives
them and saves a plain-dict checkpoint after every epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from rich.progress import Progress, TaskID
from sklearn.metrics import roc_auc_score
from torch import nn

from models.classifier import build_classifier
from models.weights import WeightsError
from pipeline.classify.augment import build_augmentation
from pipeline.classify.batches import TrainingBatches, training_batches
from pipeline.classify.images import ClassifierImages
from pipeline.classify.inference import decide, predict_proba
from pipeline.cli import PipelineError, console, progress
from pipeline.config import ClassifierParams, Params
from pipeline.data.tensors import CacheRowSource
from pipeline.io import byte_view, remove_stale_temporaries, save_torch_atomic
from pipeline.runtime.checkpoints import checkpoint_path as checkpoint_file
from pipeline.runtime.checkpoints import load_checkpoint
from pipeline.runtime.device import (
    autocast_for,
    device_of,
    effective_precision,
    peak_memory_mb,
    restore_rng_state,
    rng_state,
    seed_everything,
)
from pipeline.runtime.distributed import (
    SINGLE_PROCESS,
    DistContext,
    barrier,
    mean_across_ranks,
    replica_digests,
    wrap,
)
from pipeline.runtime.threads import fit_threads

# Classifier keys that do not change a training run (the number of seeds adds runs; each run's
# own seed is in the config): a change keeps the checkpoints.
EVAL_ONLY = {"backbones", "eval_batch_size", "bootstrap", "permutations", "seeds", "threshold"}


@dataclasses.dataclass
class TrainingSetup:
    """What one run trains with. `model` is the plain module that checkpoints save."""

    backbone: str
    model: nn.Module
    run_model: nn.Module  # `model` wrapped in DDP and/or compiled: what the forward pass calls
    pretrained: str
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    batches: TrainingBatches
    augmentation: nn.Module | None
    memory_format: torch.memory_format


@dataclasses.dataclass
class RunState:
    """What the epochs so far have produced; all of it goes into the checkpoint."""

    epoch: int = 0
    curves: list[dict] = dataclasses.field(default_factory=list)
    best_auc: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    seconds: float = 0.0
    images_seen: int = 0

    def record(self, row: dict, model: nn.Module) -> None:
        """Append an epoch's curve row; keep a CPU copy of the weights if its val AUC is best."""
        self.epoch = row["epoch"]
        self.curves.append(row)
        if row["val_auc"] > self.best_auc:
            self.best_auc, self.best_epoch = row["val_auc"], row["epoch"]
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


@dataclasses.dataclass
class BatchProgress:
    """One bar counting the training batches of a backbone's runs (its classifier.seeds), so
    that its ETA is the backbone's, not an epoch's: the first run sets the total (runs x
    epochs x batches per epoch) once it knows its batches."""

    bar: Progress
    task: TaskID
    runs: int = 1

    def start_run(self, epochs: int, batches: int, epochs_done: int) -> None:
        """A run begins, `epochs_done` of its epochs already done (resumed)."""
        if self.bar.tasks[self.task].total is None:
            self.bar.update(self.task, total=self.runs * epochs * batches)
        self.bar.advance(self.task, epochs_done * batches)

    def batch(self) -> None:
        self.bar.advance(self.task)

    def epoch_done(self, status: str) -> None:
        self.bar.update(self.task, status=status)


@contextlib.contextmanager
def batch_progress(description: str, runs: int = 1) -> Iterator[BatchProgress]:
    """A BatchProgress on the console for `runs` training runs."""
    with progress() as bar:
        yield BatchProgress(bar, bar.add_task(description, total=None, status=""), runs)


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


def build_model(backbone: str, cp: ClassifierParams, device: torch.device,
                context: DistContext) -> tuple[nn.Module, nn.Module, str]:
    """(model, the model as the forward pass runs it, where its weights came from)."""
    try:
        model, loaded = build_classifier(backbone, cp.pretrained)
    except WeightsError as exc:
        raise PipelineError(str(exc)) from None
    memory_format = torch.channels_last if cp.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    parallel_model = wrap(model, context, device)
    run_model = torch.compile(parallel_model) if cp.compile else parallel_model
    return model, run_model, loaded


def set_up_training(backbone: str, images: torch.Tensor, labels: np.ndarray, params: Params,
                    device: torch.device, context: DistContext) -> TrainingSetup:
    """Model, Adam with a cosine schedule over all steps, loss, loader, online augmentation."""
    cp = params.classifier
    model, run_model, loaded = build_model(backbone, cp, device, context)
    # Fused Adam: one kernel for all parameters instead of a few per tensor (CUDA only;
    # the CPU keeps the default, whose results the recorded-figures test pins).
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=cp.weight_decay,
                                 fused=device.type == "cuda" or None)
    if params.batch_size % context.world_size:
        raise PipelineError(f"batch_size {params.batch_size} does not divide over "
                            f"{context.world_size} processes")
    batches = training_batches(images, torch.from_numpy(np.array(labels)).long(),
                               params.batch_size, params.seed, device, context.world_size,
                               context.rank, cp.cache_on_device)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=params.epochs * len(batches))
    augmentation = build_augmentation(params.augment).to(device) if params.augment.online else None
    return TrainingSetup(
        backbone=backbone, model=model, run_model=run_model, pretrained=loaded,
        optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=cp.precision == "fp16"),
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cp.label_smoothing), batches=batches,
        augmentation=augmentation,
        memory_format=torch.channels_last if cp.channels_last else torch.contiguous_format)


def save_checkpoint(path: Path, config: dict, setup: TrainingSetup, run: RunState) -> None:
    """A plain dict: weights, optimizer, schedule, RNG states and the run so far."""
    save_torch_atomic(path, {
        "config": config, "epoch": run.epoch, "model": setup.model.state_dict(),
        "optimizer": setup.optimizer.state_dict(), "scheduler": setup.scheduler.state_dict(),
        "sampler": setup.batches.shuffle.get_state(),
        "torch_rng": rng_state(device_of(setup.model)), "scaler": setup.scaler.state_dict(),
        "curves": run.curves, "train_seconds": run.seconds, "images_seen": run.images_seen,
        "best_auc": run.best_auc, "best_epoch": run.best_epoch, "best_state": run.best_state})


def restore_checkpoint(checkpoint: dict, setup: TrainingSetup) -> RunState:
    """Put the saved weights, optimizer, schedule and RNG states back; return the run so far."""
    setup.model.load_state_dict(checkpoint["model"])
    setup.optimizer.load_state_dict(checkpoint["optimizer"])
    setup.scheduler.load_state_dict(checkpoint["scheduler"])
    setup.batches.shuffle.set_state(checkpoint["sampler"])
    restore_rng_state(checkpoint["torch_rng"], device_of(setup.model))
    if checkpoint.get("scaler"):  # fp16's loss scale goes on where it was
        setup.scaler.load_state_dict(checkpoint["scaler"])
    return RunState(epoch=checkpoint["epoch"], curves=checkpoint["curves"],
                    best_auc=checkpoint["best_auc"], best_epoch=checkpoint["best_epoch"],
                    best_state=checkpoint["best_state"], seconds=checkpoint["train_seconds"],
                    images_seen=checkpoint["images_seen"])


def train_one_epoch(setup: TrainingSetup, device: torch.device, precision: str,
                    epoch: int, on_batch: Callable[[], None] = lambda: None
                    ) -> tuple[dict, int]:
    """One pass over the training batches: ({train_loss, train_accuracy, train_auc,
    data_seconds, compute_seconds}, images).

    Nothing inside the loop waits for the device: losses, scores and a non-finite flag stay
    on it and are read once, after the last step. A non-finite loss therefore stops the run
    at the end of its epoch, before that epoch's checkpoint is written. data_seconds is the
    host time spent gathering batches (and, on a GPU, waiting to enqueue their copies);
    compute_seconds is the rest of the epoch, including the final wait for the device.
    `on_batch` is called after each step is queued (a progress bar's tick; it waits for
    nothing).
    """
    setup.model.train()
    started, data_seconds = time.perf_counter(), 0.0
    epoch_batches = setup.batches.epoch_indices(epoch)
    # Written into per epoch, not a list of each step's small tensors: those stay alive
    # among the step's freed activations, and the heap around them kept growing (about
    # 0.45 MB per step, 90 MB over an epoch of 3,250 images), so that memory grew with
    # the set's size. The values, and their sums, are the ones the lists gave.
    images_in_epoch = sum(len(indices) for indices in epoch_batches)
    losses = torch.empty(len(epoch_batches), device=device)
    scores = torch.empty(images_in_epoch, device=device)
    targets = torch.empty(images_in_epoch, dtype=torch.long, device=device)
    first = 0
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    for step, indices in enumerate(epoch_batches):
        gathered = time.perf_counter()
        images, labels = setup.batches.gather(indices, device)
        data_seconds += time.perf_counter() - gathered
        if setup.augmentation is not None:
            with torch.no_grad():
                images = setup.augmentation(images).clamp(0, 1)
        with autocast_for(device, precision):
            logits = setup.run_model(images.contiguous(memory_format=setup.memory_format))
            loss = setup.loss_fn(logits.float(), labels)
        setup.optimizer.zero_grad(set_to_none=True)
        setup.scaler.scale(loss).backward()
        setup.scaler.step(setup.optimizer)
        setup.scaler.update()
        setup.scheduler.step()
        loss = loss.detach()
        nonfinite |= ~torch.isfinite(loss)
        losses[step] = loss
        scores[first:first + len(labels)] = torch.softmax(logits.detach().float(), 1)[:, 1]
        targets[first:first + len(labels)] = labels
        first += len(labels)
        on_batch()
    if nonfinite.item():  # the epoch's one wait for the device
        raise PipelineError(f"{setup.backbone}: non-finite training loss in epoch "
                            f"{epoch + 1}; lower lr or use classifier.precision: fp32")
    train_loss = float(losses.double().mean())
    train_scores, train_targets = scores.cpu().numpy(), targets.cpu().numpy()
    seconds = time.perf_counter() - started
    return {"train_loss": train_loss,
            "train_accuracy": float((decide(train_scores) == train_targets).mean()),
            "train_auc": _safe_auc(train_targets, train_scores),
            "data_seconds": data_seconds, "compute_seconds": seconds - data_seconds,
            }, len(train_targets)


def validate(model: nn.Module, images: ClassifierImages, labels: np.ndarray,
             device: torch.device,
             cp: ClassifierParams) -> dict:
    """{val_loss, val_accuracy, val_auc} of `model` on the validation split."""
    scores = predict_proba(model, images, device, cp.eval_batch_size, cp.precision,
                           cp.channels_last)
    # np.array copies: labels from pandas are read-only, which torch.from_numpy warns about
    targets = torch.from_numpy(np.array(labels)).double()
    loss = nn.functional.binary_cross_entropy(
        torch.from_numpy(scores).double().clamp(1e-7, 1 - 1e-7), targets)
    return {"val_loss": float(loss), "val_accuracy": float((decide(scores) == labels).mean()),
            "val_auc": _safe_auc(labels, scores)}


def throughput(curves: list[dict]) -> dict:
    """Training images/s after warm-up, and where the epochs' time went.

    The first epoch a process runs pays for cuDNN autotuning, torch.compile, allocator
    growth and cold caches, so `train_images_per_s` leaves it out whenever a later epoch
    exists (`train_images_per_s_epochs` says which epochs it covers); the figure with it
    is `train_images_per_s_all`.
    """
    # An epoch resumed from a checkpoint written before these figures existed has none:
    # it counts as warm-up and adds no time.
    curves = [{"warmup": True, "train_images": 0, "data_seconds": 0.0, "compute_seconds": 0.0}
              | row for row in curves]

    def rate(rows):
        seconds = sum(r["data_seconds"] + r["compute_seconds"] for r in rows)
        return round(sum(r["train_images"] for r in rows) / max(seconds, 1e-9), 2)

    steady = [r for r in curves if not r["warmup"]] or curves
    data = sum(r["data_seconds"] for r in curves)
    compute = sum(r["compute_seconds"] for r in curves)
    return {"train_images_per_s": rate(steady),
            "train_images_per_s_epochs": [r["epoch"] for r in steady],
            "train_images_per_s_all": rate(curves),
            "data_seconds": round(data, 3), "compute_seconds": round(compute, 3),
            "data_fraction": round(data / max(data + compute, 1e-9), 4)}


def final_metrics(setup: TrainingSetup, run: RunState, device: torch.device,
                  context: DistContext) -> dict:
    """The stage's metrics JSON: best epoch, cost, where the weights came from."""
    return {"best_epoch": run.best_epoch, "best_val_auc": run.best_auc,
            "train_seconds": round(run.seconds, 2), **throughput(run.curves),
            "train_images_on": setup.batches.placement,
            "peak_memory_mb": round(peak_memory_mb(device), 1),
            "params_millions": round(sum(p.numel() for p in setup.model.parameters()) / 1e6, 3),
            "pretrained": setup.pretrained, "epochs": run.epoch,
            "world_size": context.world_size,
            "replica_weight_digests": replica_digests(setup.model, context)}


def data_digest(train_images: torch.Tensor | CacheRowSource, train_labels: np.ndarray,
                val_images: ClassifierImages | torch.Tensor) -> str:
    """sha256 of what a run trains and validates on, for the checkpoint's config: the
    training rows (read chunk by chunk when they are on disk), labels, and the validation
    images (their cache bytes and how they are made, or a tensor's bytes). Fed in place:
    the bytes of a set joined into one object were two more copies of it at the stage's
    peak."""
    digest = hashlib.sha256()
    for part in (train_images, train_labels, val_images):
        if isinstance(part, ClassifierImages | CacheRowSource):
            part.add_to_digest(digest)
        else:
            digest.update(byte_view(part.numpy() if torch.is_tensor(part) else part))
    return digest.hexdigest()


def train_classifier(backbone: str, train_images: torch.Tensor | CacheRowSource,
                     train_labels: np.ndarray,
                     val_images: ClassifierImages, val_labels: np.ndarray, params: Params,
                     device: torch.device, checkpoint_dir: Path,
                     stop_after_epoch: int | None = None,
                     context: DistContext = SINGLE_PROCESS,
                     tracker: BatchProgress | None = None) -> dict:
    """Train with resume; return {best_state, curves, metrics} (best_state None if stopped).

    `train_images` are uint16 cache rows (data.tensors.cache_rows) in memory or on disk
    (data.tensors.CacheRowSource: rows on disk, or made from the split's images for online
    augmentation), made float32 a batch at a time, or float32 images; `val_images` are
    made batch by batch as they are scored.

    Under torchrun (`context.enabled`) each rank trains on its shard of every epoch with
    batch_size / world_size images per step, so the global batch is still `batch_size`;
    only rank 0 writes checkpoints.

    `tracker` counts the batches on a bar shared with other runs (the stage's seeds); without
    one the run shows its own bar.
    """
    config = training_config(backbone, params, data_digest(train_images, train_labels,
                                                           val_images))
    checkpoint_path = checkpoint_file(checkpoint_dir, backbone, config)
    remove_stale_temporaries(checkpoint_dir)
    seed_everything(params.seed, deterministic=device.type == "cpu")
    if device.type == "cuda":
        # Fixed input sizes: let cuDNN pick the fastest kernels (not bit-reproducible on GPU).
        torch.backends.cudnn.benchmark = True
    setup = set_up_training(backbone, train_images, train_labels, params, device, context)
    run, checkpoint = RunState(), load_checkpoint(checkpoint_path, config)
    if checkpoint is not None:
        run = restore_checkpoint(checkpoint, setup)
        console.print(f"resuming {backbone} from {checkpoint_path} after epoch {run.epoch}")
    last = params.epochs if stop_after_epoch is None else min(params.epochs, stop_after_epoch)
    with contextlib.ExitStack() as stack:
        if tracker is None:
            tracker = stack.enter_context(batch_progress(f"train {backbone}"))
        tracker.start_run(params.epochs, len(setup.batches), run.epoch)
        first_in_process = run.epoch
        while run.epoch < last:
            fit_threads()  # a run started beside this one since: make room
            started = time.perf_counter()
            trained, images = train_one_epoch(setup, device, params.classifier.precision,
                                              run.epoch, tracker.batch)
            run.seconds += time.perf_counter() - started
            run.images_seen += images
            trained |= {"train_images": images, "warmup": run.epoch == first_in_process}
            trained["train_loss"] = mean_across_ranks(trained["train_loss"], context)
            run.record({"epoch": run.epoch + 1, **trained,
                        **validate(setup.model, val_images, val_labels, device, params.classifier),
                        "lr": setup.scheduler.get_last_lr()[0]}, setup.model)
            if context.is_main:
                save_checkpoint(checkpoint_path, config, setup, run)
            barrier(context)
            row = run.curves[-1]
            tracker.epoch_done(f"seed {params.seed} epoch {run.epoch}/{params.epochs} loss "
                               f"{row['train_loss']:.3f} val_auc {row['val_auc']:.3f} "
                               f"val_acc {row['val_accuracy']:.3f}")
    result = {"curves": run.curves, "checkpoint": checkpoint_path, "epoch": run.epoch}
    if run.epoch < params.epochs:
        return result | {"best_state": None}
    return result | {"best_state": run.best_state, "model": setup.model,
                     "metrics": final_metrics(setup, run, device, context)
                     | {"precision": effective_precision(params.classifier.precision, device),
                        "cache_on_device": str(params.classifier.cache_on_device).lower()}}
