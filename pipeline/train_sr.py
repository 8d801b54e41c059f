"""Train the ESRGAN-style SR model: L1 pre-training, then relativistic GAN fine-tuning.

A plain loop over basicsr's RRDBNet and VGGStyleDiscriminator (no basicsr option files):
phase 1 optimises L1 for sr.iters_psnr steps; phase 2 starts from it and adds the
relativistic average GAN loss and (optionally) the VGG19 perceptual loss with the
ESRGAN paper's weights. An EMA copy of the generator is validated and exported.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from models.basicsr_compat import GANLoss
from models.sr import VGGPerceptualLoss, build_discriminator, build_generator
from models.weights import WeightsError
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
from pipeline.config import SRParams, load_params
from pipeline.device import autocast_for, resolve_device, seed_everything
from pipeline.distributed import (
    SINGLE_PROCESS,
    DistContext,
    barrier,
    init_distributed,
    replica_digests,
    shutdown,
    wrap,
)
from pipeline.sr_metrics import evaluate_sr, save_sr_samples

# Keys that change what is trained; inference-only keys may change without a retrain.
INFERENCE_ONLY = {"tile", "tile_overlap", "infer_batch"}


def training_config(params: SRParams, seed: int, pairs: dict[str, np.ndarray]) -> dict:
    config = {k: v for k, v in dataclasses.asdict(params).items() if k not in INFERENCE_ONLY}
    digest = hashlib.sha256()
    for name in sorted(pairs):
        digest.update(np.ascontiguousarray(pairs[name]).tobytes())
    return config | {"seed": seed, "pairs_sha256": digest.hexdigest()}


def checkpoint_path_for(checkpoint_dir: Path, config: dict) -> Path:
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return checkpoint_dir / f"sr-{key}.pt"


class EMA:
    """Exponential moving average of the generator's weights, with a warm-up."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up: early on the average would otherwise be dominated by the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.model.state_dict().values(), model.state_dict().values()):
            if ema_p.dtype.is_floating_point:
                ema_p.mul_(decay).add_(p.detach(), alpha=1 - decay)
            else:
                ema_p.copy_(p)


def _milestones(fractions: list[float], iters: int) -> list[int]:
    return sorted({max(1, int(f * iters)) for f in fractions})


def _check_finite(losses: dict[str, torch.Tensor], iteration: int) -> None:
    for name, value in losses.items():
        if not torch.isfinite(value):
            raise PipelineError(
                f"non-finite loss at iteration {iteration}: {name} = {value.item()}; the run "
                "stopped and the last good checkpoint was kept. Lower sr.lr_g / sr.lr_d or use "
                "sr.precision: fp32")


