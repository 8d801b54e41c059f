"""ESRGAN training machinery: the networks, optimisers and losses of a run, and one step
of each phase (L1 pre-training; relativistic GAN). The loop lives in sr.training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from models.basicsr_compat import GANLoss
from models.sr import VGGPerceptualLoss, build_discriminator, build_generator
from models.weights import WeightsError
from pipeline.cli import PipelineError
from pipeline.config import SRParams
from pipeline.runtime.device import autocast_for, device_of, restore_rng_state, rng_state
from pipeline.runtime.distributed import SINGLE_PROCESS, DistContext, any_across_ranks, wrap

# Without a perceptual loss, ESRGAN's weights (L1 0.01, GAN 0.005) leave the adversarial
# term as large as the only content term, and the GAN phase drifts below bicubic. SRGAN's
# MSE-content variant (Ledig et al. 2017, eq. 3-4: content 1, adversarial 1e-3) is the
# published balance for a pixel-loss-only GAN, so that ratio is used instead.
PIXEL_ONLY_CONTENT_WEIGHT = 1.0
PIXEL_ONLY_ADVERSARIAL_WEIGHT = 1e-3


def gan_phase_weights(params: SRParams, perceptual_on: bool) -> dict[str, float]:
    """Loss weights of the GAN phase: the params' (ESRGAN) with the perceptual loss, the
    SRGAN-MSE balance without it (see PIXEL_ONLY_*)."""
    if perceptual_on:
        return {"pixel": params.weight_pixel, "perceptual": params.weight_perceptual,
                "gan": params.weight_gan}
    return {"pixel": PIXEL_ONLY_CONTENT_WEIGHT, "perceptual": 0.0,
            "gan": PIXEL_ONLY_ADVERSARIAL_WEIGHT}


class GeneratorEMA:
    """Exponential moving average of the generator's weights (torch's AveragedModel with
    get_ema_multi_avg_fn), with a warm-up: early on the average would otherwise be
    dominated by the random initialisation, so step t uses min(decay, (1+t) / (10+t))."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self._step = decay, 0
        self.averaged = AveragedModel(model, multi_avg_fn=self._update_with_warm_up)
        self.averaged.update_parameters(model)  # the first update copies the weights
        self.model.eval().requires_grad_(False)

    @property
    def model(self) -> nn.Module:
        """The averaged generator, used for validation and export."""
        return self.averaged.module

    def _update_with_warm_up(self, averaged, current, _num_averaged) -> None:
        # The step comes from the training loop, not from AveragedModel's n_averaged: reading
        # that tensor here would make every step wait for the device.
        decay = min(self.decay, (1 + self._step) / (10 + self._step))
        get_ema_multi_avg_fn(decay)(averaged, current, None)

    def update(self, model: nn.Module, step: int) -> None:
        self._step = step
        self.averaged.update_parameters(model)


@dataclass
class SRTraining:
    """Everything a run of train_sr carries from step to step (and into a checkpoint)."""

    generator: nn.Module
    discriminator: nn.Module
    generator_train: nn.Module  # DDP-wrapped under torchrun, else the module itself
    discriminator_train: nn.Module
    ema: GeneratorEMA
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    scaler: torch.amp.GradScaler
    gan_loss: nn.Module
    perceptual: nn.Module | None
    weights: dict[str, float]
    iteration: int = 0
    seconds: float = 0.0
    log: list[dict] = field(default_factory=list)
    phase1: dict = field(default_factory=dict)  # best phase-1 validation: scores, state, step
    best_at_quarter: int | None = None  # phase1's best iteration a quarter into phase 1
    # Per loss: whether any step since `checked_at` gave a non-finite value. Kept on the
    # device and read only by raise_if_nonfinite, so no step waits for the GPU.
    nonfinite: dict[str, torch.Tensor] = field(default_factory=dict)
    checked_at: int = 0


def _milestones(fractions: list[float], iters: int) -> list[int]:
    return sorted({max(1, int(f * iters)) for f in fractions})


