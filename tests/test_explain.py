import numpy as np
import pandas as pd
import pytest
import torch

from models.backbones import BACKBONE_NAMES
from models.classifier import build_classifier
from pipeline.classify.explain import (
    cam_layer,
    grad_cam,
    gradcam_figure,
    pick_examples,
    save_gradcam_grid,
)

NAMES = ("Control", "ALS")
# The last convolutional block of each backbone, by its name inside torchvision's model.
LAST_CONV_BLOCK = {
    "vgg16": "features.29",  # ReLU after conv5_3, before the last max-pool
    "resnet50": "layer4",
    "mobilenet_v3_large": "features.16",
    "mobilenet_v3_small": "features.12",
    "efficientnet_b0": "features.8",
    "regnet_y_400mf": "trunk_output",
}


def predictions_from(labels, probs, cut: float = 0.5) -> pd.DataFrame:
    probs = np.asarray(probs, dtype=float)
    return pd.DataFrame({"crop_id": [f"c{i}" for i in range(len(probs))],
                         "label": labels, "prob": probs,
                         "predicted": (probs >= cut).astype(int)})


def small_model():
    torch.manual_seed(0)
    model, _ = build_classifier("mobilenet_v3_small", "none")
    return model


def test_pick_takes_confident_right_and_wrong_crops_from_both_classes():
    # The most confident right crops are all controls (p near 0): the old pick took only them.
    labels = [0] * 8 + [1] * 4 + [0, 0, 0] + [1, 1]
    probs = ([0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08] + [0.7, 0.9, 0.6, 0.8]
             + [0.55, 0.95, 0.7] + [0.4, 0.1])
    chosen = pick_examples(predictions_from(labels, probs), per_kind=4)
    right, wrong = chosen[chosen["correct"]], chosen[~chosen["correct"]]
    assert sorted(right["label"]) == [0, 0, 1, 1]
    assert set(right["position"]) == {0, 1, 9, 11}  # the most confident of each class
    assert sorted(wrong["label"]) == [0, 0, 1, 1]
    assert set(wrong["position"]) == {13, 14, 15, 16}
    assert list(chosen["correct"]) == [True] * 4 + [False] * 4  # right first, then wrong


def test_pick_fills_from_the_other_class_when_one_is_short():
    labels = [1, 1, 1, 1, 1, 0, 0]
    probs = [0.9, 0.8, 0.7, 0.6, 0.2, 0.1, 0.7]  # one wrong positive, one wrong control
    chosen = pick_examples(predictions_from(labels, probs), per_kind=4)
    right = chosen[chosen["correct"]]
    assert sorted(right["label"]) == [0, 1, 1, 1]  # one control only: positives fill in
    assert sorted(chosen[~chosen["correct"]]["position"]) == [4, 6]
    none_wrong = pick_examples(predictions_from([0, 1], [0.1, 0.9]))
    assert len(none_wrong) == 2 and none_wrong["correct"].all()


def test_pick_measures_confidence_from_the_cut_not_from_half():
    """With the crop cut at 0.42, p 0.43 is barely positive (0.01 off the cut) and p 0.55
    clearly so (0.13); measured from 0.5 the order was the other way round (0.07, 0.05), and
    the figure showed crops at the cut as confident ones."""
    labels = [1, 1, 1, 0, 0, 0]
    probs = [0.43, 0.55, 0.90, 0.30, 0.41, 0.10]
    frame = predictions_from(labels, probs, cut=0.42)
    chosen = pick_examples(frame, per_kind=4, threshold=0.42)
    assert chosen["correct"].all()
    positives = chosen[chosen["label"] == 1]
    assert positives["position"].tolist() == [2, 1]  # 0.90 and 0.55; 0.43 left out
    assert positives["confidence"].tolist() == pytest.approx([0.48, 0.13])
    from_half = pick_examples(frame, per_kind=4, threshold=0.5)
    assert from_half[from_half["label"] == 1]["position"].tolist() == [2, 0]


def test_grad_cam_of_a_real_small_model_is_not_empty_and_has_the_input_size():
    model = small_model()
    images = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    _, layer = cam_layer(model, "mobilenet_v3_small")
    for target in (0, 1, torch.tensor([0, 1, 1])):
        maps = grad_cam(model, layer, images, target)
        assert maps.shape == (3, 64, 64)
        assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
        assert (maps.flatten(1).amax(dim=1) > 0).all(), f"an all-zero map for target {target}"


@pytest.mark.parametrize("name", BACKBONE_NAMES)
def test_cam_layer_is_the_last_convolutional_block(name):
    try:
        with torch.device("meta"):  # names only: no weights needed
            model, _ = build_classifier(name, "none")
    except NotImplementedError:  # regnet computes its widths with real tensors
        model, _ = build_classifier(name, "none")
    layer_name, layer = cam_layer(model, name)
    assert layer_name == LAST_CONV_BLOCK[name]
    assert model.get_submodule(f"backbone.{layer_name}") is layer


def test_figure_hooks_the_layer_its_title_names(monkeypatch):
    model = small_model()
    hooked = []
    register = torch.nn.Module.register_forward_hook

    def spy(module, *args, **kwargs):
        hooked.append(module)
        return register(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "register_forward_hook", spy)
    images = torch.rand(6, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    predictions = predictions_from([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.7, 0.9, 0.8, 0.3])
    fig = gradcam_figure(model, "mobilenet_v3_small", images, predictions, NAMES,
                         torch.device("cpu"))
    names = {module: name for name, module in model.named_modules()}
    assert [names[m] for m in hooked] == ["backbone.features.12"]
    assert fig._suptitle.get_text().startswith("Grad-CAM at mobilenet_v3_small features.12")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    crop_titles = [t for t in titles if t.startswith(("right", "WRONG"))]
    assert len(crop_titles) == 6
    assert sum("true ALS" in t for t in crop_titles) == 3
    assert sum("true Control" in t for t in crop_titles) == 3
    assert "WRONG\ntrue Control\np(ALS) 0.700 (cut 0.500)" in crop_titles
    assert "collapsed" not in fig._suptitle.get_text()


def test_figure_gives_the_cut_and_flags_a_collapsed_model():
    images = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    predictions = predictions_from([0, 0, 1, 1], [0.86, 0.87, 0.875, 0.88], cut=0.87)
    fig = gradcam_figure(small_model(), "mobilenet_v3_small", images, predictions, NAMES,
                         torch.device("cpu"), threshold=0.87, collapsed=True)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert all(title.endswith("(cut 0.870)") for title in titles), titles
    assert "collapsed model: not a finding" in fig._suptitle.get_text()


def test_save_gradcam_grid_writes_a_png(tmp_path):
    images = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    predictions = predictions_from([0, 0, 1, 1], [0.1, 0.6, 0.9, 0.2])
    path = tmp_path / "gradcam.png"
    save_gradcam_grid(small_model(), "mobilenet_v3_small", images, predictions, NAMES, path,
                      torch.device("cpu"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
