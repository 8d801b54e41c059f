"""Grad-CAM maps (Selvaraju et al. 2017) for correctly and wrongly classified test crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

# The last convolutional block of each backbone: its maps keep spatial layout and
# class-specific meaning, the usual Grad-CAM target.
CAM_LAYERS = {
    "vgg16": lambda m: m.backbone.features[29],
    "resnet50": lambda m: m.backbone.layer4,
    "mobilenet_v3_large": lambda m: m.backbone.features[-1],
    "mobilenet_v3_small": lambda m: m.backbone.features[-1],
    "efficientnet_b0": lambda m: m.backbone.features[-1],
    "regnet_y_400mf": lambda m: m.backbone.trunk_output,
}


def grad_cam(model: nn.Module, layer: nn.Module, images: torch.Tensor,
             target_class: int = 1) -> torch.Tensor:
    """(N, H, W) maps in [0, 1]: where evidence for `target_class` lies in each image."""
    captured: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured["activation"] = output

    handle = layer.register_forward_hook(keep)
    try:
        model.eval()
        images = images.clone().requires_grad_(True)
        logits = model(images)
        model.zero_grad(set_to_none=True)
        logits[:, target_class].sum().backward()
    finally:
        handle.remove()
    activation = captured["activation"]
    weights = activation.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-12)
    return (cam / peak[:, None, None]).detach()


def pick_examples(predictions: pd.DataFrame, per_kind: int = 4) -> pd.DataFrame:
    """Most confident correct and wrong crops (so the picture shows clear cases)."""
    predictions = predictions.assign(
        correct=predictions["predicted"] == predictions["label"],
        confidence=(predictions["prob"] - 0.5).abs())
    chosen = []
    for correct in (True, False):
        part = predictions[predictions["correct"] == correct]
        chosen.append(part.sort_values("confidence", ascending=False).head(per_kind))
    return pd.concat(chosen)


def save_gradcam_grid(model: nn.Module, backbone: str, images: torch.Tensor,
                      predictions: pd.DataFrame, class_names: tuple[str, str],
                      path: Path, device: torch.device) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.common import atomic_path

    examples = pick_examples(predictions)
    if examples.empty:
        return
    index = torch.as_tensor(np.array(examples.index))
    batch = images[index].to(device)
    maps = grad_cam(model.float(), CAM_LAYERS[backbone](model), batch).cpu().numpy()
    fig, axes = plt.subplots(2, len(examples), figsize=(1.6 * len(examples), 3.6),
                             squeeze=False)
    for column, (row, cam) in enumerate(zip(examples.itertuples(), maps)):
        image = images[row.Index, 0].numpy()
        axes[0][column].imshow(image, cmap="gray", vmin=0, vmax=max(float(image.max()), 1e-6))
        axes[1][column].imshow(image, cmap="gray")
        axes[1][column].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
        verdict = "right" if row.correct else "WRONG"
        axes[0][column].set_title(f"{verdict}\ntrue {class_names[row.label]}\n"
                                  f"p={row.prob:.2f}", fontsize=7)
        for ax in (axes[0][column], axes[1][column]):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[1][0].set_ylabel(f"Grad-CAM\n({class_names[1]})", fontsize=7)
    fig.suptitle(f"{backbone}: test crops, evidence for {class_names[1]}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def class_names_from(split_frame: pd.DataFrame) -> tuple[str, str]:
    names = split_frame.groupby("label")["class_name"].first()
    return str(names.get(0, "negative")), str(names.get(1, "positive"))
