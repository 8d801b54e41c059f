import pytest
import yaml

from pipeline.config import ParamsError, load_params
from tests.conftest import REPO, write_params


def test_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.split.test_fraction == 0.3
    assert params.classifier.backbones == ["vgg16", "resnet50", "mobilenet_v3_large"]


def _edit(path, mutate):
    raw = yaml.safe_load(path.read_text())
    mutate(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r.__setitem__("lrr", 0.1), "unknown key lrr"),
    (lambda r: r["sr"].__setitem__("scael", 4), "unknown key sr.scael"),
    (lambda r: r["data"].pop("positive"), "missing key data.positive"),
    (lambda r: r.__setitem__("lr", 0), "lr: must be > 0"),
    (lambda r: r.__setitem__("lr", -0.1), "lr: must be > 0"),
    (lambda r: r["sr"].__setitem__("scale", 3), "sr.scale: must be 2 or 4"),
    (lambda r: r["sr"].__setitem__("hr_patch", 100), "sr.hr_patch"),
    (lambda r: r["classifier"].__setitem__("backbones", ["resnet5O"]), "unknown backbone"),
    (lambda r: r["classifier"].__setitem__("input", "srr"), "classifier.input"),
    (lambda r: r.__setitem__("batch_size", "sixteen"), "batch_size: expected int"),
    (lambda r: r.__setitem__("device", "gpu"), "device"),
    (lambda r: r["augment"].__setitem__("online", "yes"), "augment.online: expected true/false"),
])
def test_bad_params_fail_naming_the_key(tmp_path, mutate, key):
    path = _edit(write_params(tmp_path / "params.yaml"), mutate)
    with pytest.raises(ParamsError, match=key.replace(".", r"\.").replace("(", r"\(")):
        load_params(path)


def test_every_problem_is_named_at_once_one_line_each(tmp_path):
    def three_problems(raw):
        raw["sr"]["scael"] = raw["sr"].pop("scale")  # misspelt: one problem, not two
        raw["batch_size"] = "sixteen"
        raw["classifier"]["input"] = "srr"

    path = _edit(write_params(tmp_path / "params.yaml"), three_problems)
    with pytest.raises(ParamsError) as raised:
        load_params(path)
    lines = str(raised.value).splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("params.yaml: batch_size: expected int")
    assert any("classifier.input" in line for line in lines)
    assert any("unknown key sr.scael: did you mean sr.scale?" in line for line in lines)


def test_int_accepted_where_float_expected(tmp_path):
    path = _edit(write_params(tmp_path / "params.yaml"), lambda r: r.__setitem__("lr", 1))
    assert load_params(path).lr == 1.0


def test_dvc_exp_run_set_changes_only_the_lines_it_sets(tmp_path):
    """params.yaml is laid out as DVC writes it back (block lists, comments that stay with
    their key), so `dvc exp run -S` leaves a one-line diff per key."""
    import shutil

    from dvc.utils.hydra import apply_overrides

    from tests.conftest import REPO

    copy = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", copy)
    before = copy.read_text().splitlines()
    apply_overrides(str(copy), ["lr=0.0005", "sr.iters_psnr=100"])
    after = copy.read_text().splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert [b.split("#")[0].strip() for _, b in changed] == ["lr: 0.0005", "iters_psnr: 100"]


def test_a_predict_folder_with_spaces_is_refused_before_dvc_breaks_its_lock(tmp_path):
    path = write_params(tmp_path / "params.yaml", predict={"input_dir": ["/data/new patients"],
                                                           "on_bad_file": "error"})
    with pytest.raises(ParamsError, match="spaces breaks dvc.lock"):
        load_params(path)


def test_a_gan_generator_without_a_gan_phase_is_refused_before_sr_trains(tmp_path):
    path = write_params(tmp_path / "params.yaml", sr={"generator": "gan", "iters_gan": 0})
    with pytest.raises(ParamsError, match=r"sr\.generator: gan needs a GAN phase"):
        load_params(path)
    assert load_params(write_params(tmp_path / "ok.yaml",
                                    sr={"generator": "best", "iters_gan": 0}))


@pytest.mark.parametrize("backbones, data, classifier, refused", [
    # the demo's 32 px crops acquired at 1/4 and read raw: 8 px images
    (["vgg16"], {"crop_size": 32, "acquire_downsample": 4}, {"input": "raw",
                                                              "image_size": "auto"}, True),
    (["vgg16"], {}, {"image_size": 24}, True),
    (["vgg16"], {}, {"image_size": 32}, False),
    (["vgg16"], {"crop_size": 32, "acquire_downsample": 4}, {"input": "sr",
                                                              "image_size": "auto"}, False),
    # ResNet50 and MobileNetV3 keep a 1 px map to the end: no minimum beyond 16
    (["resnet50", "mobilenet_v3_small"], {"crop_size": 32, "acquire_downsample": 4},
     {"input": "raw", "image_size": "auto"}, False),
])
def test_images_too_small_for_vgg16_are_refused_before_any_stage(tmp_path, backbones, data,
                                                                 classifier, refused):
    path = write_params(tmp_path / "params.yaml", data=data,
                        classifier={"backbones": backbones, **classifier},
                        sr={"scale": 4, "hr_patch": 32})
    if refused:
        with pytest.raises(ParamsError, match="VGG16 would read .* px images"):
            load_params(path)
    else:
        load_params(path)


def test_vgg16_really_needs_32_px():
    """The limit the check above enforces is VGG16's own."""
    import torch

    from models.classifier import build_classifier

    model, _ = build_classifier("vgg16", "none")
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 2)
        with pytest.raises(RuntimeError, match="too small"):
            model(torch.rand(1, 1, 31, 31))


def test_weight_files_are_checked_before_any_stage(tmp_path):
    from pipeline.cli import PipelineError
    from pipeline.stages.check_params import check_weights_files

    typo = load_params(write_params(tmp_path / "a.yaml", classifier={"pretrained": "imagnet"}))
    with pytest.raises(PipelineError, match="classifier.pretrained: 'imagnet' is not a file; "
                                            "expected none, imagenet or the path"):
        check_weights_files(typo)
    weights = tmp_path / "resnet50.pth"
    weights.write_bytes(b"checked for existence only here")
    for setting in ("none", "imagenet", str(weights)):
        check_weights_files(load_params(write_params(tmp_path / "b.yaml",
                                                     classifier={"pretrained": setting})))
    perceptual = load_params(write_params(tmp_path / "c.yaml", sr={
        "weight_perceptual": 1.0, "vgg_weights": "data/weights/missing.pth"}))
    with pytest.raises(PipelineError, match="sr.vgg_weights: .* queued experiment"):
        check_weights_files(perceptual)
    check_weights_files(load_params(write_params(tmp_path / "d.yaml", sr={
        "weight_perceptual": 0.0, "vgg_weights": "data/weights/missing.pth"})))
