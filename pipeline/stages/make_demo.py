"""Make the demo data: seeded synthetic TDP-43-like crops in the study's raw layout."""

from __future__ import annotations

import shutil

from pipeline.cli import console, stage_main, stage_parser
from pipeline.config import load_params
from pipeline.data.demo import make_demo_dataset
from pipeline.io import write_json_atomic


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("out", "raw demo folder to (re)create"), "metrics")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.out.exists():
        shutil.rmtree(args.out)
    counts = make_demo_dataset(args.out, params.demo, params.seed)
    write_json_atomic(args.metrics, counts)
    console.print(f"demo: {counts}")


if __name__ == "__main__":
    main()
