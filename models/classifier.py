"""Classifier factory: torchvision backbones adapted to one fluorescence channel, two classes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from models.backbones import BACKBONES
from models.weights import WeightsError, load_state_dict_file
from pipeline.cli import first_line

# ImageNet statistics averaged over RGB: a grey crop normalised with them matches what the
# summed first-layer kernel expects (the usual in_chans=1 adaptation of RGB weights).
GREY_MEAN, GREY_STD = 0.449, 0.226


class GreyClassifier(nn.Module):
    """Normalise a [0, 1] grey crop, run the adapted backbone, return 2 logits."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(GREY_MEAN).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor(GREY_STD).view(1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def _parent_and_name(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    parent, _, name = path.rpartition(".")
    return (model.get_submodule(parent) if parent else model), name


def _adapt_first_conv(model: nn.Module, name: str) -> None:
    parent, attr = _parent_and_name(model, BACKBONES[name].first_conv)
    conv: nn.Conv2d = parent._modules[attr]
    grey = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                     conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        # Summing over RGB keeps the response of pretrained filters to a grey image.
        grey.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            grey.bias.copy_(conv.bias)
    parent._modules[attr] = grey


def _replace_head(model: nn.Module, name: str, num_classes: int) -> None:
    parent, attr = _parent_and_name(model, BACKBONES[name].head)
    old: nn.Linear = parent._modules[attr]
    parent._modules[attr] = nn.Linear(old.in_features, num_classes)


def build_classifier(name: str, pretrained: str = "none",
                     num_classes: int = 2) -> tuple[GreyClassifier, str]:
    """Build `name` for 1-channel input; return the model and a record of what was loaded.

    pretrained: "none", "imagenet" (torchvision's own download/cache), or a path to a
    torchvision-format state dict of the 3-channel ImageNet model.
    """
    if name not in BACKBONES:
        raise WeightsError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    if pretrained == "none":
        model, loaded = get_model(name, weights=None), "none"
    elif pretrained == "imagenet":
        weights = get_model_weights(name).DEFAULT
        try:
            # Not get_model(weights=...): torchvision's loader unpickles the cached file in
            # full (weights_only=False), and checks its hash only when it downloads it.
            state = weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
        except Exception as exc:  # no network, no cache, or a file that is not weights
            raise WeightsError(
                f"classifier.pretrained=imagenet: could not load {weights} for {name} "
                f"({type(exc).__name__}: {first_line(exc, 160)}). Put the file in "
                f"torch's cache ($TORCH_HOME/hub/checkpoints) or pass its path as "
                "classifier.pretrained") from None
        model = get_model(name, weights=None)
        model.load_state_dict(state, strict=True)
        loaded = f"imagenet:{weights}"
    else:
        path = Path(pretrained)
        state = load_state_dict_file(path)
        model = get_model(name, weights=None)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"{path}: does not fit {name} "
                               f"({first_line(exc)})") from None
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        loaded = f"file:{path.name}:sha256={digest}"
    _adapt_first_conv(model, name)
    _replace_head(model, name, num_classes)
    # torchvision's MobileNetV3/EfficientNet use BatchNorm momentum 0.01, tuned for ImageNet's
    # 600k steps. On a few hundred steps the running statistics then barely leave their
    # initial values and eval-mode predictions collapse; PyTorch's default 0.1 avoids that.
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.momentum is not None:
            module.momentum = max(module.momentum, 0.1)
    return GreyClassifier(model), loaded
