"""Stage ``train_hg3d``: crops -> image-to-3D network (pose-hg-3d style, Zhou et al. 2017),
trained in three phases with the weak 3D supervision of params ``hg3d``; writes the test
subjects' root-relative camera-frame 3D poses.

    python stages/train_hg3d.py --crops-h5 data/crops/crops.h5 --crops-index data/crops/crops.parquet \
        --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json --pose2d models/pose2d \
        --model-dir models/hg3d --checkpoint models/hg3d/checkpoint.pt \
        --predictions data/predictions/hg3d.parquet --metrics reports/metrics/train_hg3d.json \
        --curves reports/plots/curves_train_hg3d.csv
"""

from __future__ import annotations

import argparse
import logging
import sys

from pose3d import cli, hg3d, params, tracking
from pose3d.data.io import DataError, write_json

log = logging.getLogger("train_hg3d")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops-h5", required=True)
    ap.add_argument("--crops-index", required=True)
    ap.add_argument("--mocap", required=True)
    ap.add_argument("--cameras", required=True)
    ap.add_argument("--pose2d", default=None, help="2D model folder (used when hg3d.init_from_2d)")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--curves", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    s = cli.setup("hg3d", a.params)
    p, base = s.params, s.base
    if p.init_from_2d and not a.pose2d:
        log.error("hg3d.init_from_2d is true but no --pose2d folder was given")
        return 2
    model_config, opts = hg3d.configs_from_params(p)
    flat = s.flat
    try:
        with tracking.stage_run(stage="train_hg3d", params=flat, base=base) as run:
            metrics = hg3d.run_hg3d(
                crops_h5=a.crops_h5, crops_parquet=a.crops_index, mocap_h5=a.mocap,
                cameras_json=a.cameras, model_config=model_config, opts=opts,
                input_size=p.input_size, frame_stride=p.frame_stride,
                pose2d_dir=a.pose2d if p.init_from_2d else None, device=base.device,
                cpu_precision=base.cpu_precision, channels_last=p.channels_last, seed=base.seed,
                model_dir=a.model_dir, predictions=a.predictions, checkpoint=a.checkpoint,
                curves_csv=a.curves, run=run, fingerprint=params.fingerprint(p, base))
            run.log_metrics({**{k: metrics[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "err2d_px", "gt2d_mpjpe_mm",
                                                        "gt2d_pa_mpjpe_mm", "seconds")},
                             **{f"{ph}.{k}": v for ph, m in metrics["phases"].items() for k, v in m.items()}})
    except (DataError, ValueError, FileNotFoundError) as e:
        log.error("%s", e)
        return 1
    write_json(a.metrics, metrics)
    log.info("train_hg3d: MPJPE %.1f mm, P-MPJPE %.1f mm on %d test crops (2D error %.1f px; GT 2D + "
             "predicted depth: %.1f / %.1f mm); %.0f s (load %.0f, train %.0f, predict %.0f); phases %s",
             metrics["mpjpe_mm"], metrics["pa_mpjpe_mm"], metrics["n_test"], metrics["err2d_px"],
             metrics["gt2d_mpjpe_mm"], metrics["gt2d_pa_mpjpe_mm"], metrics["seconds"],
             metrics["seconds_load"], metrics["seconds_train"], metrics["seconds_predict"], metrics["phases"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
