"""Studio footage treated as a user's video: ``p3d infer`` never sees the ground truth; it scores.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/footage.py --studio data/studio \
        --ransac data/predictions/triangulate_ransac.parquet --out reports/benchmarks/footage.json \
        [--subjects S9 S11] [--actions Directions ...] [--cameras 54138969 ...] [--no-video] \
        [--detector blazepose]

For each test (subject, action): every camera alone (``infer([video])``: P1 / P2 in the camera
frame, root-trajectory error) and all cameras together (``infer(videos, cameras=...)``: world
MPJPE, compared with triangulate@ransac's predictions on the same frames and joints). Person
boxes use each camera's background: the median of 3 frames of every clip of that subject and
camera, written as a PNG and passed as ``--background`` (what a user gets by filming the empty
scene; the studio changes the light per clip, which the box code compensates). Timings are the
whole command (decode, boxes, 2D, 3D, exports, skeleton video unless --no-video), one thread.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from pose3d import metrics as M
from pose3d.data.contracts import read_predictions
from pose3d.data.io import load_cameras, read_mocap
from pose3d.tasks.footage import infer
from pose3d.tasks.footage.pipeline import DETECTORS, background_from


def camera_backgrounds(videos: Path, subject: str, cams, folder: Path) -> dict[str, Path]:
    out = {}
    for c in cams:
        bg = background_from(sorted((videos / subject).glob(f"*.{c}.mp4")), 3)
        out[c] = folder / f"{subject}.{c}.png"
        cv2.imwrite(str(out[c]), cv2.cvtColor(bg, cv2.COLOR_RGB2BGR))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studio", default="data/studio")
    ap.add_argument("--ransac", default="data/predictions/triangulate_ransac.parquet")
    ap.add_argument("--out", required=True)
    ap.add_argument("--subjects", nargs="+", default=["S9", "S11"])
    ap.add_argument("--actions", nargs="+")
    ap.add_argument("--cameras", nargs="+")
    ap.add_argument("--no-video", action="store_true")
    ap.add_argument("--no-background", action="store_true", help="boxes from each clip's own median frame")
    ap.add_argument("--true-focal", action="store_true", help="one camera: pass the camera's fx as --focal")
    ap.add_argument("--no-multi", action="store_true", help="only the single-camera runs")
    ap.add_argument("--no-single", action="store_true", help="only the multi-camera runs")
    ap.add_argument("--detector", default=DETECTORS[0], choices=DETECTORS, help="2D of the videos (infer's detector)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    studio = Path(a.studio)
    rig = load_cameras(studio / "cameras.json")
    ransac = read_predictions(a.ransac)
    rkeys = {(s, ac, int(f)): i for i, (s, ac, f) in
             enumerate(zip(ransac.keys["subject"], ransac.keys["action"], ransac.keys["frame"]))}
    rows_single, rows_multi = [], []
    tmp = Path(tempfile.mkdtemp(prefix="footage_bench."))
    for subject in a.subjects:
        cams = sorted(rig[subject]) if not a.cameras else a.cameras
        use_bg = not a.no_background and a.detector == "pose_resnet"  # BlazePose finds the person itself
        bgs = camera_backgrounds(studio / "videos", subject, cams, tmp) if use_bg else {}
        cam_json = studio / "cameras.json"
        for seq in read_mocap(studio / "mocap.h5", subjects=[subject]):
            if a.actions and seq.action not in a.actions:
                continue
            P = seq.positions_world.astype(np.float64)
            vids = [studio / "videos" / subject / f"{seq.action}.{c}.mp4" for c in cams]
            for c, v in zip(cams, vids):
                if a.no_single:
                    break
                cam = rig[subject][c]
                t0 = time.perf_counter()
                r = infer([v], tmp / "out", background=[bgs[c]] if bgs else (), video=not a.no_video, progress=False,
                          focal=float(cam.K[0, 0]) if a.true_focal else None, detector=a.detector)
                dt = time.perf_counter() - t0
                gt = torch.from_numpy(P @ cam.R.T + cam.t)  # camera frame
                pr = torch.from_numpy(r.joints.astype(np.float64))
                gt2d = cam.project(P)
                rows_single.append({
                    "subject": subject, "action": seq.action, "camera": c, "frames": len(P), "seconds": dt,
                    "mpjpe_mm": float(M.mpjpe(pr, gt).mean()) * 1000,
                    "pa_mpjpe_mm": float(M.pa_mpjpe(pr, gt).mean()) * 1000,
                    "root_mm": float((pr[:, 0] - gt[:, 0]).norm(dim=-1).mean()) * 1000,
                    "err_2d_px": float(np.linalg.norm(r.points_2d[0] - gt2d, axis=-1).mean())})
                print(json.dumps(rows_single[-1]), flush=True)
            if a.no_multi:
                continue
            t0 = time.perf_counter()
            r = infer(vids, tmp / "out", cameras=cam_json, subject=subject,
                      background=[bgs[c] for c in cams] if bgs else (), video=not a.no_video, progress=False,
                      detector=a.detector)
            dt = time.perf_counter() - t0
            idx = [rkeys.get((subject, seq.action, f), -1) for f in range(len(P))]
            have = np.array(idx) >= 0
            ours = r.joints.astype(np.float64)[have]
            theirs = ransac.joints[np.array(idx)[have]].astype(np.float64)
            gt = P[have]
            both = np.isfinite(ours).all(-1) & np.isfinite(theirs).all(-1)  # (N, J)
            ok = both[:, 0]  # root-aligned MPJPE needs the root in both
            e = {}
            for name, X in (("footage", ours), ("ransac", theirs)):
                err = M.mpjpe(torch.from_numpy(np.nan_to_num(X[ok])), torch.from_numpy(gt[ok]),
                              torch.from_numpy(both[ok]))
                e[name] = float(err.mean()) * 1000
            rows_multi.append({"subject": subject, "action": seq.action, "frames": int(ok.sum()), "seconds": dt,
                               "frames_total": len(P), "mpjpe_mm": e["footage"], "ransac_mpjpe_mm": e["ransac"],
                               "declined_joint_frac": float((~np.isfinite(r.joints).all(-1)).mean())})
            print(json.dumps(rows_multi[-1]), flush=True)

    def summary(rows, keys):
        n = np.array([r["frames"] for r in rows], float)
        out = {k: float((np.array([r[k] for r in rows]) * n).sum() / n.sum()) for k in keys}
        out.update(sequences=len(rows), frames=int(n.sum()),
                   frames_per_s=float(sum(r.get("frames_total", r["frames"]) for r in rows)
                                      / sum(r["seconds"] for r in rows)))
        return out

    res = {"single": summary(rows_single, ["mpjpe_mm", "pa_mpjpe_mm", "root_mm", "err_2d_px"]) if rows_single else {},
           "multi": summary(rows_multi, ["mpjpe_mm", "ransac_mpjpe_mm", "declined_joint_frac"]) if rows_multi else {},
           "rows_single": rows_single, "rows_multi": rows_multi,
           "settings": {"detector": a.detector, "video": not a.no_video, "background": not a.no_background,
                        "true_focal": a.true_focal,
                        "threads": 1}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({"single": res["single"], "multi": res["multi"]}, indent=1))


if __name__ == "__main__":
    main()
