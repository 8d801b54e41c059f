"""Inference shared by evaluate, crossval and predict: load a trained classifier, score crops.

A crop's decision is taken from its probability in one place (`decide`), so that a chosen
threshold, when there is one, changes every caller at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.classifier import build_classifier
from pipeline.common import PipelineError
from pipeline.config import ClassifierParams
from pipeline.device import autocast_for
from pipeline.metrics import evaluation_report


def decide(prob: np.ndarray | float, threshold: float = 0.5) -> np.ndarray:
    """1 (positive class) where P(positive) >= threshold, else 0."""
    return (np.asarray(prob) >= threshold).astype(int)


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
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    return model.eval()


def score_split(model: nn.Module, images: torch.Tensor, rows: pd.DataFrame,
                device: torch.device, classifier: ClassifierParams,
                seed: int) -> tuple[pd.DataFrame, dict]:
    """Predictions (crop_id, group, label, prob, predicted) and evaluation_report of one split.

    `images[i]` is the crop of `rows.iloc[i]`; the predictions keep that order with a fresh
    0..n-1 index, so that a prediction's index is its image's index.
    """
    prob = predict_proba(model, images, device, classifier.eval_batch_size,
                         classifier.precision, classifier.channels_last)
    predictions = rows[["crop_id", "group", "label"]].reset_index(drop=True).assign(
        prob=prob, predicted=decide(prob))
    return predictions, evaluation_report(predictions, classifier.bootstrap, seed)
