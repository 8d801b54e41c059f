"""Validate every key of params.yaml before any other stage runs (about a second).

DVC reruns this stage whenever any param changes (it depends on the whole file), and the
first data stages depend on its record, so a mistyped or added key (`-S +sr.iter_psnr=1`)
fails the run at once with a suggestion, instead of an experiment that skips every stage;
and a data.raw_dir that is not there fails with the reason (a relative path in a queued
copy) before DVC's own dependency check, which names no reason.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import PipelineError, console, stage_main, stage_parser
from pipeline.config import Params, load_params
from pipeline.data.layout import check_raw_dir
from pipeline.io import write_json_atomic


def check_weights_files(params: Params) -> None:
    """Weight files the run will load, checked now: a typo or a missing file otherwise
    fails train_classifier or the GAN phase, after the SR stages have run."""
    pretrained = params.classifier.pretrained
    if pretrained not in ("none", "imagenet"):
        _require_file("classifier.pretrained", pretrained, "none, imagenet or the path of a "
                      "torchvision state dict")
    sr = params.sr
    if sr.weight_perceptual > 0 and sr.iters_gan > 0:
        _require_file("sr.vgg_weights", sr.vgg_weights, "torchvision's vgg19-dcbb9e9d.pth "
                      "(the perceptual loss is on: sr.weight_perceptual > 0), or set "
                      "sr.weight_perceptual: 0")


def _require_file(key: str, value: str, expected: str) -> None:
    path = Path(value)
    if path.is_file():
        return
    hint = "" if path.is_absolute() else (
        " A relative path is read from the project root, and a queued experiment runs in a "
        "copy of it under .dvc/tmp/exps: give an absolute path, or `dvc add` the file inside "
        "the repository.")
    raise PipelineError(f"params.yaml: {key}: {value!r} is not a file; expected {expected}."
                        + hint)


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("out", "the record later stages read"))
    parser.add_argument("--demo-raw", type=Path, required=True,
                        help="the folder make_demo writes (it need not exist yet)")
    args = parser.parse_args()
    params = load_params(args.params)
    if Path(params.data.raw_dir) != args.demo_raw:
        check_raw_dir(Path(params.data.raw_dir))
    check_weights_files(params)
    # The record holds no values: it changes only with this code, so a valid change of a
    # param reruns just the stages that read that param, not everything downstream.
    write_json_atomic(args.out, {"params": str(args.params), "valid": True})
    console.print(f"check_params: {args.params} is valid")


if __name__ == "__main__":
    main()
