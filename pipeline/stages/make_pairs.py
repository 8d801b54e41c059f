"""LR/HR pairs for the SR model: HR patches from train (and val) crops, LR by downsampling.

Only training-split crops feed SR training and only validation crops its validation:
no image of a test group is ever seen by the SR model, so SR cannot leak test content.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.cli import print_frame, stage_main, stage_parser
from pipeline.config import load_params
from pipeline.io import read_crop_table, save_array_atomic, write_json_atomic
from pipeline.sr.pairs import make_lr_hr_pairs


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("crops", "ingested crop cache folder"), "split",
                          ("manifest", "ingest's (bit depths)"),
                          ("out", "folder for the LR/HR pair arrays (.npy) and shapes.json"))
    args = parser.parse_args()
    params = load_params(args.params)
    bit_depths = read_crop_table(args.manifest, usecols=["crop_id", "levels"])
    split_frame = read_crop_table(args.split).merge(bit_depths, on="crop_id", validate="one_to_one")
    pairs = make_lr_hr_pairs(args.crops, split_frame, params.sr, params.seed,
                             params.data.acquire_downsample)
    for name, array in pairs.items():
        save_array_atomic(args.out / f"{name}.npy", array.astype(np.float32))
    # Shapes only: an environment record here (platform, versions) would change this output's
    # hash from one machine to the next and send every stage downstream of it back to work.
    summary = {name: list(array.shape) for name, array in pairs.items()}
    write_json_atomic(args.out / "shapes.json", summary)
    print_frame("LR/HR pairs (count x channels x height x width)", pd.DataFrame(
        [{"split": split, "LR": " x ".join(map(str, summary[f"{split}_lr"])),
          "HR": " x ".join(map(str, summary[f"{split}_hr"]))}
         for split in ("train", "val", "test") if f"{split}_lr" in summary]))


if __name__ == "__main__":
    main()
