"""Compare backbones on the held-out test split: one table (CSV, Markdown, console), paired
tests over the same test groups, and a ROC overlay."""

from __future__ import annotations

from pipeline.cli import stage_main, stage_parser
from pipeline.config import load_params
from pipeline.io import read_json, write_csv_atomic, write_text_atomic
from pipeline.reporting.compare import (
    comparison_table,
    markdown_table,
    paired_comparisons,
    plot_roc_overlay,
    print_comparison,
    readable_costs,
    readable_paired,
    readable_table,
)


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, "eval-dir", "sr-metrics", ("out", "reports/compare"))
    args = parser.parse_args()
    params = load_params(args.params)
    backbones = params.classifier.backbones
    frame = comparison_table(args.eval_dir, backbones, read_json(args.sr_metrics))
    paired = paired_comparisons(args.eval_dir, backbones, params.classifier.permutations,
                                params.seed)
    write_csv_atomic(args.out / "table.csv", frame)
    write_csv_atomic(args.out / "paired.csv", paired)
    paired_text = markdown_table(readable_paired(paired)) if not paired.empty else ""
    write_text_atomic(args.out / "table.md", markdown_table(readable_table(frame))
                      + "\n## Costs\n\n" + markdown_table(readable_costs(frame)) + (
        "\n## Paired comparisons (same test groups)\n\n" + paired_text if paired_text else ""))
    plot_roc_overlay(args.eval_dir, backbones, args.out / "roc_overlay.png")
    print_comparison(frame, paired)

if __name__ == "__main__":
    main()
