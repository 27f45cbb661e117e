"""Lifting benchmarks. Numbers go to reports/benchmarks/lifting.md.

    python benchmarks/lifting.py loso  [--npz ../shared/data/real-mocap/real_mocap_h36m17.npz]
    python benchmarks/lifting.py semi  --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json
    python benchmarks/lifting.py studio --mocap ... --cameras ... [--detections ...]

* loso: real optical mocap (HDM05 + CMU), leave one subject out; every clip is filmed by a
  Human3.6M-like virtual rig (4 cameras, 4.5 m, 1.5 m high, f = 1145 px, 1000x1000, H36M-size
  distortion); GT 2D input. P1/P2 on the 13 reliable joints and on all 17, per held-out subject.
* semi: temporal model fully supervised vs. 1 labelled subject (+ the other train subjects
  unlabelled: reprojection + temporal GAN) vs. 1 labelled subject alone.
* studio: the three lifters on the default studio with GT and detected 2D.
Each run writes nothing into data/ or models/ (temporary directories).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pose3d.runtime import params as P
from pose3d.data.io import Sequence, save_cameras, write_mocap
from pose3d.geometry.camera import Camera
from pose3d.geometry.rotations import look_at
from pose3d.tasks.lifting.data import split_of
from pose3d.tasks.lifting.pipeline import run_lift, score

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO.parent / "shared" / "data" / "real-mocap" / "real_mocap_h36m17.npz"


def h36m_like_rig(n_cameras: int = 4, distance: float = 4.5, height: float = 1.5,
                  size: int = 1000, focal: float = 1145.0, yaw0_deg: float = 45.0) -> dict[str, Camera]:
    """Cameras on a circle around the origin (world Z up), aimed at (0, 0, 1)."""
    cams = {}
    K = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    dist = np.array([-0.2, 0.24, -0.001, -0.001, -0.0016])
    for i in range(n_cameras):
        a = np.deg2rad(yaw0_deg + 360.0 * i / n_cameras)
        eye = torch.tensor([distance * np.cos(a), distance * np.sin(a), height], dtype=torch.float64)
        R, t = look_at(eye, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
        cams[f"cam{i}"] = Camera(K=K, dist=dist, R=R.numpy(), t=t.numpy(), width=size, height=size,
                                 name=f"cam{i}")
    return cams


def real_mocap_dataset(npz: Path, out_dir: Path, test_subjects: list[str]) -> tuple[Path, Path]:
    """Write the real mocap as mocap.h5 (one sequence per clip, metres, each clip's mean root
    moved to x = y = 0 so the rig sees it) + cameras.json; returns their paths."""
    d = np.load(npz, allow_pickle=False)
    pos = d["positions"].astype(np.float64) / 1000.0
    seqs = []
    for cid in np.unique(d["clip_id"]):
        rows = np.flatnonzero(d["clip_id"] == cid)
        rows = rows[np.argsort(d["frame_in_clip"][rows])]
        p = pos[rows].copy()
        p[..., :2] -= p[:, 0, :2].mean(0)
        subj = str(d["subject"][rows[0]])
        act = f"{d['activity'][rows[0]]}_{int(cid):03d}"
        seqs.append(Sequence(subj, act, p.astype(np.float32), float(d["fps"]),
                             "test" if subj in test_subjects else "train"))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_mocap(out_dir / "mocap.h5", seqs)
    rig = h36m_like_rig()
    save_cameras(out_dir / "cameras.json", {s: rig for s in sorted({q.subject for q in seqs})})
    return out_dir / "mocap.h5", out_dir / "cameras.json"


def _base():
    # one thread: on the shared 2-core machine spinning OpenMP threads cost more than they give
    return P.Base(mlflow=False, cpu_precision="fp32", num_threads=1)


def loso(args) -> str:
    d = np.load(args.npz, allow_pickle=False)
    reliable = d["reliable_joint_mask"].astype(bool)
    subjects = sorted(np.unique(d["subject"]).tolist())
    if args.subjects:
        unknown = sorted(set(args.subjects) - set(subjects))
        if unknown:
            raise SystemExit(f"--subjects: {unknown} not in {args.npz} (subjects: {subjects})")
        subjects = [s for s in subjects if s in args.subjects]
    lines = ["| held-out subject | model | frames | P1 all-17 (mm) | P2 all-17 (mm) | P1 13 reliable (mm) | P2 13 reliable (mm) | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for model in args.models:
        # the model's params.yaml section on GT 2D (real mocap has no images); --epochs overrides
        p = dataclasses.replace(P.load(model, args.params), input_2d="gt")
        p = dataclasses.replace(p, epochs=args.epochs or p.epochs, train_stride=args.stride)
        for held in subjects:
            with tempfile.TemporaryDirectory() as tmp:
                mocap, cams = real_mocap_dataset(Path(args.npz), Path(tmp), [held])
                t0 = time.time()
                out = run_lift(model, p, _base(), mocap=mocap, cameras=cams, progress=False)
                res, test = out.metrics, out.test
                rel = score(test, out.pose, joint_mask=reliable)
                lines.append(f"| {held} | {model} | {test.num_frames} | {res['mpjpe_mm']:.1f} | "
                             f"{res['pa_mpjpe_mm']:.1f} | {rel['mpjpe_mm']:.1f} | {rel['pa_mpjpe_mm']:.1f} | "
                             f"{time.time() - t0:.0f} |")
                print(lines[-1], flush=True)
    return "\n".join(lines)


def semi(args) -> str:
    mocap, cams = args.mocap, args.cameras
    train = split_of(mocap, "train")
    one = train[0]
    rows = ["| setting | labelled | unlabelled | P1 (mm) | P2 (mm) | MPJVE (mm) | root (mm) |",
            "|---|---|---|---|---|---|---|"]
    settings = [("fully supervised", (), ()),
                ("1 labelled + unlabelled (reproj + GAN)", (one,), tuple(train[1:])),
                ("1 labelled only", (one,), ())]
    for name, lab, unl in settings:
        p = dataclasses.replace(P.load("temporal", args.params), labeled_subjects=lab, input_2d="gt",
                                unlabeled_subjects=unl, epochs=args.epochs or P.load("temporal", args.params).epochs)
        res = run_lift("temporal", p, _base(), mocap=mocap, cameras=cams, progress=False).metrics
        rows.append(f"| {name} | {', '.join(lab) or 'all train'} | {', '.join(unl) or '-'} | "
                    f"{res['mpjpe_mm']:.1f} | {res['pa_mpjpe_mm']:.1f} | {res['mpjve_mm']:.2f} | "
                    f"{res['root_mm']:.0f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def studio(args) -> str:
    rows = ["| model | 2D input | P1 (mm) | P2 (mm) | MPJVE (mm) | time (s) |", "|---|---|---|---|---|---|"]
    for model in args.models:
        for inp in (["gt", "detections"] if args.detections else ["gt"]):
            p = dataclasses.replace(P.load(model, args.params), input_2d=inp)
            t0 = time.time()
            res = run_lift(model, p, _base(), mocap=args.mocap, cameras=args.cameras,
                           detections=args.detections, progress=False).metrics
            rows.append(f"| {model} | {inp} | {res['mpjpe_mm']:.1f} | {res['pa_mpjpe_mm']:.1f} | "
                        f"{res['mpjve_mm']:.2f} | {time.time() - t0:.0f} |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["loso", "semi", "studio"])
    ap.add_argument("--npz", type=Path, default=NPZ)
    ap.add_argument("--mocap", type=Path, default=REPO / "data/studio/mocap.h5")
    ap.add_argument("--cameras", type=Path, default=REPO / "data/studio/cameras.json")
    ap.add_argument("--detections", type=Path, default=None)
    ap.add_argument("--models", nargs="+", default=["martinez", "temporal"])
    ap.add_argument("--epochs", type=int, default=None, help="override every model's params.yaml epochs")
    ap.add_argument("--stride", type=int, default=1, help="train_stride for loso")
    ap.add_argument("--subjects", nargs="+", default=None, help="loso: hold out only these subjects")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml",
                    help="params.yaml whose model sections every benchmark starts from (epochs included)")
    args = ap.parse_args(argv)
    table = {"loso": loso, "semi": semi, "studio": studio}[args.what](args)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
