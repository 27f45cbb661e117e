"""BlazePose on the studio's videos: landmarks, the fitted landmark -> H36M-17 mapping, 2D accuracy.

    # 1. BlazePose (tracking, one thread) on every clip of the given subjects and cameras; GT 2D kept beside
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/blazepose.py landmarks --subjects S1 S5 S6 S7 S8 \
        --cameras 54138969 58860488 --out data/blazepose_train.npz
    # 2. fit the mapping on the train subjects only -> the committed file the detector applies
    python benchmarks/blazepose.py fit --landmarks data/blazepose_train.npz \
        --out pose3d/tasks/footage/blazepose_h36m.json
    # 3. test subjects: name vs fitted mapping, and pose_resnet (the footage route's boxes) on --resnet-cameras
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/blazepose.py landmarks --subjects S9 S11 --out data/blazepose_test.npz
    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/blazepose.py eval --landmarks data/blazepose_test.npz \
        --resnet-cameras 54138969 --out reports/benchmarks/blazepose.json
    # 4. the single-camera rows of benchmarks/footage.py (--detector blazepose / pose_resnet) side by side
    python benchmarks/blazepose.py footage-table a.json b.json --cameras 54138969

The videos are treated as a user's: BlazePose sees only the frames; the ground truth (the mocap
projected by each camera) only scores. Metrics (:func:`pose3d.tasks.pose2d.pck_metrics`): mean px
error, elbows / wrists, PCK@0.1 of the GT joints' square extent, and the whole-body front/back flip
rate: frames whose left and right shoulders, elbows, wrists, hips, knees and ankles lie nearer the
opposite side's ground truth (:func:`pose3d.tasks.pose2d.left_right_swaps`, kind "swap").
Speed: BlazePose's frames/s (detector + landmarks + tracking; decoding excluded), one thread.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pose3d.data.crops import square_box
from pose3d.data.io import load_cameras, read_mocap, write_json
from pose3d.data.video import iter_frames
from pose3d.skeleton import JOINT_NAMES
from pose3d.tasks.footage.blazepose import (MAPPING_FILE, MODELS, WHEEL, BlazePose, fit_mapping, landmarks_to_h36m,
                                            load_mapping)
from pose3d.tasks.footage.keypoints import MEDIAPIPE33
from pose3d.tasks.pose2d import left_right_swaps, pck_metrics

BODY = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")


def clips(studio: Path, subjects, cameras):
    rig = load_cameras(studio / "cameras.json")
    for subject in subjects:
        for seq in read_mocap(studio / "mocap.h5", subjects=[subject]):
            for c in cameras or sorted(rig[subject]):
                cam = rig[subject][c]
                yield subject, seq.action, c, studio / "videos" / subject / f"{seq.action}.{c}.mp4", \
                    cam.project(seq.positions_world.astype(np.float64))


def cmd_landmarks(a) -> None:
    torch.set_num_threads(1)
    bp = BlazePose(threads=1)
    rows = {k: [] for k in ("landmarks", "visibility", "boxes", "gt", "subject", "action", "camera", "frame")}
    seconds, frames = 0.0, 0
    for subject, action, cam, video, gt in clips(Path(a.studio), a.subjects, a.cameras):
        imgs = list(iter_frames(video))
        T = len(imgs)
        t0 = time.perf_counter()
        lm, vis, boxes, runs = bp.track(imgs, T)
        dt = time.perf_counter() - t0
        seconds, frames = seconds + dt, frames + T
        for k, v in (("landmarks", lm), ("visibility", vis), ("boxes", boxes), ("gt", gt[:T])):
            rows[k].append(v)
        for k, v in (("subject", subject), ("action", action), ("camera", cam)):
            rows[k].append(np.full(T, v))
        rows["frame"].append(np.arange(T))
        print(f"{subject} {action} {cam}: {T} frames, {T / dt:.1f} frames/s, detector runs {runs}, "
              f"lost {int((~np.isfinite(lm).all((1, 2))).sum())}", flush=True)
    out = {k: np.concatenate(v) for k, v in rows.items()}
    out["seconds"], out["frames"] = np.float64(seconds), np.int64(frames)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez(a.out, **out)
    print(f"{frames} frames, {frames / seconds:.1f} frames/s (one thread) -> {a.out}")


def load(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def person_size(gt: np.ndarray) -> np.ndarray:
    """(N,) side of the GT joints' square extent (px): the PCK reference and the fit's scale."""
    b = square_box(gt, 0.0)
    return b[:, 2] - b[:, 0]


def cmd_fit(a) -> None:
    d = load(a.landmarks)
    ok = np.isfinite(d["landmarks"]).all((1, 2))
    size = person_size(d["gt"])
    named, _ = landmarks_to_h36m(d["landmarks"], d["visibility"], "names")
    # frames BlazePose got front/back wrong would teach the mapping to cross the body: left out
    flipped = left_right_swaps(named, d["gt"], size, BODY, kind="swap")
    use = ok & ~flipped
    W = fit_mapping(d["landmarks"][use], d["gt"][use], size[use], ridge=a.ridge)
    fitted, _ = landmarks_to_h36m(d["landmarks"][use], d["visibility"][use], W)
    err = lambda p: float(np.linalg.norm(p - d["gt"][use], axis=-1).mean())  # noqa: E731
    res = {"landmarks": list(MEDIAPIPE33), "joints": list(JOINT_NAMES), "weights": np.round(W, 6).tolist(),
           "fitted_on": {"subjects": sorted(set(d["subject"].tolist())), "cameras": sorted(set(d["camera"].tolist())),
                         "frames": int(use.sum()), "frames_left_out_flipped": int((ok & flipped).sum()),
                         "frames_left_out_no_person": int((~ok).sum()), "ridge": a.ridge,
                         "train_mean_px_error": {"names": err(named[use]), "fitted": err(fitted)}},
           "models": {WHEEL: {n: m[1] for n, m in MODELS.items()}},
           "how": "benchmarks/blazepose.py fit (pose3d.tasks.footage.blazepose.fit_mapping)"}
    write_json(a.out, res)
    print(json.dumps(res["fitted_on"], indent=1))
    for j, n in enumerate(JOINT_NAMES):
        print(n, {MEDIAPIPE33[k]: round(W[j, k], 3) for k in np.flatnonzero(np.abs(W[j]) > 0.01)})


def metrics(pred: np.ndarray, gt: np.ndarray) -> dict:
    size = person_size(gt)
    m = pck_metrics(pred, gt, size, np.full(len(gt), 512.0))
    flips = left_right_swaps(np.nan_to_num(pred, nan=-1e6), gt, size, BODY, kind="swap")
    keep = ("mean_px_error", "median_px_error", "pck_0.1", "elbows_mean_px_error", "wrists_mean_px_error",
            "knees_mean_px_error", "ankles_mean_px_error")
    return {**{k: m[k] for k in keep}, "flip_rate": float(flips.mean()), "frames": int(len(gt)),
            "missing_frames": int((~np.isfinite(pred).all((1, 2))).sum())}


def cmd_eval(a) -> None:
    d = load(a.landmarks)
    res = {"blazepose_frames_per_s": float(d["frames"] / d["seconds"]), "all": {}, "subset": {}}
    pred = {m: landmarks_to_h36m(d["landmarks"], d["visibility"], m if m == "names" else load_mapping(a.mapping))[0]
            for m in ("names", "fitted")}
    for m, p in pred.items():
        res["all"][f"blazepose_{m}"] = metrics(p, d["gt"])
    if a.resnet_cameras:
        from pose3d.tasks.footage.detect import detect_video
        from pose3d.tasks.footage.pipeline import background_from
        from pose3d.tasks.pose2d import load_model

        torch.set_num_threads(1)
        model, cfg = load_model(Path(a.pose2d), "cpu")
        studio = Path(a.studio)
        sub = np.isin(d["camera"], a.resnet_cameras)
        gt_all, pr_all, secs = [], [], 0.0
        tmp = Path(tempfile.mkdtemp(prefix="blazepose_bench."))
        bgs = {}
        for subject, action, cam, video, gt in clips(studio, sorted(set(d["subject"][sub].tolist())), a.resnet_cameras):
            if (subject, cam) not in bgs:  # what benchmarks/footage.py gives the route: the camera's empty scene
                bgs[subject, cam] = background_from(sorted((studio / "videos" / subject).glob(f"*.{cam}.mp4")), 3)
            t0 = time.perf_counter()
            kp = detect_video(model, video, crop_size=int(cfg["input_size"]), background=bgs[subject, cam],
                              progress=False)
            secs += time.perf_counter() - t0
            pr_all.append(kp.points_px)
            gt_all.append(gt[:len(kp.points_px)])
            print(f"pose_resnet {subject} {action} {cam}: {np.linalg.norm(kp.points_px - gt_all[-1], axis=-1).mean():.1f} px",
                  flush=True)
        gt_r, pr_r = np.concatenate(gt_all), np.concatenate(pr_all).astype(np.float64)
        res["subset"]["cameras"] = a.resnet_cameras
        res["subset"]["pose_resnet"] = metrics(pr_r, gt_r)
        res["subset"]["pose_resnet_frames_per_s"] = float(len(gt_r) / secs)
        for m, p in pred.items():
            res["subset"][f"blazepose_{m}"] = metrics(p[sub], d["gt"][sub])
    write_json(a.out, res)
    print(json.dumps(res, indent=1))


def cmd_footage_table(a) -> None:
    """Single-camera rows of benchmarks/footage.py outputs (one per detector) on the same clips ->
    frame-weighted P1 / P2 / root / 2D error and frames/s per file (markdown rows)."""
    for path in a.files:
        rows = [r for r in json.loads(Path(path).read_text())["rows_single"]
                if not a.cameras or r["camera"] in a.cameras]
        n = np.array([r["frames"] for r in rows], float)
        mean = lambda k: float((np.array([r[k] for r in rows]) * n).sum() / n.sum())  # noqa: E731
        p2 = np.array([r["pa_mpjpe_mm"] for r in rows])
        print(f"| {Path(path).stem} | {len(rows)} | {int(n.sum())} | {mean('mpjpe_mm'):.1f} | {mean('pa_mpjpe_mm'):.1f} "
              f"| {np.median(p2):.1f} | {mean('root_mm'):.0f} | {mean('err_2d_px'):.1f} "
              f"| {n.sum() / sum(r['seconds'] for r in rows):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studio", default="data/studio")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("landmarks")
    p.add_argument("--subjects", nargs="+", required=True)
    p.add_argument("--cameras", nargs="+")
    p.add_argument("--out", required=True)
    p = sub.add_parser("fit")
    p.add_argument("--landmarks", required=True)
    p.add_argument("--ridge", type=float, default=1e-3)
    p.add_argument("--out", default=str(MAPPING_FILE))
    p = sub.add_parser("eval")
    p.add_argument("--landmarks", required=True)
    p.add_argument("--mapping", default=str(MAPPING_FILE))
    p.add_argument("--resnet-cameras", nargs="+", default=[])
    p.add_argument("--pose2d", default="models/pose2d")
    p.add_argument("--out", required=True)
    p = sub.add_parser("footage-table", help="single-camera rows of benchmarks/footage.py --out files")
    p.add_argument("files", nargs="+")
    p.add_argument("--cameras", nargs="+")
    a = ap.parse_args()
    {"landmarks": cmd_landmarks, "fit": cmd_fit, "eval": cmd_eval, "footage-table": cmd_footage_table}[a.cmd](a)


if __name__ == "__main__":
    main()
