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
