"""Train the ESRGAN-style SR model: L1 pre-training, then relativistic GAN fine-tuning.

Both generators are exported with their validation PSNR/SSIM against bicubic on the same
pairs; sr.generator picks the one that feeds the classifier (sr.training says how), and the
held-out test pairs, which chose nothing, give its gain over bicubic (sr_gain_db).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipeline.cli import PipelineError, console, stage_main, stage_parser
from pipeline.config import load_params
from pipeline.environment import write_environment
from pipeline.io import load_array, write_csv_atomic, write_json_atomic
from pipeline.runtime.checkpoints import prepare_checkpoint_dir
from pipeline.runtime.device import effective_precision, resolve_device
from pipeline.runtime.distributed import init_distributed, run_under_torchrun, shutdown
from pipeline.sr.quality import save_sr_samples
from pipeline.sr.training import MODEL_KEYS, export_generators, report_generator, train_sr


@stage_main
def main() -> None:
    parser = stage_parser(__doc__, ("pairs", "make_pairs' folder of LR/HR pair arrays"),
                          ("checkpoints", "persistent folder"), "metrics", "curves",
                          ("samples", "PNG of LR, bicubic, SR and HR examples"),
                          environment=True)
    parser.add_argument("--model-dir", type=Path, required=True,
                        help="folder for generator.pt (the chosen one) and generator_<name>.pt")
    args = parser.parse_args()
    params = load_params(args.params)
    run_under_torchrun(params.distributed.nproc, __spec__.name)
    context, device = init_distributed(resolve_device(params.device, params.runtime.threads))
    pairs = {path.stem: load_array(path) for path in sorted(args.pairs.glob("*.npy"))}
    prepare_checkpoint_dir(args.checkpoints)
    result = train_sr(pairs, params.sr, device, params.seed, args.checkpoints, context=context)
    shutdown(context)
    if not context.is_main:
        console.print(f"rank {context.rank}: training done; rank 0 writes the outputs")
        return
    metrics = result["metrics"] | {"precision": effective_precision(params.sr.precision, device)}
    export_generators(result, params.sr, args.model_dir)
    write_csv_atomic(args.curves, pd.DataFrame(result["log"]))
    save_sr_samples(result["ema_state"], {k: getattr(params.sr, k) for k in MODEL_KEYS},
                    pairs, args.samples)
    write_json_atomic(args.metrics, metrics)
    write_environment(args.environment, device)
    report_generator(metrics, params.sr.min_gain_db)
    if not math.isfinite(metrics["psnr"]):
        raise PipelineError("validation PSNR is not finite")


if __name__ == "__main__":
    main()
