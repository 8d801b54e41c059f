"""The backbones the classifier factory builds and where their parts sit, as module paths
inside each torchvision model. Torch-free, so that params validation stays fast; the one
list every part of the project reads (the factory, Grad-CAM, the report)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    first_conv: str  # adapted to one grey channel
    head: str  # the last linear layer, replaced for two classes
    # Grad-CAM's layer: the last convolutional block, whose maps keep the image's layout
    # and class-specific meaning (Selvaraju et al. 2017)
    cam_layer: str
    cam_layer_is: str  # what that layer is, in words, for the report


BACKBONES: dict[str, Backbone] = {
    "vgg16": Backbone("features.0", "classifier.6", "features.29",
                      "the ReLU after conv5_3"),
    "resnet50": Backbone("conv1", "fc", "layer4", "the last residual stage"),
    "mobilenet_v3_large": Backbone("features.0.0", "classifier.3", "features.16",
                                   "the final 1x1 convolution block"),
    "mobilenet_v3_small": Backbone("features.0.0", "classifier.3", "features.12",
                                   "the final 1x1 convolution block"),
    "efficientnet_b0": Backbone("features.0.0", "classifier.1", "features.8",
                                "the final 1x1 convolution block"),
    "regnet_y_400mf": Backbone("stem.0", "fc", "trunk_output",
                               "whose output is the last stage's"),
}
BACKBONE_NAMES = tuple(BACKBONES)
