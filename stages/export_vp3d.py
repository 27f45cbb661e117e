"""Export a studio-layout dataset as VideoPose3D-compatible ``.npz`` files (a CLI, not a DAG stage).

    python stages/export_vp3d.py --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json \
        --detections data/detections_2d.parquet --detections-source resnet \
        --out-dir data/export --name studio [--joints h36m32]

writes ``data_3d_studio.npz``, ``data_2d_studio_gt.npz`` (ground truth projected through the
cameras) and ``data_2d_studio_resnet.npz`` (the detections). See docs/byod.md and
:mod:`pose3d.data.export` for the format.
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks import data

ARGS = {"--mocap": dict(required=True),
        "--cameras": dict(required=True),
        "--detections": dict(default=None, help="a pose3d detections Parquet (optional)"),
        "--detections-source": dict(default="det", help="the <source> of data_2d_<name>_<source>.npz"),
        "--out-dir": dict(output=True, required=True),
        "--name": dict(required=True, help="the <name> of data_3d_<name>.npz (no '_')"),
        "--joints": dict(choices=("h36m17", "h36m32"), default="h36m17"),
        "--split": dict(choices=("train", "test"), default=None, help="only this mocap split")}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, None, ARGS, data.run_export_vp3d, argv=argv, name="export_vp3d",
                         device=False, track=False)


if __name__ == "__main__":
    sys.exit(main())
