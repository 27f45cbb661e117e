"""Stage ``evaluate``: every method's predictions against the ground truth -> metrics, plots, report.

    python stages/evaluate.py --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json \
        --predictions data/predictions/martinez.parquet ... \
        --detections data/detections_2d.parquet --videos-dir data/studio/videos \
        --curves reports/plots/curves_train_2d.csv ... --stage-metrics reports/metrics/detect_2d.json ... \
        --metrics-dir reports/metrics/methods --plots-dir reports/plots --figures-dir reports/figures \
        --report reports/report.md

Writes <metrics-dir>/<method>.json (DVC metrics: each method's headline), <plots-dir>/per_action.csv and
per_joint.csv (DVC plots), <figures-dir>/evaluate_*.png|gif and the report.
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks import evaluate

ARGS = {"--mocap": dict(required=True),
        "--cameras": dict(required=True),
        "--predictions": dict(nargs="+", required=True, help="data/predictions/<method>.parquet ..."),
        "--detections": dict(default=None, help="2D detections for the overlay figure"),
        "--videos-dir": dict(default=None),
        "--curves": dict(nargs="*", default=[], help="training-curve CSVs"),
        "--stage-metrics": dict(nargs="*", default=[], help="per-stage metrics JSONs for the report"),
        "--metrics-dir": dict(output=True, required=True, help="one headline JSON per method"),
        "--plots-dir": dict(output=True, required=True),
        "--figures-dir": dict(output=True, required=True),
        "--report": dict(output=True, required=True),
        "--video": dict(output=True, default=None, help="3D skeleton video (mp4) of evaluate.video_sequence")}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, "evaluate", ARGS, evaluate.run_stage, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
