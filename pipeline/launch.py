"""Start a training stage as one process, or under torchrun when distributed.nproc > 1.

dvc.yaml cannot branch on a param, so the training stages run
`python -m pipeline.launch --nproc ${distributed.nproc} -- pipeline.train_sr ...`
and this replaces itself with the right command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def command_for(nproc: int, module: str, module_args: list[str]) -> list[str]:
    if nproc <= 1:
        return [sys.executable, "-m", module, *module_args]
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    return [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", module, *module_args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, required=True)
    parser.add_argument("module")
    parser.add_argument("module_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = command_for(args.nproc, args.module, args.module_args)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
