import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchvision.models import get_model

from models.classifier import BACKBONES, build_classifier
from models.weights import WeightsError
from pipeline.classify.training import train_classifier
from pipeline.cli import PipelineError
from pipeline.stats import (
    binary_metrics,
    clustered_auc_variance,
    crop_auc_interval,
    evaluation_report,
    expected_calibration_error,
    group_level,
)


class TouchOnUnpickle:
    """A pickle payload that would create a file if anything unpickled it."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_for_one_channel(name):
    model, loaded = build_classifier(name, "none")
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, 32, 32))
    assert logits.shape == (2, 2) and loaded == "none"


def test_weights_file_written_by_the_test_is_loaded_and_adapted(tmp_path):
    torch.manual_seed(0)
    reference = get_model("mobilenet_v3_small", weights=None)
    path = tmp_path / "imagenet_like.pth"
    torch.save(reference.state_dict(), path)
    model, loaded = build_classifier("mobilenet_v3_small", str(path))
    assert loaded.startswith("file:imagenet_like.pth:sha256=")
    first = model.backbone.features[0][0].weight
    expected = reference.features[0][0].weight.sum(dim=1, keepdim=True)
    torch.testing.assert_close(first, expected)
    # deeper layers are the file's weights untouched
    torch.testing.assert_close(model.backbone.features[1].block[0][0].weight,
                               reference.features[1].block[0][0].weight)


def test_grey_adaptation_matches_rgb_model_on_grey_input(tmp_path):
    """Summing RGB kernels: a grey crop gives the RGB model's features for the replicated image."""
    torch.manual_seed(0)
    reference = get_model("resnet50", weights=None).eval()
    path = tmp_path / "r50.pth"
    torch.save(reference.state_dict(), path)
    model, _ = build_classifier("resnet50", str(path))
    model.eval()
    grey = torch.rand(1, 1, 64, 64)
    normalised = (grey - 0.449) / 0.226
    with torch.no_grad():
        ours = model.backbone.conv1(normalised)
        theirs = reference.conv1(normalised.expand(-1, 3, -1, -1))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_bad_weights_files_are_refused(tmp_path):
    missing = tmp_path / "none.pth"
    with pytest.raises(WeightsError, match="not found"):
        build_classifier("mobilenet_v3_small", str(missing))
    not_state = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_state)
    with pytest.raises(WeightsError, match="not a state dict"):
        build_classifier("mobilenet_v3_small", str(not_state))
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "code_ran"
    evil.write_bytes(pickle.dumps({"w": TouchOnUnpickle(marker)}))
    with pytest.raises(WeightsError, match="weights_only"):
        build_classifier("mobilenet_v3_small", str(evil))
    assert not marker.exists()  # the payload never executed
    wrong = tmp_path / "wrong.pth"
    torch.save(get_model("resnet50", weights=None).state_dict(), wrong)
    with pytest.raises(WeightsError, match="does not fit mobilenet_v3_small"):
        build_classifier("mobilenet_v3_small", str(wrong))


def test_imagenet_without_network_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    import torch.hub

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match="could not load .*TORCH_HOME"):
        build_classifier("mobilenet_v3_small", "imagenet")


