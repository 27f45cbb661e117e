"""Camera calibration from the studio's board takes, scored against the studio's true cameras.

For each subject's rig (the studio's cameras differ a little per subject), render a board take
and a floor take (:mod:`pose3d.data.studio.calibration`), calibrate them with
``pose3d.tasks.calibrate`` exactly as a user would (videos in, cameras.json out), then score:

* per camera: focal length error (%), principal point error (px), camera centre error (mm),
  rotation error (deg) against the truth, and the bundle adjustment's reprojection RMS (px);
* triangulation of the test subjects (algebraic DLT, pose3d.geometry.triangulation) with the
  calibrated cameras vs the true ones, from the same 2D input: GT 2D + 1 px noise (projected
  with the true cameras), and the DAG's 2D detections; MPJPE (root-relative, as the triangulate
  stage reports it) and absolute joint error, mm.

    OMP_NUM_THREADS=2 nice -n 15 python benchmarks/calibration.py --cameras data/studio/cameras.json \\
        --mocap data/studio/mocap.h5 --detections data/detections_2d.parquet --work /tmp/calib_bench

Renders and calibrations are cached in ``--work`` (delete it to redo them).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pose3d.data.boards import BoardSpec
from pose3d.data.io import load_cameras
from pose3d.data.studio.calibration import render_calibration_takes
from pose3d.geometry.camera import stack_cameras
from pose3d.geometry.triangulation import triangulate
from pose3d.metrics import joint_errors
from pose3d.tasks.calibrate import pipeline
from pose3d.tasks.triangulate import load_views

BOARDS = {"checkerboard": "checkerboard:10x7:0.1", "charuco": "charuco:6x5:0.18:0.135:DICT_4X4_50"}
FLOOR = "checkerboard:8x5:0.25"
FLOOR_OFFSET = (-1.0, 0.625)  # the floor board's origin in world metres: the board is centred on (0, 0)


def camera_errors(cal, true) -> dict[str, float]:
    cos = np.clip((np.trace(cal.R @ true.R.T) - 1) / 2, -1, 1)
    return {"focal_x_pct": 100 * (cal.K[0, 0] / true.K[0, 0] - 1), "focal_y_pct": 100 * (cal.K[1, 1] / true.K[1, 1] - 1),
            "principal_px": float(np.linalg.norm(cal.K[:2, 2] - true.K[:2, 2])),
            "centre_mm": 1000 * float(np.linalg.norm(cal.center - true.center)),
            "rotation_deg": float(np.rad2deg(np.arccos(cos)))}


def tri_mpjpe(uv, cams, scores=None, score_threshold=0.0):
    res = triangulate(uv, cams, scores, method="dlt", score_threshold=score_threshold)
    return res.points_3d


def errors_mm(pred, gt) -> tuple[float, float]:
    ok = torch.isfinite(pred).all(-1)
    rel = joint_errors(pred, gt, "root")
    ab = joint_errors(pred, gt, "none")
    return 1000 * float(rel[torch.isfinite(rel)].mean()), 1000 * float(ab[ok].mean())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", required=True, help="the studio's true cameras.json")
    ap.add_argument("--mocap", required=True)
    ap.add_argument("--detections", default=None, help="the DAG's detections_2d.parquet")
    ap.add_argument("--work", default="/tmp/calib_bench")
    ap.add_argument("--subjects", nargs="+", default=["S9", "S11"])
    ap.add_argument("--boards", nargs="+", default=["checkerboard", "charuco"], choices=list(BOARDS))
    ap.add_argument("--charuco-subjects", nargs="+", default=["S9"], help="subjects that also get a ChArUco take")
    ap.add_argument("--views", type=int, default=200)
    ap.add_argument("--noise-px", type=float, default=1.0)
    ap.add_argument("--score-threshold", type=float, default=0.3)
    ap.add_argument("--out-json", default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    truth = load_cameras(a.cameras)
    work = Path(a.work)
    results: dict = {"calibrations": {}, "triangulation": {}}
    calibrated: dict[str, dict[str, dict]] = {}  # board kind -> subject -> cameras
    for subject in a.subjects:
        for kind in a.boards:
            if kind == "charuco" and subject not in a.charuco_subjects:
                continue
            d = work / subject / kind
            board, floor = BoardSpec.parse(BOARDS[kind]), BoardSpec.parse(FLOOR)
            if not (d / "floor").is_dir():
                t0 = time.perf_counter()
                n = (a.views + 5) * len(truth[subject])
                with tqdm(total=n, desc=f"render {subject} {kind}") as bar:
                    render_calibration_takes(truth[subject], d, board, floor, a.views, 5, FLOOR_OFFSET,
                                             seed=zlib.crc32(f"{subject}:{kind}".encode()) % 1000, fmt="mp4", progress=bar.update)
                logging.info("rendered %s %s in %.0f s", subject, kind, time.perf_counter() - t0)
            out, rep = d / "cameras.json", d / "report.json"
            if not out.exists():
                pipeline.run(d / "board", board, out, d / "floor", floor, FLOOR_OFFSET, [subject], rep)
            cams = load_cameras(out)[subject]
            report = json.loads(rep.read_text())
            errs = {c: {**camera_errors(cams[c], truth[subject][c]), "rms_px": report["cameras"][c]["rms_px"],
                        "views": report["cameras"][c]["board_views"]} for c in cams}
            results["calibrations"][f"{subject}/{kind}"] = {"cameras": errs, "report": report}
            calibrated.setdefault(kind, {})[subject] = cams
            print(f"\n### {subject}, {kind} ({BOARDS[kind]}), floor {FLOOR}")
            print("| camera | board views | RMS px | fx % | fy % | principal px | centre mm | rotation deg |")
            print("|---|---|---|---|---|---|---|---|")
            for c, e in errs.items():
                print(f"| {c} | {e['views']} | {e['rms_px']:.3f} | {e['focal_x_pct']:+.3f} | {e['focal_y_pct']:+.3f} | "
                      f"{e['principal_px']:.2f} | {e['centre_mm']:.2f} | {e['rotation_deg']:.3f} |")
            ba = report["bundle_adjustment"]
            print(f"bundle adjustment: {ba['board_views']} board views, {ba['observations']} corners, "
                  f"{ba['nfev']} evaluations, {ba['seconds']:.1f} s; whole calibration {report['seconds']:.0f} s")
    # triangulation of the test subjects: the same 2D through true and calibrated cameras
    inputs = [("gt", a.noise_px)] + ([("detections", 0.0)] if a.detections else [])
    for source, noise in inputs:
        views = load_views(a.mocap, a.cameras, a.detections, source, noise, "test", seed=0)
        for kind, by_subject in calibrated.items():
            row = {"true": [], "calibrated": []}
            for sv in views:
                if sv.subject not in by_subject:
                    continue
                cal = stack_cameras([by_subject[sv.subject][c] for c in sv.camera_names])
                thr = a.score_threshold if sv.scores is not None else 0.0
                for name, cams in (("true", sv.cameras), ("calibrated", cal)):
                    X = tri_mpjpe(sv.points_px, cams, sv.scores, thr)
                    row[name].append((X, sv.gt))
            if not row["true"]:
                continue
            out = {}
            for name, pairs in row.items():
                X = torch.cat([p[0] for p in pairs])
                G = torch.cat([p[1] for p in pairs])
                out[name] = dict(zip(("mpjpe_mm", "abs_mpjpe_mm"), errors_mm(X, G)))
            subjects = sorted(by_subject)
            results["triangulation"][f"{source}/{kind}"] = {"subjects": subjects, **out}
            t, c = out["true"], out["calibrated"]
            print(f"triangulation ({source}{f' + {noise:g} px' if noise else ''}, {kind} calibration, "
                  f"subjects {subjects}): MPJPE true {t['mpjpe_mm']:.2f} / calibrated {c['mpjpe_mm']:.2f} mm "
                  f"(+{c['mpjpe_mm'] - t['mpjpe_mm']:.2f}); absolute {t['abs_mpjpe_mm']:.2f} / "
                  f"{c['abs_mpjpe_mm']:.2f} mm (+{c['abs_mpjpe_mm'] - t['abs_mpjpe_mm']:.2f})")
    if a.out_json:
        Path(a.out_json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
