"""Validate every key of params.yaml before any other stage runs (about a second).

DVC reruns this stage whenever any param changes (it depends on the whole file), and the
first data stages depend on its record, so a mistyped or added key (`-S +sr.iter_psnr=1`)
fails the run at once with a suggestion, instead of an experiment that skips every stage;
and a data.raw_dir that is not there fails with the reason (a relative path in a queued
copy) before DVC's own dependency check, which names no reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.common import check_raw_dir, console, stage_main, write_json_atomic
from pipeline.config import load_params


@stage_main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="the record later stages read")
    parser.add_argument("--demo-raw", type=Path, required=True,
                        help="the folder make_demo writes (it need not exist yet)")
    args = parser.parse_args()
    params = load_params(args.params)
    if Path(params.data.raw_dir) != args.demo_raw:
        check_raw_dir(Path(params.data.raw_dir))
    # The record holds no values: it changes only with this code, so a valid change of a
    # param reruns just the stages that read that param, not everything downstream.
    write_json_atomic(args.out, {"params": str(args.params), "valid": True})
    console.print(f"check_params: {args.params} is valid")


if __name__ == "__main__":
    main()
