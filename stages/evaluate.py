"""Stage ``evaluate``: every method's predictions against the ground truth -> metrics, plots, report.

    python stages/evaluate.py --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json \
        --predictions data/predictions/martinez.parquet ... \
        --detections data/detections_2d.parquet --videos-dir data/studio/videos \
        --curves reports/plots/curves_train_2d.csv ... --stage-metrics reports/metrics/detect_2d.json ... \
        --metrics reports/metrics.json --plots-dir reports/plots --figures-dir reports/figures \
        --report reports/report.md

Writes reports/metrics.json (DVC metrics, one entry per method), <plots-dir>/per_action.csv and
per_joint.csv (DVC plots), <figures-dir>/evaluate_*.png|gif and the report; one MLflow run with
every metric and the figures as artifacts. A missing or malformed input file is an error that
names it (exit 1); nothing is written then.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from pose3d import cli, evaluation, tracking
from pose3d.data.io import DataError

log = logging.getLogger("evaluate")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mocap", required=True)
    ap.add_argument("--cameras", required=True)
    ap.add_argument("--predictions", nargs="+", required=True, help="data/predictions/<method>.parquet ...")
    ap.add_argument("--detections", default=None, help="2D detections for the overlay figure")
    ap.add_argument("--videos-dir", default=None)
    ap.add_argument("--curves", nargs="*", default=[], help="training-curve CSVs to plot")
    ap.add_argument("--stage-metrics", nargs="*", default=[], help="per-stage metrics JSONs for the report")
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--plots-dir", required=True)
    ap.add_argument("--figures-dir", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    s = cli.setup("evaluate", a.params)
    p, base, device = s.params, s.base, s.device
    flat = dict(s.flat)
    with tracking.stage_run(stage="evaluate", params=flat, base=base) as run:
        t0 = time.perf_counter()
        try:
            out = evaluation.run_evaluation(
                mocap=a.mocap, cameras=a.cameras, predictions=a.predictions, detections=a.detections,
                videos_dir=a.videos_dir, curves=a.curves, stage_metrics=a.stage_metrics,
                metrics_out=a.metrics, plots_dir=a.plots_dir, figures_dir=a.figures_dir, report=a.report,
                split=p.split, pck_threshold=p.pck_threshold_mm / 1000, auc_max=p.auc_max_mm / 1000,
                auc_steps=p.auc_steps, joint_subset=p.joint_subset, subset_name=p.subset_name,
                gif_frames=p.gif_frames, gif_step=p.gif_step, gif_fps=p.gif_fps, gif_dpi=p.gif_dpi,
                device=device)
        except DataError as e:
            log.error("%s", e)
            raise SystemExit(1) from None  # marks the MLflow run FAILED, exits 1
        run.log_metrics({**out["flat"], "seconds": time.perf_counter() - t0})
        for path in [*out["figures"].values(), a.report, a.metrics,
                     f"{a.plots_dir}/per_action.csv", f"{a.plots_dir}/per_joint.csv"]:
            run.log_artifact(path)
    for m, v in out["metrics"].items():
        log.info("%-28s MPJPE %7.1f mm  P-MPJPE %7.1f mm  (action-wise %7.1f / %7.1f)", m, v["mpjpe_mm"],
                 v["pa_mpjpe_mm"], v["mpjpe_mm_actionwise"], v["pa_mpjpe_mm_actionwise"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