def batch_indices(n: int, batch: int, seed: int, rank: int, iteration: int) -> torch.Tensor:
    """Training batch for (rank, iteration): a pure function, so a resumed run draws the
    same batches as an uninterrupted one, and ranks draw different ones."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + rank * 100_003 + iteration)
    return torch.randint(n, (batch,), generator=generator)


def train_sr(pairs: dict[str, np.ndarray], params: SRParams, device: torch.device, seed: int,
             checkpoint_dir: Path, stop_after: int | None = None,
             context: DistContext = SINGLE_PROCESS) -> dict:
    """Train (or resume) and return {ema_state, metrics, log}; `stop_after` is for tests.

    Under torchrun each rank draws sr.batch_size / world_size pairs per step (the global
    batch stays sr.batch_size); DDP averages gradients; rank 0 validates and checkpoints.
    """
    config = training_config(params, seed, pairs)
    checkpoint_path = checkpoint_path_for(checkpoint_dir, config)
    remove_stale_temporaries(checkpoint_dir)
    seed_everything(seed, deterministic=device.type == "cpu")
    train_lr = torch.from_numpy(pairs["train_lr"])
    train_hr = torch.from_numpy(pairs["train_hr"])

    generator = build_generator(params.scale, params.num_feat, params.num_block,
                                params.num_grow_ch, params.residual).to(device)
    discriminator = build_discriminator(params.hr_patch, params.disc_feat).to(device)
    memory_format = torch.channels_last if params.channels_last else torch.contiguous_format
    generator.to(memory_format=memory_format)
    # basicsr's discriminator flattens with .view(), which needs contiguous (NCHW) features,
    # so it stays in the default memory format and gets contiguous inputs.
    if params.batch_size % context.world_size:
        raise PipelineError(f"sr.batch_size {params.batch_size} does not divide over "
                            f"{context.world_size} processes")
    rank_batch = params.batch_size // context.world_size
    generator_train = wrap(generator, context, device)
    discriminator_train = wrap(discriminator, context, device)
    ema = EMA(generator, params.ema_decay)
    perceptual = None
    if params.weight_perceptual > 0 and params.iters_gan > 0:
        try:
            perceptual = VGGPerceptualLoss(Path(params.vgg_weights)).to(device)
        except WeightsError as exc:
            raise PipelineError(str(exc)) from None
    gan_loss = GANLoss("vanilla", loss_weight=params.weight_gan).to(device)
    betas = (0.9, 0.99)  # ESRGAN's Adam betas
    opt_psnr = torch.optim.Adam(generator.parameters(), lr=params.lr_g, betas=betas)
    # ESRGAN halves the generator's learning rate for the GAN phase (2e-4 -> 1e-4).
    opt_gan = torch.optim.Adam(generator.parameters(), lr=params.lr_g / 2, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=params.lr_d, betas=betas)
    sched_psnr = torch.optim.lr_scheduler.MultiStepLR(
        opt_psnr, _milestones(params.lr_milestones, params.iters_psnr), 0.5)
    sched_gan = torch.optim.lr_scheduler.MultiStepLR(
        opt_gan, _milestones(params.lr_milestones, max(params.iters_gan, 1)), 0.5)
    sched_d = torch.optim.lr_scheduler.MultiStepLR(
        opt_d, _milestones(params.lr_milestones, max(params.iters_gan, 1)), 0.5)
    scaler = torch.amp.GradScaler(device.type, enabled=params.precision == "fp16")

    iteration, log, psnr_phase1, seconds = 0, [], {}, 0.0
    state = load_checkpoint(checkpoint_path, config)
    if state is not None:
        generator.load_state_dict(state["generator"])
        ema.model.load_state_dict(state["ema"])
        discriminator.load_state_dict(state["discriminator"])
        for obj, key in ((opt_psnr, "opt_psnr"), (opt_gan, "opt_gan"), (opt_d, "opt_d"),
                         (sched_psnr, "sched_psnr"), (sched_gan, "sched_gan"),
                         (sched_d, "sched_d")):
            obj.load_state_dict(state[key])
        torch.set_rng_state(state["torch_rng"])
        iteration, log = state["iteration"], state["log"]
        psnr_phase1, seconds = state["phase1"], state["train_seconds"]
        console.print(f"resuming SR training from {checkpoint_path} at iteration {iteration}")

    def save_checkpoint() -> None:
        if not context.is_main:
            return
        save_torch_atomic(checkpoint_path, {
            "config": config, "iteration": iteration, "generator": generator.state_dict(),
            "ema": ema.model.state_dict(), "discriminator": discriminator.state_dict(),
            "opt_psnr": opt_psnr.state_dict(), "opt_gan": opt_gan.state_dict(),
            "opt_d": opt_d.state_dict(), "sched_psnr": sched_psnr.state_dict(),
            "sched_gan": sched_gan.state_dict(), "sched_d": sched_d.state_dict(),
            "torch_rng": torch.get_rng_state(), "log": log,
            "phase1": psnr_phase1, "train_seconds": seconds})

    def validate(phase: str, running: dict[str, list[float]]) -> dict:
        if not context.is_main:
            running.clear()
            return {}
        scores = evaluate_sr(ema.model, pairs["val_lr"], pairs["val_hr"], params.scale, device,
                             params.batch_size, params.precision)
        row = {"iteration": iteration, "phase": phase}
        row |= {k: float(np.mean(v)) for k, v in running.items() if v}
        row |= scores
        log.append(row)
        running.clear()
        return scores

    total = params.iters_psnr + params.iters_gan
    running: dict[str, list[float]] = {}
    generator.train()
    discriminator.train()
    with progress() as bar:
        task = bar.add_task("train_sr", total=total, completed=iteration, status="")
        while iteration < total:
            if stop_after is not None and iteration >= stop_after:
                break
            started = time.perf_counter()
            index = batch_indices(len(train_lr), rank_batch, seed, context.rank, iteration)
            lr_batch = train_lr[index].to(device, non_blocking=True).contiguous(
                memory_format=memory_format)
            hr_batch = train_hr[index].to(device, non_blocking=True).contiguous(
                memory_format=memory_format)
            phase = "psnr" if iteration < params.iters_psnr else "gan"
            if phase == "psnr":
                with autocast_for(device, params.precision):
                    sr_batch = generator_train(lr_batch)
                    loss_pixel = F.l1_loss(sr_batch.float(), hr_batch)
                _check_finite({"loss_pixel": loss_pixel}, iteration)
                opt_psnr.zero_grad(set_to_none=True)
                scaler.scale(loss_pixel).backward()
                scaler.step(opt_psnr)
                sched_psnr.step()
                running.setdefault("loss_pixel", []).append(loss_pixel.item())
            else:
                losses = _gan_step(generator_train, discriminator, discriminator_train, gan_loss,
                                   perceptual, lr_batch, hr_batch, params, device, opt_gan,
                                   opt_d, scaler, iteration)
                sched_gan.step()
                sched_d.step()
                for key, value in losses.items():
                    running.setdefault(key, []).append(value)
            scaler.update()
            iteration += 1
            ema.update(generator, iteration)
            seconds += time.perf_counter() - started

            if iteration == params.iters_psnr:
                psnr_phase1 = validate("psnr", running)
                save_checkpoint()
            elif iteration % params.val_every == 0 or iteration == total:
                validate(phase, running)
            if iteration % params.checkpoint_every == 0 and iteration < total:
                save_checkpoint()
            last = log[-1] if log else {}
            bar.update(task, completed=iteration, status=(
                f"{phase} " + " ".join(f"{k[5:] if k.startswith('loss_') else k}={v:.4g}"
                                       for k, v in last.items()
                                       if k.startswith(("loss", "psnr")) and
                                       isinstance(v, float))))

    if iteration < total:  # stopped early on purpose (tests): leave the checkpoint for resume
        save_checkpoint()
        barrier(context)
        return {"ema_state": None, "metrics": None, "log": log, "iteration": iteration,
                "checkpoint": checkpoint_path}

    digests = replica_digests(generator, context)  # collective: every rank takes part
    if not context.is_main:
        return {"ema_state": None, "metrics": None, "log": log, "iteration": iteration,
                "checkpoint": checkpoint_path}
    final = log[-1]
    metrics = {
        "psnr": final["psnr"], "ssim": final["ssim"],
        "psnr_bicubic": final["psnr_bicubic"], "ssim_bicubic": final["ssim_bicubic"],
        "psnr_phase1": psnr_phase1.get("psnr"), "ssim_phase1": psnr_phase1.get("ssim"),
        "train_seconds": round(seconds, 2), "iterations": iteration,
        "generator_params_millions": round(sum(p.numel() for p in generator.parameters()) / 1e6,
                                           4),
        "perceptual_loss": "vgg19:" + Path(params.vgg_weights).name if perceptual else "off",
        "world_size": context.world_size, "replica_weight_digests": digests,
        "environment": environment_record(device),
    }
    return {"ema_state": {k: v.detach().cpu() for k, v in ema.model.state_dict().items()},
            "metrics": metrics, "log": log, "iteration": iteration,
            "checkpoint": checkpoint_path}


def _gan_step(generator, discriminator, discriminator_train, gan_loss, perceptual, lr_batch,
              hr_batch, params: SRParams, device, opt_g, opt_d, scaler,
              iteration) -> dict[str, float]:
    """One ESRGAN step: relativistic average GAN loss for G, then for D.

    `discriminator` is the bare module, `discriminator_train` the (possibly DDP-wrapped)
    one whose gradients are synchronised. The generator's step only needs gradients
    through D's input, so it uses the bare module with D's parameters frozen.
    """
    hr_batch = hr_batch.contiguous()
    for p in discriminator.parameters():
        p.requires_grad_(False)
    with autocast_for(device, params.precision):
        sr_batch = generator(lr_batch)
        real_pred = discriminator(hr_batch).detach().float()
        fake_pred = discriminator(sr_batch.contiguous()).float()
        loss_pixel = params.weight_pixel * F.l1_loss(sr_batch.float(), hr_batch)
        loss_perceptual = (params.weight_perceptual * perceptual(sr_batch.float(), hr_batch)
                           if perceptual is not None else torch.zeros((), device=device))
        # RaGAN: each side is judged relative to the mean score of the other side.
        loss_gan = (gan_loss(real_pred - fake_pred.mean(), False, is_disc=False)
                    + gan_loss(fake_pred - real_pred.mean(), True, is_disc=False)) / 2
    loss_g = loss_pixel + loss_perceptual + loss_gan
    _check_finite({"loss_pixel": loss_pixel, "loss_perceptual": loss_perceptual,
                   "loss_gan": loss_gan}, iteration)
    opt_g.zero_grad(set_to_none=True)
    scaler.scale(loss_g).backward()
    scaler.step(opt_g)

    for p in discriminator.parameters():
        p.requires_grad_(True)
    fake_input = sr_batch.detach().contiguous()
    opt_d.zero_grad(set_to_none=True)
    # One forward and one backward at a time (as basicsr does), which DDP requires.
    with torch.no_grad(), autocast_for(device, params.precision):
        fake_reference = discriminator(fake_input).float().mean()
    with autocast_for(device, params.precision):
        real_pred = discriminator_train(hr_batch).float()
        loss_d_real = gan_loss(real_pred - fake_reference, True, is_disc=True) * 0.5
    _check_finite({"loss_d_real": loss_d_real}, iteration)
    scaler.scale(loss_d_real).backward()
    with autocast_for(device, params.precision):
        fake_pred = discriminator_train(fake_input).float()
        loss_d_fake = gan_loss(fake_pred - real_pred.detach().mean(), False, is_disc=True) * 0.5
    _check_finite({"loss_d_fake": loss_d_fake}, iteration)
    scaler.scale(loss_d_fake).backward()
    scaler.step(opt_d)
    return {"loss_pixel": loss_pixel.item(), "loss_perceptual": loss_perceptual.item(),
            "loss_gan": loss_gan.item(), "loss_d": (loss_d_real + loss_d_fake).item(),
            "d_real": torch.sigmoid(real_pred.detach()).mean().item(),
            "d_fake": torch.sigmoid(fake_pred.detach()).mean().item()}


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="EMA generator output (.pt)")
    parser.add_argument("--checkpoints", type=Path, required=True, help="persistent folder")
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--curves", type=Path, required=True)
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    params = load_params(args.params)
    context, device = init_distributed(resolve_device(params.device))
    pairs = {name: load_array(args.pairs / f"{name}.npy")
             for name in ("train_lr", "train_hr", "val_lr", "val_hr")}
    args.checkpoints.mkdir(parents=True, exist_ok=True)  # a DVC out, even if never written
    result = train_sr(pairs, params.sr, device, params.seed, args.checkpoints, context=context)
    shutdown(context)
    if not context.is_main:
        console.print(f"rank {context.rank}: training done; rank 0 writes the outputs")
        return

    model_config = {k: getattr(params.sr, k) for k in ("scale", "num_feat", "num_block",
                                                       "num_grow_ch", "residual")}
    save_torch_atomic(args.model, {"model": result["ema_state"], "config": model_config})
    write_csv_atomic(args.curves, pd.DataFrame(result["log"]))
    save_sr_samples(result["ema_state"], model_config, pairs, args.samples)
    write_json_atomic(args.metrics, result["metrics"])
    result["checkpoint"].unlink(missing_ok=True)  # finished: nothing left to resume
    m = result["metrics"]
    console.print(f"SR (EMA, validation): PSNR {m['psnr']:.2f} dB vs bicubic "
                  f"{m['psnr_bicubic']:.2f} dB; SSIM {m['ssim']:.4f} vs {m['ssim_bicubic']:.4f}")
    if not math.isfinite(m["psnr"]):
        raise PipelineError("validation PSNR is not finite")


if __name__ == "__main__":
    main()
