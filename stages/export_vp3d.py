"""Export a studio-layout dataset as VideoPose3D-compatible ``.npz`` files (a CLI, not a DAG stage).

    python stages/export_vp3d.py --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json \
        --detections data/detections_2d.parquet --detections-source resnet \
        --out-dir data/export --name studio [--joints h36m32]

writes ``data_3d_studio.npz``, ``data_2d_studio_gt.npz`` (ground truth projected through the
cameras) and ``data_2d_studio_resnet.npz`` (the detections). See docs/byod.md and
:mod:`pose3d.data.export` for the format.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pose3d.data.export import export_vp3d
from pose3d.data.io import DataError, load_cameras, read_mocap, read_table

log = logging.getLogger("export_vp3d")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mocap", required=True)
    ap.add_argument("--cameras", required=True)
    ap.add_argument("--detections", default=None, help="a pose3d detections Parquet (optional)")
    ap.add_argument("--detections-source", default="det", help="the <source> of data_2d_<name>_<source>.npz")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--name", required=True, help="the <name> of data_3d_<name>.npz (no '_')")
    ap.add_argument("--joints", choices=("h36m17", "h36m32"), default="h36m17")
    ap.add_argument("--split", choices=("train", "test"), default=None, help="only this mocap split")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        seqs = read_mocap(a.mocap, split=a.split)
        cams = load_cameras(a.cameras)
        det = read_table(a.detections)[0] if a.detections else None
        paths = export_vp3d(a.out_dir, a.name, seqs, cams, detections=det,
                            detections_source=a.detections_source, joints=a.joints)
    except DataError as e:
        log.error("%s", e)
        return 1
    for kind, p in paths.items():
        log.info("wrote %s (%s)", p, kind)
    return 0


if __name__ == "__main__":
    sys.exit(main())
