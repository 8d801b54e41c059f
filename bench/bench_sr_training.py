"""train_sr's steady step time against a bare RRDBNet (+ discriminator) step, same batch,
patch size, precision, in one process.

Baseline: a hand-written loop on one batch already on the device: for phase 1 a generator
forward, L1, backward and Adam step; for the GAN phase that plus a relativistic GAN loss
through the discriminator and the discriminator's own step. The pipeline's figures are
train_sr's `seconds_per_iteration_psnr` / `_gan` (first interval of each phase left out).
Issue target on a GPU: within 1.3x of the bare step.

    python bench/bench_sr_training.py [--device auto] [--feat 64 --blocks 23 --grow 32]
        [--batch 16] [--patch 128] [--iters 60] [--precision fp32]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.sr import build_discriminator, build_generator
from pipeline.cli import first_line
from pipeline.config import load_params
from pipeline.runtime.device import autocast_for, resolve_device
from pipeline.sr.training import train_sr

REPO = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_seconds(sr, device: torch.device, iters: int) -> dict[str, float]:
    """Seconds per bare step, phase 1 and GAN phase, after 3 warm-up steps each."""
    generator = build_generator(sr.scale, sr.num_feat, sr.num_block, sr.num_grow_ch,
                                sr.residual).to(device)
    discriminator = build_discriminator(sr.discriminator, sr.hr_patch, sr.disc_feat).to(device)
    lr = torch.rand(sr.batch_size, 1, sr.hr_patch // sr.scale, sr.hr_patch // sr.scale,
                    device=device)
    hr = torch.rand(sr.batch_size, 1, sr.hr_patch, sr.hr_patch, device=device)
    # As train_sr runs on CUDA: fused Adam, cuDNN autotuning.
    fused = device.type == "cuda" or None
    g_opt = torch.optim.Adam(generator.parameters(), 1e-4, fused=fused)
    d_opt = torch.optim.Adam(discriminator.parameters(), 1e-4, fused=fused)
    torch.backends.cudnn.benchmark = device.type == "cuda"

    def psnr_step():
        with autocast_for(device, sr.precision):
            loss = F.l1_loss(generator(lr).float(), hr)
        g_opt.zero_grad(set_to_none=True)
        loss.backward()
        g_opt.step()

    def gan_step():
        with autocast_for(device, sr.precision):
            fake = generator(lr)
            real_logit, fake_logit = discriminator(hr).float(), discriminator(fake).float()
            loss = F.l1_loss(fake.float(), hr) + 1e-3 * F.binary_cross_entropy_with_logits(
                fake_logit - real_logit.detach().mean(), torch.ones_like(fake_logit))
        g_opt.zero_grad(set_to_none=True)
        loss.backward()
        g_opt.step()
        with autocast_for(device, sr.precision):
            real_logit = discriminator(hr).float()
            fake_logit = discriminator(fake.detach()).float()
            d_loss = F.binary_cross_entropy_with_logits(
                real_logit - fake_logit.mean(), torch.ones_like(real_logit)) + \
                F.binary_cross_entropy_with_logits(fake_logit - real_logit.mean(),
                                                   torch.zeros_like(fake_logit))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()

    seconds = {}
    for name, step in (("psnr", psnr_step), ("gan", gan_step)):
        for _ in range(3):
            step()
        sync(device)
        started = time.perf_counter()
        for _ in range(iters):
            step()
        sync(device)
        seconds[name] = (time.perf_counter() - started) / iters
    return seconds


def pipeline_seconds(sr, device: torch.device, iters: int, crops: int = 64) -> dict:
    """train_sr on random pairs: `iters` iterations per phase, validated every iters / 3."""
    rng = np.random.default_rng(0)
    lr_size = sr.hr_patch // sr.scale
    pairs = {"train_lr": rng.random((crops, 1, lr_size, lr_size), dtype=np.float32),
             "train_hr": rng.random((crops, 1, sr.hr_patch, sr.hr_patch), dtype=np.float32),
             "val_lr": rng.random((8, 1, lr_size, lr_size), dtype=np.float32),
             "val_hr": rng.random((8, 1, sr.hr_patch, sr.hr_patch), dtype=np.float32)}
    every = max(iters // 3, 1)
    sr = dataclasses.replace(sr, iters_psnr=iters, iters_gan=iters, val_every=every,
                             checkpoint_every=10 * iters)
    with tempfile.TemporaryDirectory() as checkpoints:
        return train_sr(pairs, sr, device, 0, Path(checkpoints))["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=first_line(__doc__))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--feat", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--grow", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=12, help="per phase")
    parser.add_argument("--precision", default="fp32")
    args = parser.parse_args()
    device = resolve_device(args.device)
    sr = load_params(REPO / "params.yaml").sr
    sr = dataclasses.replace(
        sr, num_feat=args.feat, num_block=args.blocks, num_grow_ch=args.grow,
        batch_size=args.batch, hr_patch=args.patch, precision=args.precision,
        discriminator="vgg" if args.patch in (128, 256) else "unet", weight_perceptual=0.0)
    bare = bare_seconds(sr, device, args.iters)
    metrics = pipeline_seconds(sr, device, args.iters)
    print(f"device {device}, RRDBNet {args.feat}/{args.blocks}/{args.grow}, batch "
          f"{args.batch}, HR patch {args.patch}, {args.precision}, {sr.discriminator} "
          "discriminator")
    for phase in ("psnr", "gan"):
        ours = metrics[f"seconds_per_iteration_{phase}"]
        print(f"{phase:>4} phase: bare {bare[phase]:.4f} s/step, train_sr {ours:.4f} s/step, "
              f"ratio {ours / bare[phase]:.2f}x (target <= 1.3 on a GPU)")


if __name__ == "__main__":
    main()