def build_training(params: SRParams, device: torch.device, context: DistContext) -> SRTraining:
    generator = build_generator(params.scale, params.num_feat, params.num_block,
                                params.num_grow_ch, params.residual).to(device)
    discriminator = build_discriminator(params.discriminator, params.hr_patch,
                                        params.disc_feat).to(device)
    if params.channels_last:
        # basicsr's VGG discriminator flattens with .view(), which needs NCHW features, so
        # only the generator changes memory format.
        generator.to(memory_format=torch.channels_last)
    perceptual = None
    if params.weight_perceptual > 0 and params.iters_gan > 0:
        try:
            perceptual = VGGPerceptualLoss(Path(params.vgg_weights)).to(device)
        except WeightsError as exc:
            raise PipelineError(str(exc)) from None
    weights = gan_phase_weights(params, perceptual is not None)
    betas = (0.9, 0.99)  # ESRGAN's Adam betas
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizers = {
        "psnr": torch.optim.Adam(generator.parameters(), lr=params.lr_g, betas=betas, **fused),
        # ESRGAN halves the generator's learning rate for the GAN phase (2e-4 -> 1e-4).
        "gan": torch.optim.Adam(generator.parameters(), lr=params.lr_g / 2, betas=betas,
                                **fused),
        "d": torch.optim.Adam(discriminator.parameters(), lr=params.lr_d, betas=betas,
                              **fused)}
    lengths = {"psnr": params.iters_psnr, "gan": max(params.iters_gan, 1),
               "d": max(params.iters_gan, 1)}
    schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(
        optimizer, _milestones(params.lr_milestones, lengths[name]), 0.5)
        for name, optimizer in optimizers.items()}
    return SRTraining(
        generator=generator, discriminator=discriminator,
        generator_train=wrap(generator, context, device),
        discriminator_train=wrap(discriminator, context, device),
        ema=GeneratorEMA(generator, params.ema_decay), optimizers=optimizers, schedulers=schedulers,
        scaler=torch.amp.GradScaler(device.type, enabled=params.precision == "fp16"),
        gan_loss=GANLoss("vanilla", loss_weight=weights["gan"]).to(device),
        perceptual=perceptual, weights=weights)


def checkpoint_state(run: SRTraining, config: dict) -> dict:
    return {"config": config, "iteration": run.iteration,
            "generator": run.generator.state_dict(), "ema": run.ema.model.state_dict(),
            "discriminator": run.discriminator.state_dict(),
            "optimizers": {k: v.state_dict() for k, v in run.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in run.schedulers.items()},
            "torch_rng": rng_state(device_of(run.generator)),
            "scaler": run.scaler.state_dict(),
            "log": run.log, "phase1": run.phase1, "best_at_quarter": run.best_at_quarter,
            "train_seconds": run.seconds, "finished": False}


def restore(run: SRTraining, state: dict) -> None:
    run.generator.load_state_dict(state["generator"])
    run.ema.model.load_state_dict(state["ema"])
    run.discriminator.load_state_dict(state["discriminator"])
    for name in run.optimizers:
        run.optimizers[name].load_state_dict(state["optimizers"][name])
        run.schedulers[name].load_state_dict(state["schedulers"][name])
    restore_rng_state(state["torch_rng"], device_of(run.generator))
    if state.get("scaler"):  # fp16's loss scale goes on where it was
        run.scaler.load_state_dict(state["scaler"])
    run.iteration, run.log, run.phase1 = state["iteration"], state["log"], state["phase1"]
    run.best_at_quarter = state.get("best_at_quarter")
    run.seconds = state["train_seconds"]
    run.checked_at = run.iteration


def _note_finite(run: SRTraining, losses: dict[str, torch.Tensor]) -> None:
    for name, value in losses.items():
        bad = ~torch.isfinite(value.detach())
        run.nonfinite[name] = run.nonfinite[name] | bad if name in run.nonfinite else bad


def raise_if_nonfinite(run: SRTraining, context: DistContext = SINGLE_PROCESS) -> None:
    """Stop if a loss was non-finite since the last check (one wait for the device). Called
    before every validation and checkpoint, so a diverged step never reaches disk.

    Under torchrun the flags are combined over the ranks: DDP averages one rank's NaN
    gradients into every rank's weights, so rank 0 must stop when another rank's loss
    was non-finite, before it validates and saves. Every rank calls this at the same
    iterations (it is a collective)."""
    if run.nonfinite:
        flags = any_across_ranks(torch.stack(list(run.nonfinite.values())), context)
        flags = flags.cpu().tolist()
        bad = [name for name, flag in zip(run.nonfinite, flags) if flag]
        if bad:
            raise PipelineError(
                f"non-finite {', '.join(bad)} in iterations {run.checked_at + 1}-"
                f"{run.iteration}; the run stopped and the last good checkpoint was kept. "
                "Lower sr.lr_g / sr.lr_d or use sr.precision: fp32")
    run.nonfinite.clear()
    run.checked_at = run.iteration


