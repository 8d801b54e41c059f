"""Inference shared by evaluate, crossval and predict: load a trained classifier, score crops,
choose the operating thresholds on the validation split, time inference.

A crop's decision is taken from its probability in one place (`stats.decide`), so that
a chosen threshold changes every caller at once.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.classifier import build_classifier
from pipeline.classify.scoring import fixed_thresholds, group_predictions, thresholds_from_scores
from pipeline.cli import PipelineError, first_line
from pipeline.config import ClassifierParams
from pipeline.runtime.device import autocast_for
from pipeline.stats import LEVELS, decide, evaluation_report

__all__ = ["decide", "group_predictions", "load_trained", "predict_proba", "score_split",
           "validation_thresholds"]


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, device: torch.device, batch: int,
                  precision: str, channels_last: bool) -> np.ndarray:
    """P(positive) per image."""
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    # One tensor written batch by batch: a list of each batch's small tensors kept the heap
    # around them growing with the split (see training.train_one_epoch).
    out = torch.empty(len(images))
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch].to(device, non_blocking=True)
        with autocast_for(device, precision):
            logits = model(chunk.contiguous(memory_format=memory_format))
        out[start:start + len(chunk)] = torch.softmax(logits.float(), 1)[:, 1].cpu()
    return out.numpy() if len(images) else np.zeros(0)


def load_trained(path: Path, backbone: str) -> nn.Module:
    """The model train_classifier saved at `path`, on the CPU, in eval mode."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model, _ = build_classifier(backbone, "none")
        model.load_state_dict(saved["model"])
    except Exception as exc:
        raise PipelineError(f"{path}: not a trained {backbone} from train_classifier "
                            f"({type(exc).__name__}: {first_line(exc, 160)})") from None
    return model.eval()


def validation_thresholds(model: nn.Module, images: torch.Tensor | None,
                          rows: pd.DataFrame | None, device: torch.device,
                          classifier: ClassifierParams, seed: int) -> dict:
    """{rule, crop, group, crop_range, group_range}: classifier.threshold applied to the
    validation split's crop probabilities and to its groups' mean probabilities (youden:
    the median cut over resamples of the validation groups, with its 5-95% range). A fixed
    number needs no scores (`images` may then be None). The test split is never looked at."""
    rule = classifier.threshold
    if rule != "youden":
        return fixed_thresholds(rule)
    prob = predict_proba(model, images, device, classifier.eval_batch_size,
                         classifier.precision, classifier.channels_last)
    if not np.all(np.isfinite(prob)):
        raise PipelineError("the model gives non-finite probabilities (NaN) on the validation "
                            "split; retrain it (check the training loss curve)")
    crops = rows[["group", "label"]].reset_index(drop=True).assign(prob=prob)
    return thresholds_from_scores(rule, crops, classifier.bootstrap, seed)


def score_split(model: nn.Module, images: torch.Tensor, rows: pd.DataFrame,
                device: torch.device, classifier: ClassifierParams,
                thresholds: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Predictions (crop_id, group, label, prob, predicted) and evaluation_report of one split,
    decided at `thresholds` ({crop, group}; 0.5 where absent).

    `images[i]` is the crop of `rows.iloc[i]`; the predictions keep that order with a fresh
    0..n-1 index, so that a prediction's index is its image's index.
    """
    thresholds = {level: float((thresholds or {}).get(level, 0.5)) for level in LEVELS}
    prob = predict_proba(model, images, device, classifier.eval_batch_size,
                         classifier.precision, classifier.channels_last)
    predictions = rows[["crop_id", "group", "label"]].reset_index(drop=True).assign(
        prob=prob.astype(np.float64), predicted=decide(prob, thresholds["crop"]))
    return predictions, evaluation_report(predictions, thresholds)


@torch.no_grad()
def inference_speed(model: torch.nn.Module, images: torch.Tensor, device: torch.device,
                    batch: int, precision: str, channels_last: bool,
                    single_runs: int = 20) -> dict[str, float]:
    """ms per image at batch 1 (median) and images/s batched, after a warm-up."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    predict_proba(model, images[:2], device, 1, precision, channels_last)  # warm-up
    single = []
    for index in range(min(single_runs, len(images))):
        sync()
        start = time.perf_counter()
        predict_proba(model, images[index:index + 1], device, 1, precision, channels_last)
        sync()
        single.append(time.perf_counter() - start)
    sync()
    start = time.perf_counter()
    predict_proba(model, images, device, batch, precision, channels_last)
    sync()
    batched = time.perf_counter() - start
    return {"infer_ms_per_image": round(1000 * float(np.median(single)), 3),
            "infer_images_per_s": round(len(images) / batched, 2)}
