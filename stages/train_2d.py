"""Stage ``train_2d``: train the 2D heatmap model (``pose2d.architecture``) on the person crops.

    python stages/train_2d.py --crops-h5 data/crops/crops.h5 --crops-index data/crops/crops.parquet \
        --model-dir models/pose2d --checkpoint models/pose2d/checkpoint.pt \
        --metrics reports/metrics/train_2d.json --curves reports/plots/curves_train_2d.csv
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks import pose2d

ARGS = {"--crops-h5": dict(required=True),
        "--crops-index": dict(required=True),
        "--model-dir": dict(output=True, required=True, help="writes model.pt + config.json here"),
        "--checkpoint": dict(output=True, required=True),
        "--metrics": dict(output=True, required=True),
        "--curves": dict(output=True, required=True)}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, "pose2d", ARGS, pose2d.run_train_stage, argv=argv, name="train_2d",
                         torchrun=__file__)


if __name__ == "__main__":
    sys.exit(main())
