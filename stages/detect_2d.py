"""Stage ``detect_2d``: run the trained pose_resnet on every crop -> data/detections_2d.parquet.

    python stages/detect_2d.py --crops-h5 data/crops/crops.h5 --crops-index data/crops/crops.parquet \
        --model-dir models/pose2d --out data/detections_2d.parquet \
        --metrics reports/metrics/detect_2d.json --figure reports/figures/detect_2d_crops.png
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from pose3d import cli, pose2d, tracking
from pose3d.data.crops import read_crop_index
from pose3d.data.io import DataError

log = logging.getLogger("detect_2d")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops-h5", required=True)
    ap.add_argument("--crops-index", required=True)
    ap.add_argument("--model-dir", required=True, help="holds model.pt + config.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--figure", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    s = cli.setup("detect", a.params)
    p, base = s.params, s.base
    flat = s.flat
    try:
        index = read_crop_index(a.crops_index)
        model, config = pose2d.load_model(Path(a.model_dir), device=base.device, crop_size=index.crop_size)
    except (DataError, FileNotFoundError, KeyError, ValueError) as e:
        log.error("%s", e)
        return 1
    with tracking.stage_run(stage="detect_2d", params=flat, base=base) as run:
        t0 = time.perf_counter()
        result = pose2d.run_detection(model, a.crops_h5, index, Path(a.model_dir) / "model.pt", a.out,
                                      a.metrics, a.figure, batch_size=p.batch_size, flip=p.flip_test,
                                      method=p.decode, sigma=float(config.get("sigma", 1.5)),
                                      precision=p.precision, figure_crops=p.figure_crops, seed=base.seed,
                                      model_config=config)
        seconds = time.perf_counter() - t0
        run.log_metrics({**pose2d.flat_metrics(result), "seconds": seconds,
                         "crops_per_s": len(index) / max(seconds, 1e-9)})
        for path in (a.metrics, a.figure):
            run.log_artifact(path)
    log.info("detect_2d: %d crops in %.1f s; test PCK@0.1 %.4f, mean error %.2f px (%.2f per 1000 px)",
             len(index), seconds, result["pck_0.1"], result["mean_px_error"],
             result["mean_px_error_per_1000px"])
    log.debug("%s", json.dumps(result)[:200])
    return 0


if __name__ == "__main__":
    sys.exit(main())
