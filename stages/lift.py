"""Stage ``lift@<model>``: train a 2D -> 3D lifter and predict the test subjects.

    python stages/lift.py --model martinez --mocap data/studio/mocap.h5 \
        --cameras data/studio/cameras.json --detections data/detections_2d.parquet \
        --out data/predictions/martinez.parquet --model-dir models/martinez \
        --metrics reports/metrics/lift_martinez.json --curves reports/plots/curves_lift_martinez.csv

Reads params sections ``base`` and ``<model>`` only. The detections file is read only when
``<model>.input_2d`` is ``detections``. Exits non-zero with a message on bad input; outputs
are written atomically.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pose3d import cli, params, tracking
from pose3d.data.io import DataError
from pose3d.lifting.pipeline import run_lift
from pose3d.lifting.steps import SETUPS

log = logging.getLogger("lift")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, choices=sorted(SETUPS))
    ap.add_argument("--mocap", required=True)
    ap.add_argument("--cameras", required=True)
    ap.add_argument("--detections", default=None)
    ap.add_argument("--out", required=True, help="predictions parquet")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--curves", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    s = cli.setup(a.model, a.params)
    p, base = s.params, s.base
    flat = {**s.flat, **{f"base.{k}": v for k, v in params.as_flat_dict(base).items()}}
    try:
        with tracking.stage_run(stage=f"lift@{a.model}", params=flat, base=base) as run:
            res = run_lift(a.model, p, base, mocap=a.mocap, cameras=a.cameras, detections=a.detections,
                           out=a.out, model_dir=a.model_dir, metrics_path=a.metrics, curves=a.curves,
                           run=run)
    except (DataError, params.ParamsError) as e:
        log.error("%s", e)
        return 1
    log.info("lift@%s: MPJPE %.1f mm, P-MPJPE %.1f mm, MPJVE %.2f mm on %d test frames", a.model,
             res["mpjpe_mm"], res["pa_mpjpe_mm"], res["mpjve_mm"], res["num_test_frames"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
