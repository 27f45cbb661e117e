"""hg3d benchmark: does the geometric constraint close part of the weak-supervision gap?

Three runs of the same hg3d training (pose3d.tasks.image3d.run_hg3d), scored on the test subjects:
  (a) fully 3D-supervised: every training subject keeps its 3D labels;
  (b) weakly supervised: ``--subjects-3d`` keep 3D labels, the others are 2D-only, constraint on;
  (c) the same split as (b) with the constraint off (geo_weight = 0).
Writes a Markdown table to ``--out`` (reports/benchmarks/hg3d.md) and a JSON beside it.

Data: the DVC studio + extract outputs (default paths), or, with ``--synthetic-mocap NPZ``, a
stand-in built here from real mocap (../shared/data/real-mocap's npz: 5 real subjects): stick
figures (limbs as thick lines, left/right/torso in three colours) filmed by ``--cameras``
distorted cameras, cropped like the extract stage. Use it when the studio has not run yet.

    python benchmarks/hg3d.py --out reports/benchmarks/hg3d.md                    # studio data
    python benchmarks/hg3d.py --synthetic-mocap ../shared/data/real-mocap/real_mocap_h36m17.npz \
        --subjects-3d hdm05_bd --subjects-2d-only hdm05_dg hdm05_bk cmu131 --test cmu01
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pose3d.runtime import params
from pose3d.tasks import image3d

log = logging.getLogger("bench_hg3d")


def _look_at(eye: np.ndarray, target: np.ndarray, up=np.array([0.0, 0.0, 1.0])):
    """R, t (x_cam = R x_world + t) of a camera at ``eye`` looking at ``target`` (OpenCV axes)."""
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ eye


def build_synthetic(npz: Path, out: Path, test_subjects: list[str], n_cameras: int = 2,
                    frame_stride: int = 4, size: int = 96, seed: int = 0) -> dict[str, Path]:
    """Real mocap -> stick-figure crops in the extract layout (see the module docstring)."""
    import cv2

    from pose3d.data.crops import CropWriter, crop_affine, invert_affine, square_box
    from pose3d.data.io import Sequence, save_cameras, write_mocap
    from pose3d.geometry.camera import Camera
    from pose3d.tasks.image3d import bone_groups
    from pose3d.skeleton import BONES

    rng = np.random.default_rng(seed)
    d = np.load(npz)
    pos = d["positions"].astype(np.float64) / 1000.0  # mm -> m, Z up
    subj, clip = d["subject"], d["clip_id"]
    side_of = {e: g for g, es in bone_groups("side").items() for e in es}
    colour = {"left": (60, 110, 230), "right": (230, 80, 60), "torso": (80, 200, 90)}
    W, H = 640, 480
    K = np.array([[560.0, 0, 321.0], [0, 558.0, 242.0], [0, 0, 1.0]])
    seqs, cams = [], {}
    with CropWriter(out / "crops.h5", out / "crops.parquet", size=size) as w:
        for s in sorted(set(subj.tolist())):
            split = "test" if s in test_subjects else "train"
            cams[s] = {}
            for c_id in sorted(set(clip[subj == s].tolist())):
                rows = np.flatnonzero((subj == s) & (clip == c_id))[::frame_stride]
                if len(rows) == 0:
                    continue
                p = pos[rows].copy()
                p[..., :2] -= p[:, :1, :2].mean(0)  # the clip's mean pelvis at the origin
                act = f"clip{c_id:03d}"
                seqs.append(Sequence(s, act, p.astype(np.float32), 30.0 / frame_stride, split))
                for v in range(n_cameras):
                    name = f"cam{v}"
                    if name not in cams[s]:
                        az = 2 * np.pi * v / n_cameras + rng.uniform(-0.3, 0.3)
                        eye = np.array([4.5 * np.cos(az), 4.5 * np.sin(az), 1.4])
                        R, t = _look_at(eye, np.array([0.0, 0.0, 0.9]))
                        cams[s][name] = Camera(K=K, dist=np.array([-0.18, 0.05, 0.001, -0.001, 0.0]),
                                               R=R, t=t, width=W, height=H, name=name)
                    cam = cams[s][name]
                    uv = cam.project(p)  # (T, J, 2) distorted px
                    boxes = square_box(uv, 0.25)
                    A = crop_affine(boxes, size)
                    crops = np.empty((len(p), size, size, 3), np.uint8)
                    for f in range(len(p)):
                        img = rng.integers(90, 140, (size, size, 3), dtype=np.uint8)
                        q = uv[f] @ A[f, :, :2].T + A[f, :, 2]
                        z = (p[f] @ cam.R.T + cam.t)[:, 2]
                        # far bones first so nearer limbs occlude them
                        order = sorted(range(len(BONES)), key=lambda e: -z[list(BONES[e])].mean())
                        for e in order:
                            a, b = BONES[e]
                            cv2.line(img, tuple(np.round(q[a]).astype(int).tolist()),
                                     tuple(np.round(q[b]).astype(int).tolist()), colour[side_of[e]],
                                     max(2, size // 24), cv2.LINE_AA)
                        crops[f] = img
                    w.add(crops, subject=s, action=act, camera=name, frames=np.arange(len(p)),
                          split=split, bbox_xyxy=boxes, crop_to_image=invert_affine(A), gt_2d=uv)
    write_mocap(out / "mocap.h5", seqs)
    save_cameras(out / "cameras.json", cams)
    return {"crops_h5": out / "crops.h5", "crops_parquet": out / "crops.parquet",
            "mocap_h5": out / "mocap.h5", "cameras_json": out / "cameras.json"}


def _run_one(key: str, seed: int, kw: dict, one_thread: bool = False) -> dict:
    """One (run, seed) training in this process (or a worker process, one thread)."""
    if one_thread:
        torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    m = image3d.run_hg3d(**kw)
    log.info("(%s) seed %d: MPJPE %.1f  P-MPJPE %.1f  (%.0f s)", key, seed, m["mpjpe_mm"],
             m["pa_mpjpe_mm"], m["seconds"])
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops-h5", default="data/crops/crops.h5")
    ap.add_argument("--crops-index", default="data/crops/crops.parquet")
    ap.add_argument("--mocap", default="data/studio/mocap.h5")
    ap.add_argument("--cameras", default="data/studio/cameras.json")
    ap.add_argument("--pose2d", default=None, help="initialise the 2D module from this folder")
    ap.add_argument("--synthetic-mocap", default=None, type=Path)
    ap.add_argument("--test", nargs="*", default=["cmu01"], help="test subjects (synthetic data)")
    ap.add_argument("--subjects-3d", nargs="+", default=None, help="3D subjects of (b)/(c); "
                    "default: params hg3d.subjects_3d")
    ap.add_argument("--subjects-2d-only", nargs="+", default=None)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--set", nargs="*", default=[], help="extra hg3d params, key=value (YAML)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--runs", nargs="+", default=["a", "b", "c"])
    ap.add_argument("--test-stride", type=int, default=1, help="score every k-th test crop")
    ap.add_argument("--workers", type=int, default=1, help="runs in parallel, one thread each")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/benchmarks/hg3d.md", type=Path)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import yaml

    p = params.load("hg3d", a.params)
    base = params.load("base", a.params)
    over = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in a.set)}
    if a.subjects_3d:
        over["subjects_3d"] = a.subjects_3d
    if a.subjects_2d_only:
        over["subjects_2d_only"] = a.subjects_2d_only
    if a.input_size:
        over["input_size"] = a.input_size
    p = params.from_dict(type(p), {**dataclasses.asdict(p), **over}, "hg3d")
    tmp = tempfile.TemporaryDirectory(prefix="bench_hg3d_")
    if a.synthetic_mocap:
        t0 = time.time()
        paths = build_synthetic(a.synthetic_mocap, Path(tmp.name), a.test, size=p.input_size)
        log.info("synthetic data built in %.1f s", time.time() - t0)
        source = f"synthetic stick figures from {a.synthetic_mocap.name} (test: {', '.join(a.test)})"
    else:
        paths = {"crops_h5": a.crops_h5, "crops_parquet": a.crops_index, "mocap_h5": a.mocap,
                 "cameras_json": a.cameras}
        source = f"studio ({a.crops_h5}, {a.mocap})"
    all_train = list(p.subjects_3d) + list(p.subjects_2d_only)
    setups = {
        "a": ("fully 3D-supervised", dict(subjects_3d=all_train, subjects_2d_only=[])),
        "b": ("weak: 2D-only subjects, constraint on", {}),
        "c": ("weak: 2D-only subjects, constraint off", dict(geo_weight=0.0)),
    }
    jobs = []
    for key in a.runs:
        title, change = setups[key]
        for seed in a.seeds:
            pk = params.from_dict(type(p), {**dataclasses.asdict(p), **change}, "hg3d")
            cfg, opts = image3d.configs_from_params(pk)
            jobs.append((key, seed, dict(**paths, model_config=cfg, opts=opts, input_size=pk.input_size,
                                         frame_stride=pk.frame_stride, pose2d_dir=a.pose2d,
                                         device=base.device, cpu_precision=base.cpu_precision,
                                         channels_last=pk.channels_last, seed=seed, progress=False,
                                         test_stride=a.test_stride)))
    t_start = time.time()
    results: dict[str, list[dict]] = {}
    if a.workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn")) as ex:
            futures = [(key, seed, ex.submit(_run_one, key, seed, kw, True)) for key, seed, kw in jobs]
            done = [(key, seed, f.result()) for key, seed, f in futures]
    else:
        done = [(key, seed, _run_one(key, seed, kw)) for key, seed, kw in jobs]
    for key, seed, m in done:
        results.setdefault(key, []).append({**m, "seed": seed})
    wall = time.time() - t_start
    tmp.cleanup()

    def mean(key, metric):
        return float(np.mean([m[metric] for m in results[key]]))

    def std(key, metric):
        return float(np.std([m[metric] for m in results[key]], ddof=1)) if len(results[key]) > 1 else float("nan")

    command = "python benchmarks/hg3d.py " + " ".join(sys.argv[1:] if argv is None else argv)
    n_test = next(iter(results.values()))[0]["n_test"]
    lines = ["# hg3d: weak supervision with the geometric constraint", "",
             f"Command: `{command}` ({wall:.0f} s wall, {a.workers} worker(s)"
             f"{', one thread each' if a.workers > 1 else ''}).", "",
             f"Data: {source}; scored on {n_test} test crops (every {a.test_stride}-th). 3D subjects in "
             f"(b)/(c): {', '.join(p.subjects_3d)}; 2D-only: {', '.join(p.subjects_2d_only)}. "
             f"Seeds: {a.seeds}. Input {p.input_size} px, ResNet-{p.resnet_depth}, 2D module from "
             f"{a.pose2d or 'scratch'}, epochs per phase (2d/3d/joint) "
             f"{p.epochs_2d}/{p.epochs_3d}/{p.epochs_joint} x {p.samples_per_epoch or 'all'} samples, "
             f"batch {p.batch_size}, lr {p.lr}, depth_weight {p.depth_weight}, geo_weight {p.geo_weight} "
             f"({p.geo_groups}).", "",
             "Columns: MPJPE / P-MPJPE of the stage's output (predicted 2D + predicted depth); "
             "2D error (input px); GT 2D + predicted depth (the depth branch alone, which is what the "
             "constraint trains). Means over seeds; per seed MPJPE / P-MPJPE.", "",
             "| run | setup | MPJPE mm | P-MPJPE mm | 2D err px | GT-2D MPJPE mm | GT-2D P-MPJPE mm "
             "| per seed (MPJPE / P-MPJPE) |", "|---|---|---|---|---|---|---|---|"]
    for key in a.runs:
        per = "; ".join(f"{m['mpjpe_mm']:.1f} / {m['pa_mpjpe_mm']:.1f}" for m in results[key])
        sd = "" if len(results[key]) < 2 else \
            f" (sd {std(key, 'mpjpe_mm'):.1f} / {std(key, 'pa_mpjpe_mm'):.1f})"
        lines.append(f"| ({key}) | {setups[key][0]} | {mean(key, 'mpjpe_mm'):.1f} | "
                     f"{mean(key, 'pa_mpjpe_mm'):.1f} | {mean(key, 'err2d_px'):.2f} | "
                     f"{mean(key, 'gt2d_mpjpe_mm'):.1f} | {mean(key, 'gt2d_pa_mpjpe_mm'):.1f} | {per}{sd} |")
    if all(k in results for k in "abc"):
        lines.append("")
        for metric in ("mpjpe_mm", "pa_mpjpe_mm", "gt2d_mpjpe_mm", "gt2d_pa_mpjpe_mm"):
            gap = mean("c", metric) - mean("a", metric)
            closed = mean("c", metric) - mean("b", metric)
            frac = closed / gap if abs(gap) > 1e-9 else float("nan")
            paired = [c[metric] - b[metric] for b, c in zip(results["b"], results["c"])]
            lines.append(f"- {metric}: gap (c) - (a) = {gap:.1f} mm; the constraint closes "
                         f"{closed:.1f} mm of it ({100 * frac:.0f} %); per seed (c) - (b): "
                         f"{', '.join(f'{x:+.1f}' for x in paired)}.")
    text = "\n".join(lines) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    a.out.with_suffix(".json").write_text(json.dumps(
        {"source": source, "command": command, "wall_s": round(wall, 1), "test_stride": a.test_stride,
         "params": dataclasses.asdict(p), "results": results}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
