"""Print the workspace's results as one table a 120-column terminal shows whole.

`dvc metrics show` lists every key of every metrics file (well over 100 columns); this
prints what a reader wants first: the data, the SR model against bicubic, and per
backbone the test AUC with its interval, the thresholds chosen on validation, balanced
accuracy there and at 0.5, and the caveats (collapsed model, too few test groups).
Experiments side by side: `python -m pipeline.tools.grid` and `python -m pipeline.tools.ablation`.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from pipeline.cli import PipelineError, console, stage_main, stage_parser
from pipeline.config import load_params
from pipeline.io import read_json
from pipeline.reporting.labels import BASELINE, NO_GAIN, classifier_label, input_label
from pipeline.reporting.shortcut import verdict_text
from pipeline.stats import caveats


def results_table(reports: Path, backbones: list[str],
                  sr_better_than_bicubic: bool | None = None) -> tuple[Table, list[str]]:
    """The table, and one line per backbone whose figures are not findings (marked * in
    the table)."""
    table = Table(title="Held-out test split (patients never seen in training)")
    for column in ("backbone", "input", "crop AUC [CI]", "cut", "bal.acc", "@0.5",
                   "group AUC", "cut", "bal.acc", "@0.5"):
        table.add_column(column, no_wrap=True)
    notes = []
    for backbone in backbones:
        metrics = read_json(reports / "eval" / backbone / "metrics.json")
        if not metrics:
            table.add_row(backbone, "", "not evaluated", *[""] * 7)
            continue
        caveat = caveats(metrics)
        if caveat:
            notes.append(f"* {backbone}: {caveat}")
        row = [classifier_label(backbone) + (" *" if caveat else ""),
               input_label(str(metrics["input"]), sr_better_than_bicubic)]
        for level in ("crop", "group"):
            figures, half = metrics[level], metrics["at_0_5"][level]
            auc = f"{figures['auc']:.3f}"
            if level == "crop":
                low, high = figures["auc_ci_low"], figures["auc_ci_high"]
                # escaped: rich reads a bracketed word as markup and drops it unseen
                auc += (escape(" [not estimable]") if low is None or high is None
                        else f" [{low:.2f},{high:.2f}]")
            row += [auc, f"{metrics['threshold'][level]:.3g}",
                    f"{figures['balanced_accuracy']:.3f}", f"{half['balanced_accuracy']:.3f}"]
        table.add_row(*row)
    return table, notes


def seed_table(reports: Path, backbones: list[str]) -> Table:
    """Each classifier's test figures over its training seeds (mean ± sd, evaluate's
    `seeds`): what a difference between two rows must exceed to be more than the seed's.
    The baseline is deterministic: one run, no sd."""
    table = Table(title="Over the training seeds (mean ± sd)")
    for column in ("backbone", "seeds", "crop AUC", "group AUC", "crop bal.acc",
                   "group bal.acc"):
        table.add_column(column, no_wrap=True)
    for backbone in backbones:
        spread = (read_json(reports / "eval" / backbone / "metrics.json") or {}).get("seeds")
        if not spread:
            continue
        cells = []
        for key in ("crop_auc", "group_auc", "crop_balanced_accuracy",
                    "group_balanced_accuracy"):
            figure = spread.get(key) or {}
            sd = figure.get("sd")
            cells.append("" if figure.get("mean") is None else f"{figure['mean']:.3f}"
                         + (" (no sd)" if sd is None else f" ± {sd:.3f}"))
        table.add_row(classifier_label(backbone), str(len(spread.get("seeds") or [])), *cells)
    return table


@stage_main
def main() -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="the reports folder to read (default: reports)")
    args = parser.parse_args()
    if not args.reports.is_dir():
        raise PipelineError(f"{args.reports}: no reports folder here; run dvc repro first (from "
                            "the project root)")
    params = load_params(args.params)
    ingest = read_json(args.reports / "ingest" / "metrics.json") or {}
    if ingest:
        console.print(f"data: {params.data.raw_dir} - {ingest['crops']} crops, "
                      f"{ingest['groups']} groups, manifest {ingest['manifest_sha256'][:12]}",
                      highlight=False)
    split = read_json(args.reports / "split" / "metrics.json") or {}
    if split.get("splits_below_minimum"):
        console.print(f"[yellow]{split['splits_below_minimum']} split/class cells have fewer "
                      "than 5 groups[/]")
    sr = read_json(args.reports / "sr" / "metrics.json")
    if sr:
        console.print(f"SR ({sr['generator']} generator): PSNR {sr['psnr']:.2f} dB against "
                      f"bicubic {sr['psnr_bicubic']:.2f} dB on validation"
                      + (f"; gain {sr['sr_gain_db']:+.3f} dB on the {sr['sr_gain_pairs']} pairs"
                         if "sr_gain_db" in sr else ""), highlight=False)
        if sr.get("sr_better_than_bicubic") is False:
            console.print(f"[bold yellow]{NO_GAIN}: SR does no better than bicubic here[/]",
                          highlight=False)
    table, notes = results_table(args.reports, params.classifier.backbones + [BASELINE],
                                 sr.get("sr_better_than_bicubic"))
    console.print(table)
    console.print(seed_table(args.reports, params.classifier.backbones + [BASELINE]))
    verdict = read_json(args.reports / "compare" / "shortcut.json")
    if verdict.get("shortcut_suspected"):
        console.print(f"[bold yellow]{verdict_text(verdict)}[/]", highlight=False)
    for note in notes:
        console.print(f"[bold yellow]{note}: not a finding[/]", highlight=False)
    console.print(f"cut: threshold chosen on the validation split "
                  f"({params.classifier.threshold}); @0.5: balanced accuracy at 0.5. More: "
                  "reports/report.html",
                  highlight=False)


if __name__ == "__main__":
    main()
