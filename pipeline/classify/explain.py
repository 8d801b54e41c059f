"""Grad-CAM maps (Selvaraju et al. 2017) for correctly and wrongly classified test crops."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from models.backbones import BACKBONES
from pipeline.data.split import class_names_from
from pipeline.io import atomic_path

if TYPE_CHECKING:  # torch loads only when a map is drawn: report imports class_names_from
    import torch
    from matplotlib.figure import Figure
    from torch import nn


def cam_layer(model: nn.Module, backbone: str) -> tuple[str, nn.Module]:
    """The Grad-CAM layer of `model` (models.backbones names it) and its qualified name
    inside the backbone (`layer4`, `features.29`), the name the figure shows."""
    name = BACKBONES[backbone].cam_layer
    return name, model.get_submodule(f"backbone.{name}")


def grad_cam(model: nn.Module, layer: nn.Module, images: torch.Tensor,
             target_class: int | torch.Tensor = 1) -> torch.Tensor:
    """(N, H, W) maps in [0, 1]: where evidence for `target_class` (one class for all images,
    or one per image) lies in each image."""
    import torch
    import torch.nn.functional as F

    captured: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["activation"] = output

    handle = layer.register_forward_hook(keep)
    try:
        model.eval()
        images = images.clone().requires_grad_(True)
        logits = model(images)
        targets = torch.as_tensor(target_class, device=logits.device).long().expand(len(logits))
        model.zero_grad(set_to_none=True)
        logits.gather(1, targets[:, None]).sum().backward()
    finally:
        handle.remove()
    activation = captured["activation"]
    weights = activation.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return (cam / peak[:, None, None]).detach()


def _most_confident(part: pd.DataFrame, count: int) -> pd.DataFrame:
    """`count` rows, about half of each true class, the most confident of each first; a class
    short of its half leaves its places to the other."""
    if part.empty:
        return part
    by_class = {label: rows.sort_values("confidence", ascending=False, kind="stable")
                for label, rows in part.groupby("label")}
    take = dict.fromkeys(by_class, 0)
    while sum(take.values()) < min(count, len(part)):
        # the class with the fewest picks that still has crops left gets the next place
        label = min((lbl for lbl in by_class if take[lbl] < len(by_class[lbl])),
                    key=lambda lbl: (take[lbl], -lbl))
        take[label] += 1
    return pd.concat([by_class[lbl].head(take[lbl]) for lbl in sorted(by_class, reverse=True)])


def pick_examples(predictions: pd.DataFrame, per_kind: int = 4,
                  threshold: float = 0.5) -> pd.DataFrame:
    """Most confident correct and wrong crops, half of each from either class where there
    are enough (the most confident overall are often all one class). Confidence is the
    distance from the threshold the `predicted` column was decided at. `position` is the
    row of `predictions`, which is the row of the images it describes."""
    predictions = predictions.assign(
        position=np.arange(len(predictions)),
        correct=predictions["predicted"] == predictions["label"],
        confidence=(predictions["prob"] - threshold).abs())
    chosen = [_most_confident(predictions[predictions["correct"] == correct], per_kind)
              for correct in (True, False)]
    return pd.concat(chosen)


def gradcam_figure(model: nn.Module, backbone: str, images: torch.Tensor,
                   predictions: pd.DataFrame, class_names: tuple[str, str],
                   device: torch.device, threshold: float = 0.5,
                   collapsed: bool = False) -> Figure | None:
    """Crops above, Grad-CAM of the predicted class below; None when there is nothing to show.
    Each title gives p beside the cut it was decided at; a `collapsed` model's figure says
    that it is no finding (scoring.reliability)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    examples = pick_examples(predictions, threshold=threshold)
    if examples.empty:
        return None
    model = model.float()
    layer_name, layer = cam_layer(model, backbone)
    batch = images[torch.tensor(examples["position"].tolist())].to(device).float()
    predicted = torch.tensor(examples["predicted"].tolist(), device=device)
    maps = grad_cam(model, layer, batch, predicted).cpu().numpy()
    fig, axes = plt.subplots(2, len(examples), figsize=(1.6 * len(examples), 3.9),
                             squeeze=False)
    for column, (row, cam) in enumerate(zip(examples.itertuples(), maps)):
        image = images[row.position, 0].float().numpy()
        axes[0][column].imshow(image, cmap="gray", vmin=0, vmax=max(float(image.max()), 1e-6))
        axes[1][column].imshow(image, cmap="gray")
        axes[1][column].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        verdict = "right" if row.correct else "WRONG"
        # "Confident" is far from the cut, not from 0.5: both go in the title, to 3 decimals
        # (a collapsed model's crops differ from its cut in the third)
        axes[0][column].set_title(f"{verdict}\ntrue {class_names[row.label]}\n"
                                  f"p({class_names[1]}) {row.prob:.3f} (cut {threshold:.3f})",
                                  fontsize=7)
        axes[1][column].set_xlabel(f"for {class_names[row.predicted]}", fontsize=7)
        for ax in (axes[0][column], axes[1][column]):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1][0].set_ylabel("Grad-CAM of\npredicted class", fontsize=7)
    title = (f"Grad-CAM at {backbone} {layer_name}: test crops furthest from the cut, "
             "right and wrong, both classes")
    # In the title, which tight_layout makes room for, so the caveat covers no panel.
    fig.suptitle(title + ("\ncollapsed model: not a finding" if collapsed else ""), fontsize=9,
                 color="#b00000" if collapsed else "black")
    fig.tight_layout()
    return fig


def save_gradcam_grid(model: nn.Module, backbone: str, images: torch.Tensor,
                      predictions: pd.DataFrame, class_names: tuple[str, str],
                      path: Path, device: torch.device, threshold: float = 0.5,
                      collapsed: bool = False) -> None:
    """Write gradcam_figure as a PNG; nothing when there are no predictions."""
    fig = gradcam_figure(model, backbone, images, predictions, class_names, device, threshold,
                         collapsed)
    if fig is None:
        return
    import matplotlib.pyplot as plt  # after gradcam_figure chose the Agg backend

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


__all__ = ["class_names_from", "save_gradcam_grid"]
