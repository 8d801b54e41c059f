"""Write the run's self-contained HTML report (images embedded, no external files).

It reads only the stage's declared deps, and for its header (what ran) git's commit and the
clock; the page with experiments side by side (the SR ablation and the lr x batch grid) is a
tool of its own: `python -m pipeline.tools.experiments_page`.
"""

from __future__ import annotations

from pipeline.cli import console, stage_main, stage_parser
from pipeline.reporting.html import write_report


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("reports", "the reports folder the stages wrote"),
                          ("split", "class names"), ("out", "the HTML page to write"))
    args = parser.parse_args()
    write_report(args.out, args.reports, args.split, args.params, with_experiments=False)
    console.print(f"report: {args.out}")


if __name__ == "__main__":
    main()
