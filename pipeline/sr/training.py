"""Train the ESRGAN-style SR model: L1 pre-training, then relativistic GAN fine-tuning.

A plain loop over basicsr's RRDBNet and a basicsr discriminator (no option files):
phase 1 optimises L1 for sr.iters_psnr steps; phase 2 starts from it and adds the
relativistic average GAN loss and (optionally) the VGG19 perceptual loss. An EMA copy of
the generator is validated throughout. Both generators are exported, each with its
validation PSNR/SSIM: the PSNR-oriented one (the best phase-1 EMA on validation; with
sr.residual the candidates start at the untrained generator, which is exactly bicubic, so
it is never below bicubic on validation) and the GAN one (the EMA at the end);
sr.generator picks the one that feeds the classifier.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.cli import PipelineError, console, progress, warn
from pipeline.config import SRParams
from pipeline.io import byte_view, remove_stale_temporaries, save_torch_atomic
from pipeline.runtime.checkpoints import checkpoint_path as checkpoint_file
from pipeline.runtime.checkpoints import load_checkpoint
from pipeline.runtime.device import seed_everything
from pipeline.runtime.distributed import SINGLE_PROCESS, DistContext, barrier, replica_digests
from pipeline.runtime.placement import gather_rows, place
from pipeline.runtime.threads import fit_threads
from pipeline.sr.quality import evaluate_sr
from pipeline.sr.steps import (
    SRTraining,
    batch_indices,
    build_training,
    checkpoint_state,
    gan_step,
    psnr_step,
    raise_if_nonfinite,
    restore,
)

# Keys that do not change what is trained: a change reuses the finished training.
NOT_TRAINING = {"tile", "tile_overlap", "infer_batch", "generator", "min_gain_db"}
# Pairs that train (train_*) and choose the checkpoint (val_*); test_* pairs only score it.
TRAINING_PAIRS = ("train_lr", "train_hr", "val_lr", "val_hr")

MODEL_KEYS = ("scale", "num_feat", "num_block", "num_grow_ch", "residual")


def training_config(params: SRParams, seed: int, pairs: dict[str, np.ndarray]) -> dict:
    config = {k: v for k, v in dataclasses.asdict(params).items() if k not in NOT_TRAINING}
    digest = hashlib.sha256()
    for name in sorted(TRAINING_PAIRS):
        digest.update(byte_view(pairs[name]))
    return config | {"seed": seed, "pairs_sha256": digest.hexdigest()}


def validate(run: SRTraining, pairs: dict[str, np.ndarray], phase: str, params: SRParams,
             device: torch.device, running: dict[str, list[torch.Tensor]]) -> dict:
    """Score the EMA generator on the validation pairs; log the running losses with it."""
    scores = evaluate_sr(run.ema.model, pairs["val_lr"], pairs["val_hr"], params.scale,
                         device, params.batch_size, params.precision)
    row = {"iteration": run.iteration, "phase": phase, "train_seconds": round(run.seconds, 4)}
    row |= {k: float(torch.stack(v).mean()) for k, v in running.items() if v}  # one sync
    row |= scores
    run.log.append(row)
    running.clear()
    return scores


def train_step(run: SRTraining, train_lr: torch.Tensor, train_hr: torch.Tensor,
               placement: str, params: SRParams, device: torch.device, seed: int,
               context: DistContext, running: dict[str, list[torch.Tensor]]) -> str:
    """One iteration of the current phase; its losses stay on the device in `running`."""
    memory_format = torch.channels_last if params.channels_last else torch.contiguous_format
    index = batch_indices(len(train_lr), params.batch_size // context.world_size, seed,
                          context.rank, run.iteration)
    lr_batch = gather_rows(train_lr, index, placement, device).contiguous(
        memory_format=memory_format)
    hr_batch = gather_rows(train_hr, index, placement, device).contiguous(
        memory_format=memory_format)
    phase = "psnr" if run.iteration < params.iters_psnr else "gan"
    step = psnr_step if phase == "psnr" else gan_step
    losses = step(run, lr_batch, hr_batch, params, device)
    if context.is_main:  # only rank 0 validates, logs and so empties `running`
        for key, value in losses.items():
            running.setdefault(key, []).append(value)
    run.scaler.update()
    run.iteration += 1
    run.ema.update(run.generator, run.iteration)
    return phase


def train_steps(run: SRTraining, pairs: dict[str, np.ndarray], params: SRParams,
                device: torch.device, seed: int, context: DistContext, save, until: int) -> None:
    """Train from run.iteration up to `until` (both phases), validating and checkpointing.

    Steps are timed in chunks that end where the loop waits for the device anyway (the
    finiteness check before a validation or checkpoint), so on a GPU `run.seconds` is the
    steps' real time, and validation and checkpoints are not in it.
    """
    # The pairs on the GPU when they fit (a batch is then a gather there), else on the
    # host with each batch copied through pinned memory.
    (train_lr, train_hr), placement = place(
        [torch.from_numpy(pairs["train_lr"]), torch.from_numpy(pairs["train_hr"])], device)
    total = params.iters_psnr + params.iters_gan
    running: dict[str, list[torch.Tensor]] = {}
    if run.iteration == 0 and context.is_main:
        # The untrained residual generator is exactly bicubic: the first candidate, so the
        # exported phase-1 model can never be worse than bicubic on validation.
        keep_if_best(run, evaluate_sr(run.ema.model, pairs["val_lr"], pairs["val_hr"],
                                      params.scale, device, params.batch_size,
                                      params.precision))
    run.generator.train()
    run.discriminator.train()
    with progress() as bar:
        task = bar.add_task("train_sr", total=total, completed=run.iteration, status="")
        chunk_started = time.perf_counter()
        while run.iteration < until:
            phase = train_step(run, train_lr, train_hr, placement, params, device, seed,
                               context, running)
            end_of_phase1 = run.iteration == params.iters_psnr
            validation_due = (end_of_phase1 or run.iteration == total
                              or run.iteration % params.val_every == 0)
            validating = context.is_main and validation_due
            saving = end_of_phase1 or (run.iteration % params.checkpoint_every == 0
                                       and run.iteration < total)
            # The same iterations on every rank: under torchrun the check is a collective.
            checked = validation_due or saving or run.iteration == until
            if checked:
                # waits for the device: the chunk's steps are done
                raise_if_nonfinite(run, context)
                fit_threads()  # a run started beside this one since: make room
                run.seconds += time.perf_counter() - chunk_started
            if validating:
                scores = validate(run, pairs, phase, params, device, running)
                if phase == "psnr":
                    keep_if_best(run, scores)
                    note_first_quarter(run, params)
            if saving:
                save()
            if checked:
                chunk_started = time.perf_counter()
            last = run.log[-1] if run.log else {}
            bar.update(task, completed=run.iteration, status=f"{phase} " + " ".join(
                f"{k.removeprefix('loss_')}={v:.4g}" for k, v in last.items()
                if k.startswith(("loss", "psnr")) and isinstance(v, float)))


def keep_if_best(run: SRTraining, scores: dict) -> None:
    """Phase 1 is model selection on validation PSNR, as the classifier's best epoch is:
    the EMA weights of the best validation so far are the PSNR-oriented generator."""
    if not run.phase1 or scores["psnr"] > run.phase1["scores"]["psnr"]:
        run.phase1 = {"scores": scores, "state": _cpu_state(run.ema.model),
                      "iteration": run.iteration}


def note_first_quarter(run: SRTraining, params: SRParams) -> None:
    """At the first validation past a quarter of phase 1, note which iteration is best so
    far; still the untrained (bicubic) one means phase 1 is not learning: say so now, not
    after the whole run."""
    if run.best_at_quarter is not None or run.iteration < params.iters_psnr / 4:
        return
    run.best_at_quarter = run.phase1["iteration"]
    if run.best_at_quarter == 0:
        warn(f"after {run.iteration} of {params.iters_psnr} phase-1 iterations the best "
             "generator on validation is still the untrained one (= bicubic): SR is not "
             "learning; raise sr.lr_g or sr.batch_size, or train longer (sr.iters_psnr)")


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def choose_generator(candidates: dict[str, dict], choice: str) -> str:
    """Name of the generator that feeds the classifier: `choice`, or for `best` the one
    with the higher validation PSNR (phase 1 wins a tie: it has no GAN artefacts)."""
    if choice != "best":
        if choice not in candidates:
            raise PipelineError(f"sr.generator: {choice} asked for but there is no {choice} "
                                "generator (sr.iters_gan: 0 trains phase 1 only)")
        return choice
    return max(candidates, key=lambda name: (candidates[name]["psnr"], name == "psnr"))


def with_choice(result: dict, choice: str) -> dict:
    """The finished run's result with `choice` (sr.generator) applied: which generator feeds
    the classifier, its weights as ema_state, and its figures as psnr / ssim."""
    metrics = result["metrics"]
    candidates = {"psnr": {"psnr": metrics["psnr_phase1"], "ssim": metrics["ssim_phase1"]}}
    if metrics["psnr_gan"] is not None:
        candidates["gan"] = {"psnr": metrics["psnr_gan"], "ssim": metrics["ssim_gan"]}
    chosen = choose_generator(candidates, choice)
    return result | {"ema_state": result["generators"][chosen],
                     "metrics": metrics | {"generator": chosen} | candidates[chosen]}


def seconds_per_iteration(log: list[dict]) -> dict[str, float | None]:
    """Steady-state step time per phase from the validation rows' running train_seconds.
    The first interval of each phase is left out (cuDNN autotuning, allocator growth, the
    discriminator's first use), unless it is the phase's only one."""
    intervals: dict[str, list[tuple[int, float]]] = {"psnr": [], "gan": []}
    for before, after in zip(log, log[1:]):
        if "train_seconds" in before and "train_seconds" in after:
            intervals[after["phase"]].append((after["iteration"] - before["iteration"],
                                              after["train_seconds"] - before["train_seconds"]))
    rates = {}
    for phase, chunks in intervals.items():
        steady = chunks[1:] or chunks
        iterations = sum(n for n, _ in steady)
        rates[f"seconds_per_iteration_{phase}"] = (
            round(sum(t for _, t in steady) / iterations, 5) if iterations else None)
    return rates


def summarise(run: SRTraining, params: SRParams, context: DistContext,
              digests: list[str]) -> dict:
    """Metrics of a finished run: both generators' validation figures (the chosen one's are
    filled in by with_choice)."""
    final = run.log[-1]
    gan = {k: final[k] for k in ("psnr", "ssim")} if params.iters_gan > 0 else {}
    return {
        "generator": None, "psnr": None, "ssim": None,
        "psnr_bicubic": final["psnr_bicubic"], "ssim_bicubic": final["ssim_bicubic"],
        "psnr_phase1": run.phase1["scores"]["psnr"], "ssim_phase1": run.phase1["scores"]["ssim"],
        "phase1_best_iteration": run.phase1["iteration"],
        "phase1_untrained_at_quarter": run.best_at_quarter == 0,
        "psnr_gan": gan.get("psnr"), "ssim_gan": gan.get("ssim"),
        "metric_border_px": params.scale,
        "gan_phase_weights": run.weights,
        "train_seconds": round(run.seconds, 2), "iterations": run.iteration,
        **seconds_per_iteration(run.log),
        "generator_params_millions": round(
            sum(p.numel() for p in run.generator.parameters()) / 1e6, 4),
        "perceptual_loss": "vgg19:" + Path(params.vgg_weights).name if run.perceptual
        else "off",
        "discriminator": params.discriminator,
        "world_size": context.world_size, "replica_weight_digests": digests,
    }


def train_sr(pairs: dict[str, np.ndarray], params: SRParams, device: torch.device, seed: int,
             checkpoint_dir: Path, stop_after: int | None = None,
             context: DistContext = SINGLE_PROCESS) -> dict:
    """Train (or resume) and return {generators, ema_state, metrics, log}; `stop_after` is
    for tests. A finished run leaves a compact record, so a change of sr.generator alone
    exports again without training.

    Under torchrun each rank draws sr.batch_size / world_size pairs per step (the global
    batch stays sr.batch_size); DDP averages gradients; rank 0 validates and checkpoints.
    """
    config = training_config(params, seed, pairs)
    checkpoint_path = checkpoint_file(checkpoint_dir, "sr", config)
    remove_stale_temporaries(checkpoint_dir)
    state = load_checkpoint(checkpoint_path, config)
    if state is not None and state.get("finished"):
        console.print(f"SR training already finished for these params ({checkpoint_path})")
        chosen = with_choice(state["result"], params.generator)
        return score_held_out(chosen, pairs, params, device) | {"checkpoint": checkpoint_path}
    seed_everything(seed, deterministic=device.type == "cpu")
    if device.type == "cuda":
        # Fixed patch sizes: let cuDNN pick the fastest kernels (not bit-reproducible on GPU).
        torch.backends.cudnn.benchmark = True
    if params.batch_size % context.world_size:
        raise PipelineError(f"sr.batch_size {params.batch_size} does not divide over "
                            f"{context.world_size} processes")
    run = build_training(params, device, context)
    if state is not None:
        restore(run, state)
        console.print(f"resuming SR training from {checkpoint_path} at iteration "
                      f"{run.iteration}")

    def save() -> None:
        if context.is_main:
            save_torch_atomic(checkpoint_path, checkpoint_state(run, config))

    total = params.iters_psnr + params.iters_gan
    train_steps(run, pairs, params, device, seed, context, save,
                until=total if stop_after is None else min(stop_after, total))
    unfinished = {"generators": None, "ema_state": None, "metrics": None, "log": run.log,
                  "iteration": run.iteration, "checkpoint": checkpoint_path}
    if run.iteration < total:  # stopped early on purpose (tests): leave it for resume
        save()
        barrier(context)
        return unfinished
    digests = replica_digests(run.generator, context)  # collective: every rank takes part
    if not context.is_main:
        return unfinished
    generators = {"psnr": run.phase1["state"]}
    if params.iters_gan > 0:
        generators["gan"] = _cpu_state(run.ema.model)
    result = {"generators": generators, "metrics": summarise(run, params, context, digests),
              "log": run.log, "iteration": run.iteration}
    # The finished record replaces the training checkpoint: weights of the exported
    # generators only (no optimiser or discriminator state), enough to re-export.
    save_torch_atomic(checkpoint_path, {"config": config, "finished": True, "result": result})
    chosen = with_choice(result, params.generator)
    return score_held_out(chosen, pairs, params, device) | {"checkpoint": checkpoint_path}


def score_held_out(result: dict, pairs: dict[str, np.ndarray], params: SRParams,
                   device: torch.device) -> dict:
    """The chosen generator and bicubic scored on the test pairs, which chose nothing (the
    checkpoint and the generator were chosen on validation), and SR's gain over bicubic
    there: sr_gain_db, and sr_better_than_bicubic against sr.min_gain_db. Without test
    pairs the gain is taken on validation, and the metrics say so."""
    from pipeline.sr.inference import generator_from_state

    metrics = result["metrics"]
    held_out = {"sr_gain_db_val": round(metrics["psnr"] - metrics["psnr_bicubic"], 4)}
    if "test_lr" in pairs:
        model = generator_from_state(result["ema_state"],
                                     {k: getattr(params, k) for k in MODEL_KEYS}).to(device)
        scores = evaluate_sr(model, pairs["test_lr"], pairs["test_hr"], params.scale, device,
                             params.batch_size, params.precision)
        held_out |= {f"{key}_test": value for key, value in scores.items()}
        held_out |= {"sr_gain_db": round(scores["psnr"] - scores["psnr_bicubic"], 4),
                     "sr_gain_pairs": "test"}
    else:
        held_out |= {"sr_gain_db": held_out["sr_gain_db_val"], "sr_gain_pairs": "val"}
    held_out["sr_better_than_bicubic"] = held_out["sr_gain_db"] >= params.min_gain_db
    return result | {"metrics": metrics | held_out}


def export_generators(result: dict, params: SRParams, model_dir: Path) -> None:
    """generator_<name>.pt for each trained generator and generator.pt for the chosen one."""
    model_config = {k: getattr(params, k) for k in MODEL_KEYS}
    for name, state in result["generators"].items():
        scores = {"psnr": result["metrics"][f"psnr_{'phase1' if name == 'psnr' else name}"]}
        save_torch_atomic(model_dir / f"generator_{name}.pt",
                          {"model": state, "config": model_config, "name": name,
                           "validation": scores})
    chosen = result["metrics"]["generator"]
    save_torch_atomic(model_dir / "generator.pt",
                      {"model": result["generators"][chosen], "config": model_config,
                       "name": chosen, "validation": {"psnr": result["metrics"]["psnr"],
                                                      "ssim": result["metrics"]["ssim"]}})


def report_generator(metrics: dict, min_gain_db: float) -> None:
    """Console summary, and a warning when the chosen generator does no better than bicubic."""
    console.print(f"SR (validation, border {metrics['metric_border_px']} px): "
                  f"phase-1 {metrics['psnr_phase1']:.2f} dB"
                  + (f", GAN {metrics['psnr_gan']:.2f} dB" if metrics["psnr_gan"] else "")
                  + f", bicubic {metrics['psnr_bicubic']:.2f} dB; exported "
                  f"'{metrics['generator']}' (PSNR {metrics['psnr']:.2f}, "
                  f"SSIM {metrics['ssim']:.4f} vs bicubic {metrics['ssim_bicubic']:.4f})")
    pairs = metrics["sr_gain_pairs"]
    console.print(f"SR gain over bicubic on the {pairs} pairs: {metrics['sr_gain_db']:+.3f} dB"
                  f" (validation {metrics['sr_gain_db_val']:+.3f} dB)", highlight=False)
    if not metrics["sr_better_than_bicubic"]:
        warn(f"SR does no better than bicubic: the exported generator "
             f"('{metrics['generator']}') gains {metrics['sr_gain_db']:+.3f} dB over bicubic on "
             f"the {pairs} pairs, under sr.min_gain_db ({min_gain_db} dB). The classifier's sr "
             "input is then bicubic in effect, and the tables label it 'sr (no gain over "
             "bicubic)'. Train longer (sr.iters_psnr), raise sr.lr_g, or use a larger "
             "generator; the README's 'When SR does not beat bicubic' has more")
