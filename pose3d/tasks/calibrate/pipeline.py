"""Calibrate a camera rig from board takes and write the project's cameras.json.

Inputs: a *board take* (one video file or image folder per camera, frame k of every camera
filmed at the same instant; the board moved and tilted through the capture volume) and
optionally a *floor take* (the board, or a bigger one, lying still on the floor, printed side
up). A take is a folder holding ``<camera>.<mp4|avi|mkv|mov|webm>`` files or ``<camera>/``
image folders; the camera names come from these names.

Steps: :mod:`.detect` per frame, then :mod:`.solve` (intrinsics per camera, pairwise
extrinsics, bundle adjustment of everything, world frame from the floor take). Without a
floor take the world is the first camera's frame (logged). Bad input raises
:class:`~pose3d.data.io.DataError` naming the camera and file before anything is written:
a board never found, fewer than ``min_views`` views of a camera, a camera that shares no view
with the others, a floor board found by no camera, sources of different frame counts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pose3d.data.boards import BoardSpec
from pose3d.data.io import DataError, save_cameras, write_json
from pose3d.data.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, video_info
from pose3d.geometry.camera import Camera
from pose3d.tasks.calibrate.detect import SourceDetections, detect_source, never_seen_error
from pose3d.tasks.calibrate.solve import (Observations, board_pose, bundle_adjust, calibrate_intrinsics,
                                          initial_extrinsics, world_from_floor)

log = logging.getLogger(__name__)


@dataclass
class Calibration:
    cameras: dict[str, Camera]
    report: dict  # per camera: views, RMS px; bundle adjustment: time, evaluations, costs


def take_sources(take: str | Path) -> dict[str, Path]:
    """{camera: video file or image folder} of a take folder (sorted by name)."""
    take = Path(take)
    if not take.is_dir():
        raise DataError(f"{take}: take folder not found (expected one video or image folder per camera)")
    out: dict[str, Path] = {}
    for p in sorted(take.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() and any(q.suffix.lower() in IMAGE_EXTENSIONS for q in p.iterdir()):
            name = p.name
        elif p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            name = p.stem
        else:
            continue
        if name in out:
            raise DataError(f"{take}: camera {name} has two sources ({out[name].name}, {p.name})")
        out[name] = p
    if not out:
        raise DataError(f"{take}: no videos ({', '.join(VIDEO_EXTENSIONS)}) or image folders in the take folder")
    return out


#: vertical stretches tried on the floor take (a board lying on the floor, seen from a few
#: metres at head height, is foreshortened 2-4x)
FLOOR_STRETCH = (1.0, 2.5, 4.0)


def detect_take(sources: dict[str, Path], board: BoardSpec, stride: int = 1, min_corners: int = 6,
                desc: str = "detect", stretch_y: tuple[float, ...] = (1.0,)) -> dict[str, SourceDetections]:
    """Detect ``board`` in every camera's source; all sources must hold as many frames."""
    infos = {c: video_info(p) for c, p in sources.items()}
    counts = {c: i.num_frames for c, i in infos.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"take sources differ in frame count ({counts}): frame k of every camera must "
                        "show the same instant")
    total = sum((n + stride - 1) // stride for n in counts.values())
    out = {}
    with tqdm(total=total, desc=desc, unit="frame", disable=None) as bar:
        for c, p in sources.items():
            out[c] = detect_source(p, board, stride, min_corners, progress=bar.update, stretch_y=stretch_y)
            log.info("%s: camera %s: board in %d of %d frames", desc, c, len(out[c].ids), out[c].frames_read)
    return out


def _floor_view(det: SourceDetections) -> tuple[np.ndarray, np.ndarray] | None:
    """A still board: the mean pixel of each corner over the frames (corners seen in at least
    half of the frames where the board was found)."""
    if not det.ids:
        return None
    acc: dict[int, list[np.ndarray]] = {}
    for k, ids in det.ids.items():
        for i, uv in zip(ids, det.uv[k]):
            acc.setdefault(int(i), []).append(uv)
    n = len(det.ids)
    ids = np.array(sorted(i for i, v in acc.items() if 2 * len(v) >= n))
    if len(ids) < 4:
        return None
    return ids, np.array([np.mean(acc[i], axis=0) for i in ids])


def calibrate_detections(dets: dict[str, SourceDetections], board: BoardSpec,
                         floor: dict[str, SourceDetections] | None = None,
                         floor_board: BoardSpec | None = None,
                         floor_offset: tuple[float, float] = (0.0, 0.0), min_views: int = 10,
                         max_intrinsic_views: int = 60, loss: str = "huber", f_scale_px: float = 1.0
                         ) -> Calibration:
    """Corners per camera (and of the floor take) -> calibrated cameras and a report."""
    names = list(dets)
    if len(names) < 1:
        raise DataError("no cameras to calibrate")
    floor_board = floor_board or board
    obj_all = board.object_points()
    for c in names:
        d = dets[c]
        if not d.ids:
            raise never_seen_error(c, d, board)
        if len(d.ids) < min_views:
            raise DataError(f"camera {c} ({d.path}): board found in {len(d.ids)} of {d.frames_read} frames, "
                            f"fewer than the {min_views} views a calibration needs (min_views); film the "
                            "board in more places and tilts in front of this camera")
    # 1. intrinsics and per-view board poses
    intr, poses, report = {}, {}, {"cameras": {}}
    frames = sorted({k for d in dets.values() for k in d.ids})
    view_of = {k: i for i, k in enumerate(frames)}
    for ci, c in enumerate(names):
        d = dets[c]
        ks = sorted(d.ids)
        it = calibrate_intrinsics([obj_all[d.ids[k]] for k in ks], [d.uv[k] for k in ks], (d.width, d.height),
                                  max_intrinsic_views)
        intr[c] = it
        for k in ks:
            poses[(ci, view_of[k])] = board_pose(obj_all[d.ids[k]], d.uv[k], it.K, it.dist)
        report["cameras"][c] = {"source": str(d.path), "frames_read": d.frames_read, "board_views": len(ks),
                                "intrinsics_views": it.views_used, "intrinsics_rms_px": it.rms_px}
        log.info("camera %s: intrinsics from %d views, RMS %.3f px", c, it.views_used, it.rms_px)
    # the floor take: one more view, with its own board
    floor_view = None
    floor_obs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if floor is not None:
        for ci, c in enumerate(names):
            if c in floor and (fv := _floor_view(floor[c])) is not None:
                floor_obs[ci] = fv
        if not floor_obs:
            paths = ", ".join(f"{c}: {d.path}" for c, d in floor.items())
            raise DataError(f"floor take: board {floor_board} found by no camera ({paths}); the world frame "
                            "needs it seen by at least one camera")
        floor_view = len(frames)
        fobj = floor_board.object_points()
        for ci, (ids, uv) in floor_obs.items():
            c = names[ci]
            poses[(ci, floor_view)] = board_pose(fobj[ids], uv, intr[c].K, intr[c].dist)
            report["cameras"][c]["floor_corners"] = int(len(ids))
    # 2. pairwise extrinsics, chained to camera 0
    R0, t0, counts = initial_extrinsics(poses, len(names), 0, names)
    report["pairs"] = {f"{names[a]}-{names[b]}": n for (a, b), n in counts.items()}
    n_views = len(frames) + (floor_view is not None)
    bR, bt = np.zeros((n_views, 3, 3)), np.zeros((n_views, 3))
    best: dict[int, tuple[int, int]] = {}
    for (ci, v), _ in poses.items():
        n = len(floor_obs[ci][0]) if v == floor_view else len(dets[names[ci]].ids[frames[v]])
        if v not in best or n > best[v][1]:
            best[v] = (ci, n)
    for v, (ci, _) in best.items():
        Rcb, tcb = poses[(ci, v)]
        bR[v] = R0[ci].T @ Rcb  # board -> camera -> reference
        bt[v] = R0[ci].T @ (tcb - t0[ci])
    # 3. bundle adjustment over every observation
    cam_i, view_i, objs, uvs = [], [], [], []
    for ci, c in enumerate(names):
        d = dets[c]
        for k in sorted(d.ids):
            cam_i.append(np.full(len(d.ids[k]), ci)); view_i.append(np.full(len(d.ids[k]), view_of[k]))
            objs.append(obj_all[d.ids[k]]); uvs.append(d.uv[k])
    for ci, (ids, uv) in floor_obs.items():
        cam_i.append(np.full(len(ids), ci)); view_i.append(np.full(len(ids), floor_view))
        objs.append(floor_board.object_points()[ids]); uvs.append(uv)
    obs = Observations(np.concatenate(cam_i), np.concatenate(view_i), np.concatenate(objs), np.concatenate(uvs))
    K0 = np.stack([intr[c].K for c in names])
    d0 = np.stack([intr[c].dist for c in names])
    log.info("bundle adjustment: %d cameras, %d board views, %d corner observations", len(names), n_views, len(obs.cam))
    ba = bundle_adjust(obs, R0, t0, K0, d0, bR, bt, ref=0, loss=loss, f_scale_px=f_scale_px)
    err = np.linalg.norm(ba.residuals, axis=-1)
    for ci, c in enumerate(names):
        m = obs.cam == ci
        rep = report["cameras"][c]
        rep["observations"] = int(m.sum())
        rep["rms_px"] = float(np.sqrt(np.mean(np.sum(ba.residuals[m] ** 2, -1))))
        rep["max_px"] = float(err[m].max())
        log.info("camera %s: bundle-adjusted reprojection RMS %.3f px over %d corners (max %.2f)",
                 c, rep["rms_px"], rep["observations"], rep["max_px"])
    report["bundle_adjustment"] = {"seconds": ba.seconds, "nfev": ba.nfev, "cost_initial": ba.cost_initial,
                                   "cost_final": ba.cost_final, "board_views": n_views,
                                   "observations": int(len(obs.cam)), "loss": loss, "f_scale_px": f_scale_px}
    # 4. world frame
    if floor_view is not None:
        R, t = world_from_floor(ba.R, ba.t, ba.board_R[floor_view], ba.board_t[floor_view], floor_offset)
        report["world"] = {"frame": "floor board", "offset_xy_m": list(floor_offset), "board": str(floor_board)}
    else:
        R, t = ba.R, ba.t
        report["world"] = {"frame": f"camera {names[0]}"}
        log.info("no floor take: the world frame is camera %s's frame", names[0])
    cams = {c: Camera(K=ba.K[ci], dist=ba.dist[ci], R=R[ci], t=t[ci], width=dets[c].width,
                      height=dets[c].height, name=c) for ci, c in enumerate(names)}
    return Calibration(cams, report)


def run(board_take: str | Path, board: BoardSpec, out: str | Path, floor_take: str | Path | None = None,
        floor_board: BoardSpec | None = None, floor_offset: tuple[float, float] = (0.0, 0.0),
        subjects: list[str] | None = None, report_out: str | Path | None = None, stride: int = 1,
        min_views: int = 10, max_intrinsic_views: int = 60) -> Calibration:
    """Detect, calibrate and write ``out`` (cameras.json: the rig under each of ``subjects``,
    default ``["rig"]``) and optionally ``report_out`` (JSON). Writes nothing on error."""
    t0 = time.perf_counter()
    sources = take_sources(board_take)
    floor = None
    if floor_take is not None:  # first: it is short, and a floor board nobody sees fails early
        fs = take_sources(floor_take)
        missing = sorted(set(fs) - set(sources))
        if missing:
            raise DataError(f"{floor_take}: camera(s) {missing} are not in the board take {board_take}")
        floor = detect_take(fs, floor_board or board, 1, desc="floor take", stretch_y=FLOOR_STRETCH)
        if not any(d.ids for d in floor.values()):
            paths = ", ".join(f"{c}: {d.path}" for c, d in floor.items())
            raise DataError(f"floor take: board {floor_board or board} found by no camera ({paths}); the "
                            "world frame needs it seen by at least one camera")
    dets = detect_take(sources, board, stride, desc="board take")
    cal = calibrate_detections(dets, board, floor, floor_board, floor_offset, min_views, max_intrinsic_views)
    cal.report["board"] = str(board)
    cal.report["seconds"] = time.perf_counter() - t0
    save_cameras(out, {s: cal.cameras for s in (subjects or ["rig"])})
    if report_out:
        write_json(report_out, cal.report)
    log.info("wrote %s (%d cameras)%s", out, len(cal.cameras), f" and {report_out}" if report_out else "")
    return cal


def format_report(report: dict) -> str:
    """A short table of the per-camera RMS for the terminal."""
    lines = [f"{'camera':>12} {'views':>6} {'corners':>8} {'RMS px':>7} {'max px':>7}"]
    for c, r in report["cameras"].items():
        lines.append(f"{c:>12} {r['board_views']:>6} {r['observations']:>8} {r['rms_px']:>7.3f} {r['max_px']:>7.2f}")
    ba = report["bundle_adjustment"]
    lines.append(f"bundle adjustment: {ba['board_views']} board views, {ba['observations']} corners, "
                 f"{ba['nfev']} evaluations, {ba['seconds']:.1f} s")
    return "\n".join(lines)

