"""Stage ``triangulate@<method>``: multi-view 2D -> 3D (algebraic, ransac, probabilistic).

    python stages/triangulate.py --method ransac --mocap data/studio/mocap.h5 \
        --cameras data/studio/cameras.json --detections data/detections_2d.parquet \
        --out data/predictions/triangulate_ransac.parquet --metrics reports/metrics/triangulate_ransac.json
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks import triangulate

ARGS = {"--method": dict(required=True, choices=triangulate.METHODS),
        "--mocap": dict(required=True),
        "--cameras": dict(required=True),
        "--detections": dict(default=None, help="read when triangulate.input = detections"),
        "--lifter-predictions": dict(default=None, help="a lifter's predictions (Parquet): the probabilistic "
                                     "route's scale when triangulate.stature_from = lifter"),
        "--out": dict(output=True, required=True),
        "--metrics": dict(output=True, required=True),
        "--timings": dict(output=True, required=True, help="wall-clock figures (not DVC metrics)")}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, "triangulate", ARGS, triangulate.run_stage, argv=argv,
                         name=lambda a: f"triangulate@{a.method}")


if __name__ == "__main__":
    sys.exit(main())
