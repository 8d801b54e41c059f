"""The study's optional preprocessing: each filter does what it says, off means untouched."""

import dataclasses

import torch

from pipeline.classify.preprocess import describe, preprocess_images


def test_off_by_default_and_identity(params):
    images = torch.rand(2, 1, 16, 16)
    assert describe(params.preprocess) == "none"
    assert preprocess_images(images, params.preprocess) is images


def test_each_filter_smooths_and_equalize_spreads_the_histogram(params):
    torch.manual_seed(0)
    images = torch.rand(3, 1, 32, 32)
    for name in ("gaussian", "median", "mean"):
        settings = dataclasses.replace(params.preprocess, filter=name, kernel=5)
        out = preprocess_images(images, settings)
        assert out.shape == images.shape
        assert out.std() < 0.7 * images.std(), name  # noise is smoothed
    dim = 0.2 + 0.1 * torch.rand(1, 1, 32, 32)  # a dim, low-contrast crop
    equalised = preprocess_images(dim, dataclasses.replace(params.preprocess, equalize=True))
    assert equalised.max() - equalised.min() > 0.8
    settings = dataclasses.replace(params.preprocess, filter="gaussian", equalize=True)
    assert describe(settings) == "gaussian(k=3, sigma=1.0)+equalize"
