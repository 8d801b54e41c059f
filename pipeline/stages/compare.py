"""Compare backbones on the held-out test split: one table (CSV, Markdown, console), paired
tests over the same test groups, and a ROC overlay."""

from __future__ import annotations

from pathlib import Path

from pipeline.cli import console, stage_main, stage_parser, warn
from pipeline.config import load_params
from pipeline.io import read_json, write_csv_atomic, write_json_atomic, write_text_atomic
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
from pipeline.reporting.labels import BASELINE
from pipeline.reporting.shortcut import shortcut_verdict, verdict_text
from pipeline.reporting.stale import remove_stale_backbone_reports


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("eval-dir", "reports/eval: one folder per backbone and the "
                                    "baseline's"),
                          ("sr-metrics", "train_sr's metrics.json (labels an sr input that "
                                         "did not beat bicubic)"), ("out", "reports/compare"),
                          ("shortcut", "the shortcut verdict (metrics JSON)"))
    parser.add_argument("--per-backbone", type=Path, nargs="*", default=[],
                        help="other folders with a subfolder per backbone (reports/train, "
                             "reports/export): those of dropped backbones are removed")
    parser.add_argument("--environment-dir", type=Path,
                        help="reports/environment: <stage>-<backbone>.json of dropped "
                             "backbones are removed")
    args = parser.parse_args()
    params = load_params(args.params)
    # compare runs after every evaluate: reports of backbones no longer in the DAG go here,
    # before anything lists a folder.
    removed = remove_stale_backbone_reports([args.eval_dir, *args.per_backbone],
                                            args.environment_dir, params.classifier.backbones)
    if removed:
        console.print("compare: removed the reports of backbones no longer in "
                      f"classifier.backbones: {', '.join(map(str, removed))}", highlight=False)
    baseline = read_json(args.eval_dir / BASELINE / "metrics.json")
    # The baseline is compared as one more classifier: same table, tests and Holm family.
    names = params.classifier.backbones + ([BASELINE] if baseline else [])
    frame = comparison_table(args.eval_dir, names, read_json(args.sr_metrics))
    paired = paired_comparisons(args.eval_dir, names, params.classifier.permutations,
                                params.seed)
    verdict = shortcut_verdict(frame, paired, baseline.get("features", {}))
    write_csv_atomic(args.out / "table.csv", frame)
    write_csv_atomic(args.out / "paired.csv", paired)
    write_json_atomic(args.shortcut, verdict)
    paired_text = markdown_table(readable_paired(paired)) if not paired.empty else ""
    write_text_atomic(args.out / "table.md", f"> {verdict_text(verdict)}\n\n"
                      + markdown_table(readable_table(frame))
                      + "\n## Costs\n\n" + markdown_table(readable_costs(frame)) + (
        "\n## Paired comparisons (same test groups)\n\n" + paired_text if paired_text else ""))
    plot_roc_overlay(args.eval_dir, names, args.out / "roc_overlay.png")
    print_comparison(frame, paired)
    if not baseline:
        warn(f"no {args.eval_dir / BASELINE / 'metrics.json'}: the shortcut check did not run "
             "(dvc repro baseline)")
    elif verdict["shortcut_suspected"]:
        warn(verdict_text(verdict))

if __name__ == "__main__":
    main()
