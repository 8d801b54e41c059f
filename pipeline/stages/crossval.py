"""Cross-validation by group: k StratifiedGroupKFold folds, each trained and tested.

Folds come from the split stage (split.folds); 0 folds means this stage records nothing.
With classifier.input sr the folds read bicubic images (classify.crossval says why).
"""

from __future__ import annotations

import pandas as pd

from pipeline.classify.crossval import crossval_input, run_fold, summarise
from pipeline.cli import PipelineError, console, stage_main, stage_parser
from pipeline.config import load_params
from pipeline.io import read_crop_table, write_csv_atomic
from pipeline.runtime.checkpoints import prepare_checkpoint_dir
from pipeline.runtime.device import resolve_device


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, "split", ("folds", "the split stage's folds.csv (fold id per "
                                             "crop)"), "crops", "checkpoints",
                          ("out", "reports/crossval"))
    args = parser.parse_args()
    params = load_params(args.params)
    prepare_checkpoint_dir(args.checkpoints)
    split_frame = read_crop_table(args.split)
    if params.split.folds == 0:
        write_csv_atomic(args.out / "folds.csv", pd.DataFrame(columns=["backbone", "fold"]))
        write_csv_atomic(args.out / "summary.csv", pd.DataFrame(columns=["backbone", "folds"]))
        console.print("crossval: split.folds is 0, nothing to do")
        return
    folds_frame = read_crop_table(args.folds)
    if folds_frame.empty:
        raise PipelineError(f"{args.folds} holds no folds; rerun the split stage")
    split_frame = split_frame.merge(folds_frame[["crop_id", "fold"]], on="crop_id",
                                    validate="one_to_one")
    device = resolve_device(params.device, params.runtime.threads)
    input_kind = crossval_input(params.classifier.input)
    if input_kind != params.classifier.input:
        console.print(f"crossval: reading {input_kind} images in place of "
                      f"{params.classifier.input} (the SR model saw some folds' test groups)")
    rows = []
    for backbone in params.classifier.backbones:
        for fold in range(params.split.folds):
            rows.append(run_fold(backbone, fold, split_frame, args.crops, params, device,
                                 args.checkpoints))
            console.print(f"crossval {backbone} fold {fold}: group AUC "
                          f"{rows[-1]['group_auc']:.3f}, crop AUC {rows[-1]['crop_auc']:.3f}")
    folds = pd.DataFrame(rows)
    summary = summarise(folds)
    write_csv_atomic(args.out / "folds.csv", folds)
    write_csv_atomic(args.out / "summary.csv", summary)
    for row in summary.itertuples(index=False):
        console.print(f"{row.backbone}: group AUC {row.group_auc_mean:.3f} ± "
                      f"{row.group_auc_sd:.3f}, crop AUC {row.crop_auc_mean:.3f} ± "
                      f"{row.crop_auc_sd:.3f} over {row.folds} folds")


if __name__ == "__main__":
    main()
