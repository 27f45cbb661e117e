"""Benchmark the studio: motion generation and render throughput at the default params.

    python benchmarks/studio.py [--params params.yaml] [--out reports/benchmarks/studio.json]
        [--figure reports/figures/studio_cameras.png] [--videos data/studio/videos]

Renders a fixed sample (2 takes x all cameras, single process, default resolution) into a
temporary folder and reports frames/s; estimates the default dataset's render time for the
configured number of workers. The figure shows one frame per camera, decoded from the
dataset's videos when they exist (else rendered here), as the 2D network sees them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from pose3d.runtime import params
from pose3d.data import io
from pose3d.data.studio import anthropometry as A
from pose3d.data.studio import dataset
from pose3d.data.studio import motion as M
from pose3d.data.studio import render as R
from pose3d.data.studio.seeds import stable_seed


def _figure(p, videos: Path | None, out: Path, subject: str = "S9", action: str = "Greeting", frame: int = 15):
    cams = dataset.make_cameras([subject], p.num_cameras, p.width, p.height, p.camera_distance,
                                p.camera_height, p.seed)[subject]
    tiles = []
    for name, cam in cams.items():
        img = None
        if videos is not None:
            vp = io.video_path(videos, subject, action, name)
            if vp.exists():
                cap = cv2.VideoCapture(str(vp))
                cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
                ok, img = cap.read()
                img = img if ok else None
        if img is None:
            subj = A.make_subject(subject, p.seed)
            m = M.generate(subj, action, p.seconds, p.fps, p.seed)
            view = R.CameraView(cam, stable_seed(p.seed, "room"))
            light = R.Lighting.random(np.random.default_rng(0))
            rgb, _ = R.render_frame(view, R.build_body(m.positions, subj), min(frame, len(m.positions) - 1),
                                    R.material_colors(subj), light, shadow_joints=m.positions[frame])
            img = R.finish_frame(rgb, None)
        cv2.putText(img, f"{subject} {action} cam {name}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    while len(tiles) % 2:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + 2], 1) for i in range(0, len(tiles), 2)]
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(rows, 0))


def total_frames(takes, p) -> int:
    return sum(len(t.sequence.positions_world) for t in takes) * p.num_cameras


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="reports/benchmarks/studio.json")
    ap.add_argument("--figure", default="reports/figures/studio_cameras.png")
    ap.add_argument("--videos", default="data/studio/videos")
    a = ap.parse_args(argv)
    p = params.load("studio", a.params)
    res = {"params": {"width": p.width, "height": p.height, "fps": p.fps, "seconds": p.seconds,
                      "num_cameras": p.num_cameras, "subjects": len(p.subjects), "actions": len(p.actions)},
           "cpu_count": os.cpu_count(), "load_avg_1min_before": os.getloadavg()[0]}
    t0 = time.perf_counter()
    takes = dataset.procedural_sequences(p.subjects, p.actions, p.seconds, p.fps, p.seed)
    res["motion_seconds_all_takes"] = round(time.perf_counter() - t0, 3)
    cams = dataset.make_cameras(list(p.subjects), p.num_cameras, p.width, p.height, p.camera_distance,
                                p.camera_height, p.seed)
    sample = [t for t in takes if t.sequence.action in ("Walking", "Discussion")][:2]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        views = {n: R.CameraView(c, 1) for n, c in cams[sample[0].sequence.subject].items()}
        res["views_seconds_per_subject"] = round(time.perf_counter() - t0, 3)
        t0, c0 = time.perf_counter(), time.process_time()
        frames = 0
        for t in sample:
            paths = {n: io.video_path(tmp, t.sequence.subject, t.sequence.action, n) for n in views}
            frames += R.render_sequence(t.sequence.positions_world.astype(np.float64), t.subject, views,
                                        paths, p.fps, 0) * len(views)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    res["render_frames"] = frames
    # frames per CPU-second: what one otherwise idle core delivers (wall fps depends on load)
    res["render_fps_per_cpu_second"] = round(frames / cpu, 2)
    res["dataset_render_estimate_seconds_idle_cores"] = round(total_frames(takes, p) / (frames / cpu)
                                                              / (p.workers or os.cpu_count() or 1), 1)
    res["render_fps_one_process"] = round(frames / dt, 2)
    total = sum(len(t.sequence.positions_world) for t in takes) * p.num_cameras
    workers = p.workers or os.cpu_count() or 1
    res["dataset_video_frames"] = total
    res["dataset_render_estimate_seconds"] = round(total / (frames / dt) / workers, 1)
    res["load_avg_1min_after"] = os.getloadavg()[0]
    io.write_json(a.out, res)
    print(json.dumps(res, indent=2))
    if a.figure:
        _figure(p, Path(a.videos) if a.videos else None, Path(a.figure))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
