"""Stage ``lift@<model>``: train a 2D -> 3D lifter and predict the test subjects.

    python stages/lift.py --model martinez --mocap data/studio/mocap.h5 \
        --cameras data/studio/cameras.json --detections data/detections_2d.parquet \
        --out data/predictions/martinez.parquet --model-dir models/martinez \
        --checkpoint models/martinez/checkpoint.pt --curves reports/plots/curves_lift_martinez.csv

Reads params sections ``base`` and ``<model>`` only. The stage writes no DVC metrics file: the
evaluate stage scores every method the same way (reports/metrics/methods/<model>.json); the
stage's MLflow run holds its own test numbers and curves. The detections file is read only when
``<model>.input_2d`` is ``detections``.
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks.lifting import pipeline
from pose3d.tasks.lifting.steps import LIFTERS

ARGS = {"--model": dict(required=True, choices=sorted(LIFTERS)),
        "--mocap": dict(required=True),
        "--cameras": dict(required=True),
        "--detections": dict(default=None),
        "--out": dict(output=True, required=True, help="predictions parquet"),
        "--model-dir": dict(output=True, required=True),
        "--checkpoint": dict(output=True, required=True, help="resume state (not a DVC output)"),
        "--curves": dict(output=True, required=True)}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, lambda a: a.model, ARGS, pipeline.run_stage, argv=argv,
                         name=lambda a: f"lift@{a.model}", torchrun=__file__)


if __name__ == "__main__":
    sys.exit(main())