class _Payload:
    """Runs a shell command when unpickled in full."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_imagenet_weights_are_read_from_the_cache_without_unpickling(monkeypatch, tmp_path):
    """classifier.pretrained=imagenet with torchvision's file already in torch's cache (the
    test writes it), loaded weights-only: a cached file carrying a pickle payload is a
    clear error and its payload never runs."""
    from urllib.parse import urlparse

    from torchvision.models import get_model_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = get_model_weights("mobilenet_v3_small").DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / Path(urlparse(weights.url).path).name
    cached.parent.mkdir(parents=True)
    torch.manual_seed(1)
    reference = get_model("mobilenet_v3_small", weights=None)
    torch.save(reference.state_dict(), cached)
    model, loaded = build_classifier("mobilenet_v3_small", "imagenet")
    assert loaded == f"imagenet:{weights}"
    torch.testing.assert_close(model.backbone.features[1].block[0][0].weight,
                               reference.features[1].block[0][0].weight)
    torch.save({"features.0.0.weight": _Payload(tmp_path / "pwned")}, cached)
    with pytest.raises(WeightsError, match="could not load"):
        build_classifier("mobilenet_v3_small", "imagenet")
    assert not (tmp_path / "pwned").exists()


def test_unknown_backbone():
    with pytest.raises(WeightsError, match="unknown backbone 'alexnet'"):
        build_classifier("alexnet")


# ------------------------------------------------------------------ metrics
def test_binary_metrics_against_hand_computed_values():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    prob = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1, 0.4, 0.45, 0.05])
    m = binary_metrics(labels, prob)
    # threshold 0.5: TP=3 (0.9, 0.8, 0.6), FN=1 (0.3), FP=1 (0.7), TN=5
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 5)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 5 / 6) / 2)
    assert m["precision"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    # AUC by pair counting: 0.3 loses to 0.7, 0.4 and 0.45; 0.6 loses to 0.7: 20 of 24 pairs
    wins = sum(p > n for p in prob[labels == 1] for n in prob[labels == 0])
    assert wins == 20
    assert m["auc"] == pytest.approx(20 / 24)
    # AUC and accuracy are different numbers (the study conflated them)
    assert m["auc"] != m["accuracy"]


def test_ece_hand_computed():
    labels = np.array([1, 0, 1, 0])
    prob = np.array([0.9, 0.9, 0.6, 0.4])
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right)
    # bin (0.85, 0.9]: acc 0.5 vs conf 0.9 -> 0.4 * 2/4; bin (0.55, 0.6]: acc 1 vs 0.6 -> 0.4 * 2/4
    assert expected_calibration_error(labels, prob) == pytest.approx(0.4)


def test_group_level_is_mean_of_crop_probabilities():
    predictions = pd.DataFrame({"group": ["A", "A", "B", "B", "B", "C"],
                                "label": [1, 1, 0, 0, 0, 1],
                                "prob": [0.2, 0.8, 0.1, 0.4, 0.7, 0.9]})
    groups = group_level(predictions).set_index("group")
    assert groups.loc["A", "prob"] == pytest.approx(0.5)
    assert groups.loc["B", "prob"] == pytest.approx(0.4)
    assert groups.loc["C", "prob"] == pytest.approx(0.9)
    report = evaluation_report(predictions)
    assert report["group"]["n"] == 3 and report["crop"]["n"] == 6
    assert report["group"]["auc"] == pytest.approx(1.0)  # 0.5, 0.9 > 0.4
    with pytest.raises(ValueError, match="different labels"):
        group_level(predictions.assign(label=[1, 0, 0, 0, 0, 1]))


def test_crop_interval_brackets_the_auc_and_widens_with_clustering():
    rng = np.random.default_rng(0)
    rows = []
    for g in range(30):
        label, offset = g % 2, rng.normal(0, 0.15)
        for _ in range(5):
            rows.append({"group": f"G{g}", "label": label, "prob": float(np.clip(
                0.35 + 0.3 * label + offset + rng.normal(0, 0.1), 0, 1))})
    clustered = pd.DataFrame(rows)
    auc = roc_auc_score(clustered["label"], clustered["prob"])
    interval = crop_auc_interval(clustered)
    assert interval.low < auc < interval.high and interval.high - interval.low < 0.5
    independent = clustered.assign(group=[f"crop{i}" for i in range(len(clustered))])
    narrow = crop_auc_interval(independent)
    assert narrow.high - narrow.low < interval.high - interval.low  # groups, not crops


def test_clustered_variance_is_delongs_with_one_crop_per_group():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(15), np.zeros(12)].astype(int)
    scores = labels * 1.2 + rng.normal(0, 1, len(labels))
    frame = pd.DataFrame({"group": [f"g{i}" for i in range(len(labels))], "label": labels,
                          "prob": scores})
    auc, variance, _, _ = clustered_auc_variance(frame)
    pos, neg = scores[labels == 1], scores[labels == 0]
    v10 = np.array([(p > neg).mean() + 0.5 * (p == neg).mean() for p in pos])
    v01 = np.array([(n < pos).mean() + 0.5 * (n == pos).mean() for n in neg])
    assert auc == pytest.approx(roc_auc_score(labels, scores))
    assert variance == pytest.approx(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))


# ------------------------------------------------------------------ training and resume
def _toy_data(n=48, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, size, size, generator=gen) * 0.3
    images[labels == 1, :, 8:24, 8:24] += 0.6  # the positive class has a bright square
    return images.clamp(0, 1), labels.numpy()


@pytest.mark.parametrize("online", [False, True])
def test_training_learns_and_resume_matches_uninterrupted(params, tmp_path, online):
    """Online, Kornia draws from torch's generator each batch: the checkpoint's RNG state
    makes a resumed run draw what the uninterrupted one drew."""
    p = dataclasses.replace(params, epochs=3, lr=0.003, batch_size=8,
                            augment=dataclasses.replace(params.augment, online=online))
    images, labels = _toy_data()
    val_images, val_labels = _toy_data(24, seed=1)
    args = ("mobilenet_v3_small", images, labels, val_images, val_labels, p,
            torch.device("cpu"))
    straight = train_classifier(*args, tmp_path / "a")
    assert straight["metrics"]["epochs"] == 3
    assert straight["curves"][-1]["train_loss"] < straight["curves"][0]["train_loss"]
    stopped = train_classifier(*args, tmp_path / "b", stop_after_epoch=1)
    assert stopped["best_state"] is None and stopped["checkpoint"].exists()
    resumed = train_classifier(*args, tmp_path / "b")
    assert [r["epoch"] for r in resumed["curves"]] == [1, 2, 3]
    for key, value in straight["best_state"].items():
        torch.testing.assert_close(resumed["best_state"][key], value, msg=key)
    # Everything but the clock (and which epochs were a process's first) is identical.
    def figures(curves):
        return [{k: v for k, v in row.items()
                 if k not in ("data_seconds", "compute_seconds", "warmup")} for row in curves]

    assert figures(resumed["curves"]) == figures(straight["curves"])
    assert [row["warmup"] for row in straight["curves"]] == [True, False, False]
    assert [row["warmup"] for row in resumed["curves"]] == [True, True, False]


def test_classifier_checkpoint_with_other_params_is_refused(params, tmp_path):
    images, labels = _toy_data(16)
    args = ("mobilenet_v3_small", images, labels, images, labels, params, torch.device("cpu"))
    stopped = train_classifier(*args, tmp_path, stop_after_epoch=0)
    state = {"config": {"lr": 1.0}}
    torch.save(state, stopped["checkpoint"])
    with pytest.raises(PipelineError, match="other params"):
        train_classifier(*args, tmp_path)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_grad_cam_maps_for_every_backbone(name):
    from pipeline.classify.explain import cam_layer, grad_cam

    torch.manual_seed(0)
    model, _ = build_classifier(name, "none")
    images = torch.rand(2, 1, 64, 64)
    maps = grad_cam(model, cam_layer(model, name)[1], images)
    assert maps.shape == (2, 64, 64)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    assert torch.isfinite(maps).all()


# ------------------------------------------------------------------ inference and evaluate
def test_decide_is_positive_from_the_threshold_on():
    from pipeline.classify.inference import decide

    assert decide(np.array([0.0, 0.4999, 0.5, 0.9])).tolist() == [0, 0, 1, 1]
    assert decide(0.7, threshold=0.8).tolist() == 0


def test_load_trained_refuses_other_files_in_one_line(tmp_path):
    from pipeline.classify.inference import load_trained

    path = tmp_path / "model.pt"
    torch.save({"model": get_model("resnet50", weights=None).state_dict()}, path)
    with pytest.raises(PipelineError, match="not a trained mobilenet_v3_small") as error:
        load_trained(path, "mobilenet_v3_small")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("input_kind", ["sr", "raw"])
def test_evaluate_writes_groups_and_the_generator(input_kind, tmp_path, monkeypatch):
    import json
    import sys

    from pipeline.config import load_params
    from pipeline.io import save_array_atomic
    from pipeline.stages import evaluate
    from tests.conftest import write_params

    params_file = write_params(tmp_path / "params.yaml", classifier={"input": input_kind})
    params = load_params(params_file)
    folder = tmp_path / ("sr/sr" if input_kind == "sr" else "crops")
    rng = np.random.default_rng(0)
    rows = []
    for index in range(20):  # 5 test groups of 2-3 crops, both classes; 2 val groups
        group, label = f"g{index // 3}", (index // 3) % 2
        save_array_atomic(folder / f"c{index:02d}.npy",
                          rng.integers(0, 65535, (1, 32, 32), dtype=np.uint16))
        rows.append({"crop_id": f"c{index:02d}", "group": group, "label": label,
                     "class_name": ("Control", "ALS")[label],
                     "split": "test" if index < 14 else "val"})
    pd.DataFrame(rows).to_csv(tmp_path / "split.csv", index=False)
    torch.manual_seed(0)
    model, _ = build_classifier("mobilenet_v3_small", "none")
    (tmp_path / "models").mkdir()
    torch.save({"model": model.state_dict(), "backbone": "mobilenet_v3_small",
                "best_epoch": 1}, tmp_path / "models" / "model.pt")
    (tmp_path / "train.json").write_text(json.dumps({
        "train_seconds": 1.0, "peak_memory_mb": 1.0, "params_millions": 1.0,
        "pretrained": "none", "best_epoch": 1}))
    out = tmp_path / "eval"
    monkeypatch.setattr(sys, "argv", [
        "evaluate", "--backbone", "mobilenet_v3_small", "--model-dir", str(tmp_path / "models"),
        "--train-metrics", str(tmp_path / "train.json"), "--split", str(tmp_path / "split.csv"),
        "--crops", str(tmp_path / "crops"), "--sr", str(tmp_path / "sr"), "--out", str(out),
        "--params", str(params_file)])
    evaluate.main()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["input"] == input_kind
    assert metrics["generator"] == (params.sr.generator if input_kind == "sr" else None)
    crops = pd.read_csv(out / "predictions.csv")
    groups = pd.read_csv(out / "groups.csv")
    assert groups.columns.tolist() == ["group", "n_crops", "prob", "prediction", "threshold",
                                       "backbone", "label"]
    by_group = crops.groupby("group")
    assert groups["group"].tolist() == sorted(by_group.groups)
    assert groups["n_crops"].tolist() == by_group.size().tolist()
    np.testing.assert_allclose(groups["prob"], by_group["prob"].mean().to_numpy())
    assert groups["label"].tolist() == [("Control", "ALS")[v]
                                        for v in by_group["label"].first()]
    cut = metrics["threshold"]["group"]  # chosen on the two validation groups
    assert metrics["threshold"]["rule"] == "youden" and (groups["threshold"] == cut).all()
    low, high = metrics["threshold"]["group_range"]
    assert low <= cut <= high
    expected = np.where(groups["prob"] >= cut, "ALS", "Control")
    assert groups["prediction"].tolist() == expected.tolist()
    assert set(groups["backbone"]) == {"mobilenet_v3_small"}
    assert metrics["seeds"]["seeds"] == [params.seed]  # the tiny config trains one seed


def test_precision_auto_is_fp32_on_every_cpu_and_bf16_only_when_asked(monkeypatch):
    """The same params give the same numbers on any CPU: auto never turns on bf16 there,
    not even where the CPU computes it natively; bf16 runs only when params ask for it."""
    import pipeline.runtime.device as device_module

    cpu = torch.device("cpu")
    for native in (False, True):
        device_module.effective_precision.cache_clear()
        monkeypatch.setattr(device_module, "native_bf16", lambda device, native=native: native)
        assert device_module.effective_precision("auto", cpu) == "fp32"
        assert device_module.effective_precision("fp32", cpu) == "fp32"
        with device_module.autocast_for(cpu, "auto"):
            assert not torch.is_autocast_enabled("cpu")
    assert device_module.effective_precision("bf16", cpu) == "bf16"
    with device_module.autocast_for(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    device_module.effective_precision.cache_clear()


def test_rng_state_continues_the_stream_and_reads_older_checkpoints():
    from pipeline.runtime.device import restore_rng_state, rng_state

    cpu = torch.device("cpu")
    torch.manual_seed(3)
    saved = rng_state(cpu)
    assert set(saved) == {"cpu"}  # a CPU stage reads no GPU's stream (no CUDA context)
    expected = torch.rand(4)
    torch.rand(10)
    restore_rng_state(saved, cpu)
    assert torch.equal(torch.rand(4), expected)
    restore_rng_state(saved["cpu"], cpu)  # checkpoints before the GPU stream: a bare tensor
    assert torch.equal(torch.rand(4), expected)
