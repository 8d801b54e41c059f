"""Classifying crops: the classifier's images, augmentation, training, inference and
thresholds, evaluation, Grad-CAM, portable bundles and prediction on new patients."""
