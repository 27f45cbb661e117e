"""Stage ``triangulate@<method>``: multi-view 2D -> 3D by calibrated or uncalibrated triangulation.

    python stages/triangulate.py --method algebraic --mocap data/studio/mocap.h5 \
        --cameras data/studio/cameras.json --detections data/detections_2d.parquet \
        --out data/predictions/triangulate_algebraic.parquet \
        --metrics reports/metrics/triangulate_algebraic.json

Methods: algebraic (weighted DLT), ransac (RANSAC over views), probabilistic (no extrinsics;
output in the reference camera's frame). Params: sections ``base`` and ``triangulate``.
A missing or malformed input is an error that names it (exit 1); nothing is written then.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pose3d import cli, tracking
from pose3d import triangulate as stage
from pose3d.data.io import DataError

log = logging.getLogger("triangulate")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", required=True, choices=stage.METHODS)
    ap.add_argument("--mocap", required=True)
    ap.add_argument("--cameras", required=True)
    ap.add_argument("--detections", default=None, help="read when triangulate.input = detections")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    s = cli.setup("triangulate", a.params)
    p, base, device = s.params, s.base, s.device
    flat = dict(s.flat)
    flat["method"] = a.method
    with tracking.stage_run(stage=f"triangulate@{a.method}", params=flat, base=base) as run:
        try:
            m = stage.run(a.method, a.mocap, a.cameras, a.detections, a.out, a.metrics, p, device,
                          seed=base.seed)
        except DataError as e:
            log.error("%s", e)
            raise SystemExit(1) from None
        run.log_metrics(m)
    log.info("triangulate@%s: %s", a.method, ", ".join(f"{k}={v:.4g}" for k, v in m.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
