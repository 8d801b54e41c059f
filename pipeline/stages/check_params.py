"""Validate every key of params.yaml before any other stage runs (about a second).

DVC reruns this stage whenever any param changes (it depends on the whole file), and the
first data stages depend on its record, so a mistyped or added key (`-S +sr.iter_psnr=1`)
fails the run at once with a suggestion, instead of an experiment that skips every stage;
and a data.raw_dir that is not there fails with the reason (a relative path in a queued
copy) before DVC's own dependency check, which names no reason. It also says which values
depart from the profile params.yaml names, and refuses a profile line edited by hand
(params.yaml naming one profile while holding another's values: only `dvc exp run`
composes a profile's values).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.cli import PipelineError, console, stage_main, stage_parser
from pipeline.config import CONF_DIR, Params, departures, load_params, profile_values
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


def check_profile(params: Params, raw: dict) -> dict[str, tuple]:
    """The values that depart from the named profile (overrides on top of it); an error when
    they are exactly another profile's, i.e. the profile line was edited by hand."""
    named = departures(raw, profile_values(params.profile))
    if not named:
        return {}
    for other in sorted(p.stem for p in (CONF_DIR / "profile").glob("*.yaml")):
        if other != params.profile and not departures(raw, profile_values(other)):
            key, (value, wanted) = next(iter(named.items()))
            raise PipelineError(
                f"params.yaml: profile: {params.profile}, but its values are profile {other}'s "
                f"(e.g. {key}: {value!r}, profile {params.profile}: {wanted!r}). Only `dvc exp "
                f"run` composes a profile: `dvc exp run -S profile={params.profile}` (plain "
                "`dvc repro` runs params.yaml as it stands)")
    return named


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("out", "the record later stages read"))
    parser.add_argument("--demo-raw", type=Path, required=True,
                        help="the folder make_demo writes (it need not exist yet)")
    args = parser.parse_args()
    params = load_params(args.params)
    overrides = check_profile(params, yaml.safe_load(args.params.read_text()))
    raw_dir = Path(params.data.raw_dir)
    if raw_dir != args.demo_raw:
        if "data.raw_dir" not in overrides and not raw_dir.exists():
            raise PipelineError(f"data.raw_dir: profile {params.profile} is for your own crops "
                                f"and leaves their folder to you ({raw_dir} is a placeholder): "
                                "-S data.raw_dir=/abs/path/to/crops")
        check_raw_dir(raw_dir)
    check_weights_files(params)
    # The record holds no values: it changes only with this code, so a valid change of a
    # param reruns just the stages that read that param, not everything downstream.
    write_json_atomic(args.out, {"params": str(args.params), "valid": True})
    shown = ", ".join(f"{key}={value!r} (profile: {wanted!r})"
                      for key, (value, wanted) in overrides.items())
    console.print(f"check_params: {args.params} is valid; profile {params.profile}"
                  + (f" with {len(overrides)} override(s): {shown}" if overrides else ""),
                  highlight=False)


if __name__ == "__main__":
    main()
