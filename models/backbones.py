"""Backbone names the classifier factory builds; torch-free, so params validation stays fast."""

BACKBONE_NAMES = ("vgg16", "resnet50", "mobilenet_v3_large", "mobilenet_v3_small",
                  "efficientnet_b0", "regnet_y_400mf")