def batch_indices(n: int, batch: int, seed: int, rank: int, iteration: int) -> torch.Tensor:
    """Training batch for (rank, iteration): a pure function, so a resumed run draws the
    same batches as an uninterrupted one, and ranks draw different ones."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + rank * 100_003 + iteration)
    return torch.randint(n, (batch,), generator=generator)


def psnr_step(run: SRTraining, lr_batch, hr_batch, params: SRParams,
              device: torch.device) -> dict[str, torch.Tensor]:
    """One phase-1 step: L1 between SR and HR."""
    with autocast_for(device, params.precision):
        sr_batch = run.generator_train(lr_batch)
        loss_pixel = F.l1_loss(sr_batch.float(), hr_batch)
    _note_finite(run, {"loss_pixel": loss_pixel})
    optimizer = run.optimizers["psnr"]
    optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss_pixel).backward()
    run.scaler.step(optimizer)
    run.schedulers["psnr"].step()
    return {"loss_pixel": loss_pixel.detach()}


def gan_step(run: SRTraining, lr_batch, hr_batch, params: SRParams,
             device: torch.device) -> dict[str, torch.Tensor]:
    """One ESRGAN step: relativistic average GAN loss for G, then for D.

    The generator's step only needs gradients through D's input, so it uses the bare
    discriminator with its parameters frozen; D's own step goes through the (possibly
    DDP-wrapped) module, one forward and one backward at a time as DDP requires.
    """
    discriminator, gan_loss, weights = run.discriminator, run.gan_loss, run.weights
    hr_batch = hr_batch.contiguous()
    discriminator.requires_grad_(False)
    with autocast_for(device, params.precision):
        sr_batch = run.generator_train(lr_batch)
        real_pred = discriminator(hr_batch).detach().float()
        fake_pred = discriminator(sr_batch.contiguous()).float()
        loss_pixel = weights["pixel"] * F.l1_loss(sr_batch.float(), hr_batch)
        loss_perceptual = (weights["perceptual"] * run.perceptual(sr_batch.float(), hr_batch)
                           if run.perceptual is not None else torch.zeros((), device=device))
        # RaGAN: each side is judged relative to the mean score of the other side.
        loss_gan = (gan_loss(real_pred - fake_pred.mean(), False, is_disc=False)
                    + gan_loss(fake_pred - real_pred.mean(), True, is_disc=False)) / 2
    _note_finite(run, {"loss_pixel": loss_pixel, "loss_perceptual": loss_perceptual,
                       "loss_gan": loss_gan})
    run.optimizers["gan"].zero_grad(set_to_none=True)
    run.scaler.scale(loss_pixel + loss_perceptual + loss_gan).backward()
    run.scaler.step(run.optimizers["gan"])

    discriminator.requires_grad_(True)
    fake_input = sr_batch.detach().contiguous()
    run.optimizers["d"].zero_grad(set_to_none=True)
    with torch.no_grad(), autocast_for(device, params.precision):
        fake_reference = discriminator(fake_input).float().mean()
    with autocast_for(device, params.precision):
        real_pred = run.discriminator_train(hr_batch).float()
        loss_d_real = gan_loss(real_pred - fake_reference, True, is_disc=True) * 0.5
    _note_finite(run, {"loss_d_real": loss_d_real})
    run.scaler.scale(loss_d_real).backward()
    with autocast_for(device, params.precision):
        fake_pred = run.discriminator_train(fake_input).float()
        loss_d_fake = gan_loss(fake_pred - real_pred.detach().mean(), False, is_disc=True) * 0.5
    _note_finite(run, {"loss_d_fake": loss_d_fake})
    run.scaler.scale(loss_d_fake).backward()
    run.scaler.step(run.optimizers["d"])
    run.schedulers["gan"].step()
    run.schedulers["d"].step()
    return {"loss_pixel": loss_pixel.detach(), "loss_perceptual": loss_perceptual.detach(),
            "loss_gan": loss_gan.detach(), "loss_d": (loss_d_real + loss_d_fake).detach(),
            "d_real": torch.sigmoid(real_pred.detach()).mean(),
            "d_fake": torch.sigmoid(fake_pred.detach()).mean()}
