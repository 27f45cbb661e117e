"""Stage ``train_hg3d``: crops -> image-to-3D network (pose-hg-3d style, Zhou et al. 2017),
trained in three phases with the weak 3D supervision of params ``hg3d``; writes the test
subjects' root-relative camera-frame 3D poses.

    python stages/train_hg3d.py --crops-h5 data/crops/crops.h5 --crops-index data/crops/crops.parquet \
        --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json --pose2d models/pose2d \
        --model-dir models/hg3d --checkpoint models/hg3d/checkpoint.pt \
        --predictions data/predictions/hg3d.parquet --metrics reports/metrics/train_hg3d.json \
        --curves reports/plots/curves_train_hg3d.csv
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks import image3d

ARGS = {"--crops-h5": dict(required=True),
        "--crops-index": dict(required=True),
        "--mocap": dict(required=True),
        "--cameras": dict(required=True),
        "--pose2d": dict(default=None, help="2D model folder (used when hg3d.init_from_2d)"),
        "--model-dir": dict(output=True, required=True),
        "--checkpoint": dict(output=True, required=True),
        "--predictions": dict(output=True, required=True),
        "--metrics": dict(output=True, required=True),
        "--curves": dict(output=True, required=True),
        "--timings": dict(output=True, required=True, help="wall-clock figures (not DVC metrics)")}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, "hg3d", ARGS, image3d.run_stage, argv=argv, name="train_hg3d",
                         torchrun=__file__)


if __name__ == "__main__":
    sys.exit(main())
