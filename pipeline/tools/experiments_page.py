"""Write an HTML page of the run and of the experiments side by side (SR ablation, lr x batch).

    python -m pipeline.tools.experiments_page [--out reports/report_experiments.html]

The SR ablation comes from `python -m pipeline.tools.ablation` (reports/ablation), the grid
from `dvc exp show`. It goes to a path of its own, never the DVC-tracked report.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import PipelineError, console, stage_main, stage_parser
from pipeline.reporting.html import write_report


@stage_main
def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="the pipeline's reports folder (default: reports)")
    parser.add_argument("--split", type=Path, default=Path("data/split/split.csv"),
                        help="the split stage's split.csv, for the class names")
    parser.add_argument("--out", type=Path, default=Path("reports/report_experiments.html"),
                        help="the page to write (default: reports/report_experiments.html; "
                        "never reports/report.html)")
    args = parser.parse_args()
    if args.out.resolve() == (args.reports / "report.html").resolve():
        raise PipelineError(f"--out needs a path of its own, not {args.out} (the pipeline's "
                            "report, tracked by DVC)")
    write_report(args.out, args.reports, args.split, args.params, with_experiments=True)
    console.print(f"experiments page: {args.out}")


if __name__ == "__main__":
    main()
