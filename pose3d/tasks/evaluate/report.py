"""The evaluate stage's outputs beyond the numbers: the report (Markdown), the figures and the
stage itself (:func:`run_evaluation`, :func:`run_stage`). The numbers are :mod:`.scoring`'s."""


from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Mapping, Sequence as Seq

import numpy as np
import pandas as pd
import torch

from pose3d.data.contracts import Detections, read_detections
from pose3d.data.io import DataError, atomic_path, video_path, write_json
from pose3d.data.views import GroundTruth
from pose3d.skeleton import JOINT_NAMES, NUM_JOINTS
from pose3d.tasks.evaluate.scoring import (PUBLISHED, MethodResult, data_summary, evaluate_files,
                                           metrics_json, pck_key, per_action_table, per_joint_table)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- picture data
def display_sequence(results: Seq[MethodResult], gt: GroundTruth, n_frames: int = 30, step: int = 2
                     ) -> tuple[str, str, str, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Pick one test sequence covered by the most methods, for the side-by-side animation.

    Returns (subject, action, camera, frames (T,), ground truth world (T, J, 3),
    {method: world poses (T, J, 3)}) with NaN where a method lacks a frame. ``camera`` is
    the camera whose rows camera-frame methods contribute (the first one in sorted order).
    """
    cover: dict[tuple[str, str], int] = {}
    for r in results:
        seqs = r.frames.loc[r.frames["valid"], ["subject", "action"]].drop_duplicates()
        for key in seqs.itertuples(index=False):
            cover[tuple(key)] = cover.get(tuple(key), 0) + 1
    if not cover:
        raise DataError("no valid predictions to draw")
    best = max(cover.values())
    subject, action = sorted(k for k, v in cover.items() if v == best)[0]
    cams = sorted({c for r in results for c in r.frames.loc[
        (r.frames["subject"] == subject) & (r.frames["action"] == action), "camera"] if c})
    camera = cams[0] if cams else ""
    chosen: dict[str, pd.DataFrame] = {}
    for r in results:
        f = r.frames
        sel = (f["subject"] == subject) & (f["action"] == action) & f["valid"]
        if r.coord_frame == "camera":
            sel &= f["camera"] == camera
        chosen[r.method] = f.loc[sel]
    frame_sets = [set(c["frame"]) for c in chosen.values() if len(c)]
    common = sorted(set.intersection(*frame_sets)) if frame_sets else []
    if len(common) < 2:  # no common frames: fall back to the union
        common = sorted(set.union(*frame_sets))
    frames = np.asarray(common[::max(step, 1)][:n_frames], np.int64)
    seq = gt.sequence(subject, action)
    gt_world = seq.positions_world[frames].astype(np.float64)
    poses = {}
    for r in results:
        c = chosen[r.method]
        out = np.full((len(frames), NUM_JOINTS, 3), np.nan)
        pos = pd.Series(c.index.to_numpy(), index=c["frame"].to_numpy())
        have = np.isin(frames, pos.index.to_numpy())
        if have.any():
            out[have] = r.aligned_world[pos.loc[frames[have]].to_numpy()]
        poses[r.method] = out
    return subject, action, camera, frames, gt_world, poses


# --------------------------------------------------------------------------- report
def _fmt(x, nd: int = 1) -> str:
    if x is None:
        return "—"
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "—" if not math.isfinite(xf) else f"{xf:.{nd}f}"


def _md_table(df: pd.DataFrame, nd: int = 1) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, nd) if isinstance(v, (float, np.floating)) or v is None
                                       else str(v) for v in row) + " |")
    return "\n".join(lines)


def render_report(results: Seq[MethodResult], gt: GroundTruth, *, split: str, pck_threshold: float,
                  figures: Mapping[str, str], stage_metrics: Mapping[str, dict],
                  detect_2d: Mapping | None, subset_name: str = "", joint_subset: Seq[str] = (),
                  display: tuple | None = None) -> str:
    """The markdown report a person reads first. ``figures``: {caption: relative path}."""
    pk = pck_key(pck_threshold)
    L: list[str] = []
    L += ["# pose3d evaluation report", ""]
    L += ["Numbers are on the **synthetic studio** data made by this pipeline (split "
          f"`{split}`), not on Human3.6M. The published numbers beside them are the seeds' "
          "**Human3.6M** results: context for the order of magnitude, not a target.", ""]
    L += ["**Headline = frame-wise mean** over every evaluated row (every test frame of every camera "
          "for camera-frame methods, every test frame for world-frame methods). "
          "*Action-wise* = the mean over actions of each action's mean, which is what most "
          "Human3.6M tables print as \"Avg\"; both are given.", ""]
    L += ["## Methods", ""]
    rows = []
    for r in results:
        s = r.summary
        pub = PUBLISHED.get(r.method, {})
        mark = " †" if r.coord_frame == "reference_camera" else ""
        rows.append({
            "method": r.method + mark, "frame": r.coord_frame,
            "MPJPE P1 (mm)": s["mpjpe_mm"], "P1 action-wise": s["mpjpe_mm_actionwise"],
            "P-MPJPE P2 (mm)": s["pa_mpjpe_mm"], "P2 action-wise": s["pa_mpjpe_mm_actionwise"],
            "N-MPJPE (mm)": s["n_mpjpe_mm"], "MPJVE (mm/frame)": s["mpjve_mm"],
            f"PCK3D@{round(pck_threshold * 1000)}mm (%)": 100 * s[pk], "AUC (%)": 100 * s["auc"],
            "valid rows (%)": 100 * s["valid_fraction"],
            "H3.6M P1 published": pub.get("p1_mm"), "H3.6M P2 published": pub.get("p2_mm"),
        })
    L += [_md_table(pd.DataFrame(rows)), ""]
    if any(r.coord_frame == "reference_camera" for r in results):
        L += ["† Uncalibrated (reference-camera) reconstruction: known only up to a similarity, so "
              "each sequence is first aligned to the ground truth by one similarity transform; only "
              "P-MPJPE is directly comparable, MPJPE/N-MPJPE/MPJVE/PCK are *after that alignment*.", ""]
    if joint_subset:
        L += [f"### On the `{subset_name}` joint subset ({len(joint_subset)} joints: "
              f"{', '.join(joint_subset)})", ""]
        L += [_md_table(pd.DataFrame([{"method": r.method,
                                       "MPJPE P1 (mm)": r.summary.get(f"mpjpe_mm_{subset_name}"),
                                       "P-MPJPE P2 (mm)": r.summary.get(f"pa_mpjpe_mm_{subset_name}")}
                                      for r in results])), ""]
    L += ["Published sources (all Human3.6M):", ""]
    for m, p in PUBLISHED.items():
        nums = [f"{_fmt(p[k])} mm {k[:2].upper()}" for k in ("p1_mm", "p2_mm") if p[k] is not None]
        L.append(f"- `{m}`: {', '.join(nums) or 'no number'} — {p['source']}")
    L += ["", "Definitions: MPJPE protocol 1 = root (pelvis) aligned; P-MPJPE protocol 2 = after a "
          "similarity Procrustes per frame; N-MPJPE = root aligned then least-squares scale; MPJVE = "
          "error of joint velocities between consecutive frames of one sequence (mm per frame); "
          f"PCK3D = fraction of joints within {round(pck_threshold * 1000)} mm after root alignment; "
          "AUC = mean PCK3D over thresholds 0..150 mm.", ""]
    L += ["## Pictures", ""]
    for cap, rel in figures.items():
        L += [f"**{cap}**", "", f"![{cap}]({rel})", ""]
    if display is not None:
        subj, act, cam, frames = display
        L += [f"The animation shows `{subj}/{act}` (frames {int(frames[0])}..{int(frames[-1])}"
              + (f", camera-frame methods from camera `{cam}`" if cam else "") + "); every pose is "
              "drawn in the world frame, centred on its pelvis.", ""]
    L += ["## Data the numbers come from", ""]
    L += [_md_table(data_summary(results, gt, split)), ""]
    seqs = gt.index[gt.index["split"] == split] if split != "all" else gt.index
    L += [f"Ground truth: {len(seqs)} `{split}` sequences, {int(seqs['length'].sum())} frames, subjects "
          f"{', '.join(sorted(seqs['subject'].unique()))}; "
          f"fps {', '.join(_fmt(f) for f in sorted(seqs['fps'].unique()))}.",
          ""]
    for r in results:
        if len(r.joints_evaluated) < NUM_JOINTS:
            miss = [n for n in JOINT_NAMES if n not in r.joints_evaluated]
            L.append(f"- `{r.method}` has no {', '.join(miss)}; its averages use "
                     f"{len(r.joints_evaluated)} joints.")
    L += [""]
    if detect_2d:
        L += ["## 2D detections (stage detect_2d)", ""]
        rows2d = [{"metric": k, "value": v} for k, v in _flatten(detect_2d).items()]
        L += [_md_table(pd.DataFrame(rows2d, dtype=object), 3), ""]
    if stage_metrics:
        L += ["## Per-stage metrics", ""]
        for name, obj in stage_metrics.items():
            flat = _flatten(obj)
            L += [f"### {name}", "", _md_table(pd.DataFrame([{"metric": k, "value": v}
                                                             for k, v in flat.items()], dtype=object), 4), ""]
    L += ["Machine-readable: `reports/metrics/methods/<method>.json` (DVC metrics), `reports/plots/per_action.csv`, "
          "`reports/plots/per_joint.csv` (DVC plots); the evaluate run in MLflow holds every metric "
          "and these figures.", ""]
    return "\n".join(L)


def _flatten(obj, prefix: str = "") -> dict:
    out = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        out[prefix[:-1]] = json.dumps(obj)[:80]
    else:
        out[prefix[:-1]] = obj
    return out


def flat_metrics(results: Seq[MethodResult]) -> dict[str, float]:
    """Every number for MLflow: '<method>.<key>' and '<method>.action.<action>.<metric>'."""
    out: dict[str, float] = {}
    for r in results:
        for k, v in r.summary.items():
            out[f"{r.method}.{k}"] = v
        for row in r.per_action.itertuples(index=False):
            d = row._asdict()
            for k in ("mpjpe_mm", "pa_mpjpe_mm"):
                out[f"{r.method}.action.{d['action']}.{k}"] = d[k]
        for row in r.per_joint.itertuples(index=False):
            out[f"{r.method}.joint.{row.joint}.mpjpe_mm"] = row.mpjpe_mm
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


# --------------------------------------------------------------------------- the whole stage
#: figure file names written by :func:`run_evaluation` into ``figures_dir`` (dvc.yaml lists them)
FIGURES = {
    "methods": "evaluate_methods.png",
    "per_action": "evaluate_per_action.png",
    "per_joint": "evaluate_per_joint.png",
    "skeletons": "evaluate_skeletons.gif",
    "detections": "evaluate_detections_2d.png",
    "curves": "evaluate_curves.png",
}


def load_stage_metrics(paths: Seq[str | Path]) -> dict[str, dict]:
    """{file stem: JSON object} for per-stage metrics files; a missing or bad file is an error."""
    out = {}
    for p in map(Path, paths):
        if not p.exists():
            raise DataError(f"{p}: stage metrics file not found")
        try:
            out[p.stem] = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: not valid JSON ({e})") from e
    return out


def detection_frame(det: Detections, subject: str, action: str, camera: str, frame: int
                    ) -> tuple[dict, np.ndarray, np.ndarray]:
    """The detections row nearest to (subject, action, camera, frame) -> (key, kp (J,2), scores (J,)).

    Falls back to the same sequence on any camera, then to the first row of the file.
    """
    keys = det.keys
    if len(keys) == 0:
        raise DataError(f"{det.path}: no rows")
    same = (keys["subject"] == subject) & (keys["action"] == action)
    pick = same & (keys["camera"] == camera) if camera else same
    cand = keys[pick] if pick.any() else (keys[same] if same.any() else keys)
    i = int((cand["frame"] - frame).abs().idxmin())
    return keys.iloc[i].to_dict(), det.keypoints[i], det.scores[i]


def skeleton_video(results: Seq[MethodResult], gt: GroundTruth, det: Detections | None,
                   videos_dir: str | Path | None, subject: str, action: str, camera: str, method: str,
                   out: str | Path) -> Path:
    """The 3D skeleton video of one sequence seen by one camera (mp4, every frame of it): the
    camera's frames with the 2D detections (the ground truth's projection without a detections
    file) beside ``method``'s 3D in the world frame, drawn by the footage route's
    :func:`pose3d.tasks.footage.render.render_video`. Missing video: black frames."""
    from pose3d.tasks.footage.render import render_video
    from pose3d.viz import up_axis

    by = {r.method: r for r in results}
    if method not in by:
        raise DataError(f"evaluate.video_method = {method!r}: no such predictions (have: {', '.join(by)})")
    seq = gt.sequence(subject, action)
    cam = gt.cameras.get(subject, {}).get(camera)
    if cam is None:
        raise DataError(f"evaluate.video_sequence: {subject} has no camera {camera!r} "
                        f"(have: {', '.join(gt.cameras.get(subject, {}))})")
    T = len(seq.positions_world)
    r = by[method]
    f = r.frames
    sel = (f["subject"] == subject) & (f["action"] == action) & f["valid"]
    if r.coord_frame == "camera":
        sel &= f["camera"] == camera
    rows = f.loc[sel]
    if rows.empty:
        raise DataError(f"evaluate.video_sequence: {method} has no valid frame of {subject}/{action}/{camera}")
    world = np.full((T, NUM_JOINTS, 3), np.nan)
    world[rows["frame"].to_numpy()] = r.aligned_world[rows.index.to_numpy()]
    pts, scores = np.full((T, NUM_JOINTS, 2), np.nan), np.zeros((T, NUM_JOINTS))
    if det is not None:
        rows = det.sequences().get((subject, action, camera), np.zeros(0, np.int64))
        frames = det.keys["frame"].to_numpy()[rows]
        pts[frames], scores[frames] = det.keypoints[rows], det.scores[rows]
    else:
        pts, scores = gt.view(seq, camera).pixels.astype(np.float64), np.ones((T, NUM_JOINTS))
    up = up_axis(seq.positions_world)
    y_up = world if up == 1 else np.stack([world[..., 0], world[..., 2], -world[..., 1]], -1)
    video = video_path(videos_dir, subject, action, cam.name or camera) if videos_dir is not None else None
    if video is not None and not video.exists():
        log.warning("%s: not found; the video's left panel is black", video)
        video = None
    return render_video(out, [video] if video else None, pts[None], scores[None], y_up, fps=float(seq.fps),
                        image_size=[(cam.width, cam.height)], title=f"{subject}/{action} {camera}: {method}",
                        progress=False)


def run_evaluation(*, mocap: str | Path, cameras: str | Path, predictions: Seq[str | Path],
                   detections: str | Path | None, videos_dir: str | Path | None,
                   curves: Seq[str | Path], stage_metrics: Seq[str | Path], metrics_dir: str | Path,
                   plots_dir: str | Path, figures_dir: str | Path, report: str | Path,
                   split: str = "test", pck_threshold: float = 0.150, auc_max: float = 0.150,
                   auc_steps: int = 31, joint_subset: Seq[str] = (), subset_name: str = "subset",
                   gif_frames: int = 30, gif_step: int = 2, gif_fps: float = 10.0, gif_dpi: int = 50,
                   video: str | Path | None = None, video_sequence: str = "", video_method: str = "temporal",
                   device: str | torch.device = "cpu") -> dict:
    """Evaluate every predictions file and write metrics (``metrics_dir/<method>.json``, the
    headline numbers of each method), plot tables, figures and the report.

    ``video``: also write the 3D skeleton video (:func:`skeleton_video`) of ``video_sequence``
    ("<subject>/<action>/<camera>"; "" = the animation's sequence and camera) with
    ``video_method``'s 3D. Every input is read (and validated) before anything is written. Returns {"results",
    "metrics", "figures" (name -> path), "flat" (every number, for MLflow)}.
    """
    from pose3d import viz  # matplotlib only when pictures are drawn

    gt = GroundTruth.load(mocap, cameras)
    det = read_detections(detections) if detections is not None else None
    results = evaluate_files(predictions, gt, split=split, pck_threshold=pck_threshold,
                             auc_max=auc_max, auc_steps=auc_steps, joint_subset=joint_subset,
                             subset_name=subset_name, device=device)
    stage_objs = load_stage_metrics(stage_metrics)
    for c in curves:
        if not Path(c).exists():
            raise DataError(f"{c}: training curves file not found")

    figures_dir, plots_dir, report = Path(figures_dir), Path(plots_dir), Path(report)
    figs = {k: figures_dir / v for k, v in FIGURES.items()}
    mj = metrics_json(results)
    ref = [r.method for r in results if r.coord_frame == "reference_camera"]
    viz.bar_methods(mj, figs["methods"], marked=ref)
    pa, pj = per_action_table(results), per_joint_table(results)
    viz.bar_grouped(pa, "action", figs["per_action"], title="MPJPE per action (P1)")
    viz.bar_grouped(pj, "joint", figs["per_joint"], title="MPJPE per joint (P1, root-aligned)")
    subj, act, cam, frames, gt_w, poses = display_sequence(results, gt, gif_frames, gif_step)
    viz.animate_skeletons(gt_w, poses, figs["skeletons"], fps=gif_fps, dpi=gif_dpi,
                          title=f"{subj}/{act}", frame_labels=frames)
    _detections_figure(viz, gt, det, videos_dir, subj, act, cam, int(frames[len(frames) // 2]),
                       figs["detections"])
    viz.plot_curves(list(curves), figs["curves"])
    if video is not None:
        vs = video_sequence.split("/") if video_sequence else [subj, act, cam or next(iter(gt.cameras[subj]))]
        skeleton_video(results, gt, det, videos_dir, *vs, video_method, video)
        figs["video"] = Path(video)

    with_atomic_csv(pa, plots_dir / "per_action.csv")
    with_atomic_csv(pj, plots_dir / "per_joint.csv")
    captions = {
        "Error per method (mm; frame-wise)": figs["methods"],
        "MPJPE per action and method": figs["per_action"],
        "MPJPE per joint and method": figs["per_joint"],
        "Ground truth and every method, one test sequence": figs["skeletons"],
        "2D detections on a video frame (left blue, right red; ground truth white dots)": figs["detections"],
        "Training curves": figs["curves"],
    }
    rel = {c: os.path.relpath(p, report.parent) for c, p in captions.items()}
    detect = next((v for k, v in stage_objs.items() if k == "detect_2d"), None)
    md = render_report(results, gt, split=split, pck_threshold=pck_threshold, figures=rel,
                       stage_metrics={k: v for k, v in stage_objs.items() if k != "detect_2d"},
                       detect_2d=detect, subset_name=subset_name, joint_subset=joint_subset,
                       display=(subj, act, cam, frames))
    with atomic_path(report) as tmp:
        tmp.write_text(md)
    for method, numbers in mj.items():  # last: DVC's metrics appear only when everything else is there
        write_json(Path(metrics_dir) / f"{method}.json", numbers)
    return {"results": results, "metrics": mj, "figures": figs, "flat": flat_metrics(results)}


def with_atomic_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")


def _detections_figure(viz, gt: GroundTruth, det: Detections | None, videos_dir, subject: str, action: str,
                       camera: str, frame: int, out: Path) -> None:
    """2D detections (and projected ground truth) on the matching video frame.

    Without a detections file, the ground truth projection is drawn instead; without a readable
    video, a grey canvas of the camera's size is used. Either case is written on the picture.
    """
    note = []
    if det is not None:
        key, kp, scores = detection_frame(det, subject, action, camera, frame)
        subject, action, camera, frame = key["subject"], key["action"], key["camera"], int(key["frame"])
    else:
        kp, scores = None, None
        note.append("no detections: ground truth projection")
    cams = gt.cameras.get(subject, {})
    cam_name = camera if camera in cams else next(iter(cams), None)
    cam = cams[cam_name] if cam_name is not None else None
    gt_kp = gt.view(gt.sequence(subject, action), cam_name).pixels[frame] if cam is not None else None
    img = None
    if videos_dir is not None and cam is not None:
        try:
            img = viz.read_video_frame(video_path(videos_dir, subject, action, cam.name or camera), frame)
        except DataError as e:
            log.warning("%s; drawing on a blank canvas", e)
            note.append("video unavailable")
    if img is None:
        w, h = (cam.width, cam.height) if cam is not None else (640, 480)
        img = np.full((h, w, 3), 90, np.uint8)
    if kp is None:
        kp, gt_kp = gt_kp, None
    title = f"{subject}/{action} {camera} frame {frame}" + (f" ({'; '.join(note)})" if note else "")
    viz.overlay_2d(img, kp, out, scores=scores, gt_kp=gt_kp, title=title)


def run_stage(s, paths, tracker) -> str:
    """``evaluate``: :func:`run_evaluation` with the stage's files and the evaluate section."""
    p = s.params
    t0 = time.perf_counter()
    out = run_evaluation(
        mocap=paths.mocap, cameras=paths.cameras, predictions=paths.predictions, detections=paths.detections,
        videos_dir=paths.videos_dir, curves=paths.curves, stage_metrics=paths.stage_metrics,
        metrics_dir=paths.metrics_dir, plots_dir=paths.plots_dir, figures_dir=paths.figures_dir,
        report=paths.report, split=p.split, pck_threshold=p.pck_threshold_mm / 1000,
        auc_max=p.auc_max_mm / 1000, auc_steps=p.auc_steps, joint_subset=p.joint_subset,
        subset_name=p.subset_name, gif_frames=p.gif_frames, gif_step=p.gif_step, gif_fps=p.gif_fps,
        gif_dpi=p.gif_dpi, video=paths.video, video_sequence=p.video_sequence, video_method=p.video_method,
        device=s.device)
    tracker.log_metrics({**out["flat"], "seconds": time.perf_counter() - t0})
    for path in [*out["figures"].values(), paths.report, *(f"{paths.metrics_dir}/{m}.json" for m in out["metrics"]),
                 f"{paths.plots_dir}/per_action.csv", f"{paths.plots_dir}/per_joint.csv"]:
        tracker.log_artifact(path)
    return "; ".join(f"{m} MPJPE {v['mpjpe_mm']:.1f} mm, P-MPJPE {v['pa_mpjpe_mm']:.1f} mm"
                     for m, v in out["metrics"].items())
