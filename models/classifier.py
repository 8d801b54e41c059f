"""Classifier factory: torchvision backbones adapted to one fluorescence channel, two classes."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from models.backbones import BACKBONE_NAMES
from models.weights import WeightsError, load_state_dict_file

# ImageNet statistics averaged over RGB: a grey crop normalised with them matches what the
# summed first-layer kernel expects (the usual in_chans=1 adaptation of RGB weights).
GREY_MEAN, GREY_STD = 0.449, 0.226


def _first_conv_vgg(m):
    return m.features, "0"


def _first_conv_resnet(m):
    return m, "conv1"


def _first_conv_features00(m):
    return m.features[0], "0"


def _first_conv_regnet(m):
    return m.stem, "0"


def _head_vgg(m):
    return m.classifier, "6"


def _head_fc(m):
    return m, "fc"


def _head_mobilenet(m):
    return m.classifier, "3"


def _head_efficientnet(m):
    return m.classifier, "1"


# name -> (where the first conv lives, where the classification head lives)
BACKBONES: dict[str, tuple[Callable, Callable]] = {
    "vgg16": (_first_conv_vgg, _head_vgg),
    "resnet50": (_first_conv_resnet, _head_fc),
    "mobilenet_v3_large": (_first_conv_features00, _head_mobilenet),
    "mobilenet_v3_small": (_first_conv_features00, _head_mobilenet),
    "efficientnet_b0": (_first_conv_features00, _head_efficientnet),
    "regnet_y_400mf": (_first_conv_regnet, _head_fc),
}
assert tuple(BACKBONES) == BACKBONE_NAMES, "models/backbones.py lists the same names"


class GreyClassifier(nn.Module):
    """Normalise a [0, 1] grey crop, run the adapted backbone, return 2 logits."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(GREY_MEAN).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor(GREY_STD).view(1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def _adapt_first_conv(model: nn.Module, name: str) -> None:
    parent, attr = BACKBONES[name][0](model)
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
    parent, attr = BACKBONES[name][1](model)
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
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}). Put the file in "
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
                               f"({str(exc).splitlines()[0][:200]})") from None
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
