"""Run several stage scripts one after another in this process, for tests/test_distributed.py:
under ``torchrun`` every rank runs them all, so that one launch (one set of interpreter and
torch start-ups, the costly part on a small CPU) serves several stages.

    torchrun --nproc_per_node 2 tests/ddp_stages.py train_2d <its args> -- lift <its args>

The process group is joined once, here, and the stages share it (a stage leaves a group it did
not create in place): rank 1 can then start the next stage while rank 0 still writes the
outputs of the last one.

Exits with the first non-zero status of a stage.
"""

import importlib
import sys
from pathlib import Path

import torch

from pose3d.runtime import cli, distributed

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))


def main(argv: list[str]) -> int:
    cli.setup_logging()
    distributed.init(torch.device("cpu"))
    try:
        while argv:
            cut = argv.index("--") if "--" in argv else len(argv)
            stage, args, argv = argv[0], argv[1:cut], argv[cut + 1:]
            rc = importlib.import_module(stage).main(args)
            if rc:
                return rc
        return 0
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
