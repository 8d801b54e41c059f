"""Inference shared by evaluate, crossval and predict: load a trained classifier, score crops,
choose the operating thresholds on the validation split.

A crop's decision is taken from its probability in one place (`metrics.decide`), so that
a chosen threshold changes every caller at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.classifier import build_classifier
from pipeline.cli import PipelineError, first_line
from pipeline.config import ClassifierParams
from pipeline.runtime.device import autocast_for
from pipeline.stats import (
    LEVELS,
    aggregate_samples,
    choose_threshold,
    decide,
    evaluation_report,
    sample_level,
)

__all__ = ["decide", "load_trained", "predict_proba", "sample_predictions", "score_split",
           "validation_thresholds"]


def sample_predictions(crops: pd.DataFrame, class_names: tuple[str, str] | list[str],
                       threshold: float, backbone: str) -> pd.DataFrame:
    """One row per sample of `crops` (group, prob): sample, n_crops, prob (the mean of its
    crops' probabilities), prediction (a class name), threshold, backbone. evaluate and
    predict both write this table."""
    samples = aggregate_samples(crops)
    return pd.DataFrame({"sample": samples["group"], "n_crops": samples["n_crops"],
                         "prob": samples["prob"],
                         "prediction": np.asarray(class_names)[decide(samples["prob"],
                                                                      threshold)],
                         "threshold": float(threshold), "backbone": backbone})


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
                          classifier: ClassifierParams) -> dict:
    """{rule, crop, sample}: classifier.threshold applied to the validation split's crop
    probabilities and to its samples' mean probabilities. A fixed number needs no scores
    (`images` may then be None). The test split is never looked at here."""
    rule = classifier.threshold
    if rule != "youden":
        return {"rule": str(rule), "crop": float(rule), "sample": float(rule)}
    prob = predict_proba(model, images, device, classifier.eval_batch_size,
                         classifier.precision, classifier.channels_last)
    if not np.all(np.isfinite(prob)):
        raise PipelineError("the model gives non-finite probabilities (NaN) on the validation "
                            "split; retrain it (check the training loss curve)")
    crops = rows[["group", "label"]].reset_index(drop=True).assign(prob=prob)
    samples = sample_level(crops)
    return {"rule": rule,
            "crop": choose_threshold(rule, crops["label"].to_numpy(), prob),
            "sample": choose_threshold(rule, samples["label"].to_numpy(),
                                       samples["prob"].to_numpy())}


def score_split(model: nn.Module, images: torch.Tensor, rows: pd.DataFrame,
                device: torch.device, classifier: ClassifierParams, seed: int,
                thresholds: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Predictions (crop_id, group, label, prob, predicted) and evaluation_report of one split,
    decided at `thresholds` ({crop, sample}; 0.5 where absent).

    `images[i]` is the crop of `rows.iloc[i]`; the predictions keep that order with a fresh
    0..n-1 index, so that a prediction's index is its image's index.
    """
    thresholds = {level: float((thresholds or {}).get(level, 0.5)) for level in LEVELS}
    prob = predict_proba(model, images, device, classifier.eval_batch_size,
                         classifier.precision, classifier.channels_last)
    predictions = rows[["crop_id", "group", "label"]].reset_index(drop=True).assign(
        prob=prob, predicted=decide(prob, thresholds["crop"]))
    return predictions, evaluation_report(predictions, classifier.bootstrap, seed, thresholds)
