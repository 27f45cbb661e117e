"""Stage ``detect_2d``: run the trained 2D model on every crop -> data/detections_2d.parquet.

    python stages/detect_2d.py --crops-h5 data/crops/crops.h5 --crops-index data/crops/crops.parquet \
        --model-dir models/pose2d --out data/detections_2d.parquet \
        --metrics reports/metrics/detect_2d.json --per-joint reports/plots/detect_2d_per_joint.csv \
        --figure reports/figures/detect_2d_crops.png
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks import pose2d

ARGS = {"--crops-h5": dict(required=True),
        "--crops-index": dict(required=True),
        "--model-dir": dict(required=True, help="holds model.pt + config.json"),
        "--out": dict(output=True, required=True),
        "--metrics": dict(output=True, required=True, help="headline numbers (DVC metrics)"),
        "--per-joint": dict(output=True, required=True, help="per-joint CSV (DVC plot)"),
        "--figure": dict(output=True, required=True)}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, "detect", ARGS, pose2d.run_detect_stage, argv=argv, name="detect_2d")


if __name__ == "__main__":
    sys.exit(main())
