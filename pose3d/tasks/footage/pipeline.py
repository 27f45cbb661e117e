"""``infer``: a user's 1..N videos (or 2D keypoints from another tool) -> 3D poses and exports.

    from pose3d.tasks.footage import infer
    res = infer(["clip.mp4"], "out/")                                  # one camera
    res = infer(["c1.mp4", "c2.mp4"], "out/", cameras="cameras.json")  # calibrated cameras

Routes:
* **one view**: person boxes -> 2D (``detector``: the studio-trained pose_resnet in background-
  subtraction boxes, :mod:`.detect`, or BlazePose with its own person detector, :mod:`.blazepose`)
  or ``keypoints`` ->
  the temporal lifter (:mod:`.lift`): root-relative 3D + root trajectory, in the camera frame
  (``coord_frame`` camera), or in the world frame when ``cameras`` calibrates that one view;
* **N >= 2 views** with ``cameras``: 2D per view -> RANSAC triangulation over views with
  Levenberg-Marquardt refinement (:func:`pose3d.geometry.triangulation.triangulate`, as
  triangulate@ransac), world frame of cameras.json; a joint RANSAC finds no consensus for takes
  the score-weighted DLT of the views that saw it (counted in summary.json). Then, once: with
  pose_resnet, 2D again in boxes from the reprojected 3D; with BlazePose, left and right exchanged
  in the frames of a view where the reprojected 3D says so (:func:`mirror_to_agree`); and RANSAC again.

Cameras: a pose3d ``cameras.json`` (``{"subjects": {<subject>: {<camera>: {K, dist, R, t, width,
height}}}}``) with one subject (or name it: ``subject``). Views are matched to cameras by name
when each camera name occurs in exactly one video's file name, else in the order given
(then the counts must agree). A mismatch is an error naming cameras.json.

Outputs (``out``, built in a temporary sibling and renamed at the end, so a failure leaves no
half-written folder): ``poses_3d.parquet`` (:func:`pose3d.data.contracts.write_predictions`:
subject "footage", action = the first input's stem, joints in metres, NaN where fewer than
two views saw a joint), ``keypoints_2d.parquet`` (the 2D per view, detections contract),
``poses_3d.bvh`` / ``.trc`` / ``.c3d`` (Y up, :mod:`.exports`; gaps interpolated for the BVH),
``poses_3d_vp3d.npz``, ``skeleton.mp4`` + ``skeleton.png`` (its middle frame) and
``summary.json`` (inputs, camera model used, frames, timings).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from pose3d.data.contracts import write_detections, write_predictions
from pose3d.data.crops import median_background, square_box
from pose3d.data.io import DataError, atomic_dir, load_cameras, write_json
from pose3d.data.video import IMAGE_EXTENSIONS, VideoError, iter_frames, video_info
from pose3d.geometry.camera import Camera, stack_cameras
from pose3d.geometry.triangulation import triangulate
from pose3d.runtime.train import resolve_device
from pose3d.skeleton import FLIP_PERM, JOINT_NAMES
from pose3d.tasks.footage import exports
from pose3d.tasks.footage.blazepose import BlazePose, blazepose_video
from pose3d.tasks.footage.detect import Keypoints2D, detect_in_boxes, detect_video
from pose3d.tasks.footage.keypoints import read_keypoints
from pose3d.tasks.footage.lift import fill_gaps, lift_view, load_temporal, user_intrinsics
from pose3d.tasks.footage.render import render_video
from pose3d.tasks.pose2d import load_model

log = logging.getLogger(__name__)

#: the models of a clone of this repository (after `dvc repro` / `dvc pull`)
REPO_MODELS = Path(__file__).resolve().parents[3] / "models"
EXPORTS = ("parquet", "bvh", "trc", "c3d", "npz")
#: the 2D detectors for videos (``infer(detector=...)``, ``p3d infer --detector``); the first is the default
DETECTORS = ("pose_resnet", "blazepose")


@dataclass
class FootageResult:
    """What :func:`infer` made: ``joints`` (T, J, 3) metres in ``coord_frame`` (NaN = declined),
    ``points_2d`` (V, T, J, 2) px and ``scores_2d`` (V, T, J), ``fps``, ``views`` (names), the files
    written (name -> path) and ``timings`` (seconds per step)."""

    joints: np.ndarray
    coord_frame: str
    points_2d: np.ndarray
    scores_2d: np.ndarray
    fps: float
    views: list[str]
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    root: np.ndarray | None = None  # (T, 3) camera-frame root trajectory (one view)


# --------------------------------------------------------------------------- cameras
def match_cameras(cameras_path: str | Path, views: Sequence[str], subject: str | None = None) -> list[Camera]:
    """The camera of each view (file names / stems) from a cameras.json (module docstring)."""
    rig = load_cameras(cameras_path)
    if not rig:
        raise DataError(f"{cameras_path}: no cameras")
    if subject is None:
        if len(rig) > 1:
            raise DataError(f"{cameras_path}: holds subjects {sorted(rig)}; choose one (--subject)")
        subject = next(iter(rig))
    if subject not in rig:
        raise DataError(f"{cameras_path}: no subject {subject!r} (has {sorted(rig)})")
    cams = rig[subject]
    names = sorted(cams)
    by_name = {}
    for n in names:
        hits = [i for i, v in enumerate(views) if n in Path(v).name]
        if len(hits) == 1:
            by_name[hits[0]] = n
    if len(by_name) == len(views) and len(set(by_name.values())) == len(views):
        return [cams[by_name[i]] for i in range(len(views))]
    if len(names) != len(views):
        raise DataError(f"{cameras_path}: {len(names)} cameras ({', '.join(names)}) for subject {subject} but "
                        f"{len(views)} views given, and the camera names do not match the file names")
    return [cams[n] for n in names]


def _check_size(cam: Camera, width: int, height: int, where: str, cameras_path) -> None:
    if (int(cam.width), int(cam.height)) != (int(width), int(height)):
        raise DataError(f"{where}: frames are {width}x{height} but {cameras_path} says {cam.width}x{cam.height} "
                        f"for camera {cam.name}")


# --------------------------------------------------------------------------- 2D
def background_from(sources: Sequence[str | Path], frames_per_source: int = 25) -> np.ndarray:
    """Median (H, W, 3) RGB of images / videos of the empty scene (or of other clips filmed by the
    same static camera: the person moves between them)."""
    frames = []
    for s in sources:
        s = Path(s)
        if s.suffix.lower() in IMAGE_EXTENSIONS:
            img = cv2.imread(str(s), cv2.IMREAD_COLOR)
            if img is None:
                raise VideoError(f"{s}: unreadable background image")
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            continue
        info = video_info(s)
        keep = set(np.linspace(0, info.num_frames - 1, min(frames_per_source, info.num_frames)).round().astype(int))
        frames += [img for k, img in iter_frames(s) if k in keep]
    return median_background(frames)


def mirror_to_agree(points: np.ndarray, scores: np.ndarray, reference: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exchange left and right joints (:data:`pose3d.skeleton.FLIP_PERM`) in the frames of one view
    where the exchanged 2D lies nearer ``reference`` (the 3D reprojected into that view) than the
    2D as detected, mean over the joints finite in both. points, reference (T, J, 2); scores
    (T, J) -> (points, scores, mirrored (T,) bool)."""
    perm = list(FLIP_PERM)

    def dist(p):
        d = np.linalg.norm(p - reference, axis=-1)
        ok = np.isfinite(d)
        return np.where(ok, d, 0).sum(1) / np.maximum(ok.sum(1), 1), ok.any(1)

    d0, ok0 = dist(points)
    d1, _ = dist(points[:, perm])
    m = ok0 & (d1 < d0)
    p, s = points.copy(), scores.copy()
    p[m], s[m] = points[m][:, perm], scores[m][:, perm]
    return p, s, m


def _imported_2d(path, video, image_size, fps) -> Keypoints2D:
    size = None
    vfps = 0.0
    if video is not None:
        info = video_info(video)
        size, vfps = (info.width, info.height), info.fps
    elif image_size is not None:
        size = tuple(int(v) for v in image_size)
    pts, sc, fmt = read_keypoints(path, size)
    if size is None:
        finite = pts[np.isfinite(pts).all(-1)]
        raise DataError(f"{path}: the image size is needed for lifting; give the video or --image-size W H "
                        f"(keypoints span x {finite[:, 0].min():.0f}..{finite[:, 0].max():.0f} px)")
    log.info("%s: %d frames of %s keypoints", path, len(pts), fmt)
    return Keypoints2D(pts, sc, np.full((len(pts), 4), np.nan), size[0], size[1], fps or vfps, f"{fmt}: {path}")


# --------------------------------------------------------------------------- the command
def infer(videos: Sequence[str | Path] = (), out: str | Path = "footage_out", *,
          keypoints: Sequence[str | Path] = (), cameras: str | Path | None = None, subject: str | None = None,
          focal: float | None = None, image_size: tuple[int, int] | None = None, fps: float | None = None,
          background: Sequence[str | Path] = (), pose2d_dir: str | Path | None = None,
          lifter_dir: str | Path | None = None, device: str = "auto", refine_boxes: int = 2,
          ransac_threshold_px: float = 15.0, score_threshold: float = 0.2, view_boxes: bool = True, max_frames: int | None = None,
          export: Sequence[str] = EXPORTS, video: bool = True, progress: bool = True,
          detector: str = "pose_resnet") -> FootageResult:
    """Videos (or keypoint files, one per view) -> 3D and the exports in ``out`` (module docstring).

    ``background``: images / videos of each view's empty scene (one per view; person boxes by
    background subtraction need it when the person hardly moves in the clip); ``focal``: the
    focal length in px of a single uncalibrated view (else assumed, :mod:`.lift`);
    ``image_size``/``fps``: for keypoints without a video; ``max_frames``: only the first frames;
    ``detector``: the 2D of videos, "pose_resnet" (the studio-trained model in background-subtraction
    boxes, :mod:`.detect`) or "blazepose" (its own person detector and tracking, :mod:`.blazepose`;
    ``background`` and ``refine_boxes`` are not used).
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    videos = [Path(v) for v in videos]
    keypoints = [Path(k) for k in keypoints]
    bad = [e for e in export if e not in EXPORTS]
    if bad:
        raise DataError(f"export {bad}: unknown (choose from {', '.join(EXPORTS)})")
    if keypoints and videos and len(keypoints) != len(videos):
        raise DataError(f"{keypoints[0]}: {len(keypoints)} keypoint file(s) for {len(videos)} video(s); give one per view")
    V = len(keypoints) or len(videos)
    if V == 0:
        raise DataError("no input: give one or more videos, or --keypoints files")
    if detector not in DETECTORS:
        raise DataError(f"detector {detector!r}: unknown (choose from {', '.join(DETECTORS)})")
    names = [p.stem for p in (videos or keypoints)]
    if len(set(names)) < V:
        names = [f"view{k}_{n}" for k, n in enumerate(names)]
    if background and len(background) not in (1, V):
        raise DataError(f"{background[0]}: {len(background)} background source(s) for {V} view(s)")
    cams = match_cameras(cameras, [str(p) for p in (videos or keypoints)], subject) if cameras else None
    if V > 1 and cams is None:
        raise DataError(f"{(videos or keypoints)[0]}: {V} views need calibrated cameras (--cameras cameras.json)")
    for v in videos:  # fail on an unreadable video before any work
        video_info(v)
    dev = resolve_device(device)

    # ---- 2D per view
    ts = time.perf_counter()
    views: list[Keypoints2D] = []
    if keypoints:
        for k, kp in enumerate(keypoints):
            views.append(_imported_2d(kp, videos[k] if videos else None, image_size, fps))
    elif detector == "blazepose":
        if background or refine_boxes != 2:
            log.warning("--detector blazepose finds the person itself: --background / --refine-boxes are not used")
        bp = BlazePose(threads=torch.get_num_threads())  # a DataError naming `p3d fetch-models` without weights
        for v in videos:
            views.append(blazepose_video(v, max_frames=max_frames, progress=progress, model=bp))
    else:
        model, cfg = load_model(Path(pose2d_dir or REPO_MODELS / "pose2d"), str(dev))
        for k, v in enumerate(videos):
            bg = None
            if background:
                bg = background_from([background[k if len(background) == V else 0]])
            views.append(detect_video(model, v, crop_size=int(cfg["input_size"]), refine=refine_boxes,
                                      max_frames=max_frames, progress=progress, background=bg))
    timings["2d_s"] = time.perf_counter() - ts
    if cams is not None:
        for k, kv in enumerate(views):
            _check_size(cams[k], kv.width, kv.height, str((videos or keypoints)[k]), cameras)
    T = min(len(kv.points_px) for kv in views)
    if max_frames:
        T = min(T, max_frames)
    if len({len(kv.points_px) for kv in views}) > 1:
        log.warning("views hold %s frames; using the first %d of each", [len(kv.points_px) for kv in views], T)
    pts2d = np.stack([kv.points_px[:T] for kv in views]).astype(np.float64)  # (V, T, J, 2)
    sc2d = np.stack([kv.scores[:T] for kv in views]).astype(np.float64)      # (V, T, J)
    rate = float(fps or views[0].fps or 30.0)

    # ---- 3D
    ts = time.perf_counter()
    root = None
    meta: dict = {"views": names, "inputs": [str(p) for p in (videos or keypoints)],
                  "detector_2d": "imported" if keypoints else detector}
    if V == 1:
        filled, _ = fill_gaps(pts2d[0], str((videos or keypoints)[0]))
        if cams is not None:
            K, dist = cams[0].K, cams[0].dist
        else:
            K, dist = user_intrinsics(views[0].width, views[0].height, focal), None
        lifter = load_temporal(Path(lifter_dir or REPO_MODELS / "temporal"))
        pose, root = lift_view(lifter, filled, K, dist, device=str(dev))
        joints = pose + root[:, None]                                  # camera frame, metres
        coord = "camera"
        meta.update({"method": "footage_temporal", "K": np.asarray(K).tolist(),
                     "focal_px": float(K[0, 0]), "focal_source": "cameras" if cams else ("given" if focal else "assumed")})
        if cams is not None:
            R, t = np.asarray(cams[0].R), np.asarray(cams[0].t)
            joints = (joints - t) @ R  # x_world = R^T (x_cam - t)
            coord = "world"
    else:
        rig = stack_cameras(cams)

        def ransac(pts2d, sc2d):
            uv, sc = torch.as_tensor(pts2d.transpose(1, 0, 2, 3)), torch.as_tensor(sc2d.transpose(1, 0, 2))
            X = triangulate(uv, rig, sc, method="ransac", score_threshold=score_threshold, weighted=True,
                            refine=True, ransac_threshold_px=ransac_threshold_px).points_3d.numpy()
            return X, uv, sc

        joints, uv, sc = ransac(pts2d, sc2d)
        if videos and not keypoints and view_boxes and detector == "pose_resnet":
            # the views agree where their boxes were right: boxes from the 3D's reprojection fix
            # a view whose background box missed the person, then 2D and triangulation again
            ts2 = time.perf_counter()
            for v in range(V):
                proj = cams[v].project(np.where(np.isfinite(joints), joints, np.nan))  # (T, J, 2)
                boxes = square_box(proj, 0.25)
                ok = np.isfinite(boxes).all(1)
                if ok.any():
                    boxes = np.where(ok[:, None], boxes, views[v].boxes[:T])
                    p, s = detect_in_boxes(model, videos[v], boxes, int(cfg["input_size"]), 32, progress,
                                           f"2d (boxes from 3D, view {v + 1})")
                    pts2d[v], sc2d[v] = p, s
            timings["2d_s"] += time.perf_counter() - ts2
            joints, uv, sc = ransac(pts2d, sc2d)
        elif videos and not keypoints and view_boxes:
            # BlazePose turns some views' people front to back (left and right exchanged): the
            # reprojected 3D of the views that agree says which side is which, then triangulate again
            swapped = 0
            for v in range(V):
                proj = cams[v].project(np.where(np.isfinite(joints), joints, np.nan))
                pts2d[v], sc2d[v], m = mirror_to_agree(pts2d[v], sc2d[v], proj)
                swapped += int(m.sum())
            meta["views_mirrored_frac"] = swapped / (V * T)
            joints, uv, sc = ransac(pts2d, sc2d)
        declined = ~np.isfinite(joints).all(-1)
        if declined.any():  # no consensus: the score-weighted DLT of every view that saw the joint
            dlt = triangulate(uv, rig, sc, method="dlt", score_threshold=score_threshold, weighted=True,
                              refine=True).points_3d.numpy()
            joints = np.where(declined[..., None], dlt, joints)
        coord = "world"
        meta.update({"method": "footage_triangulate_ransac", "ransac_threshold_px": ransac_threshold_px,
                     "score_threshold": score_threshold, "cameras": [c.name for c in cams],
                     "ransac_declined_joint_frac": float(declined.mean()),
                     "missing_joint_frac": float((~np.isfinite(joints).all(-1)).mean())})
    timings["3d_s"] = time.perf_counter() - ts
    result = FootageResult(joints.astype(np.float32), coord, pts2d.astype(np.float32), sc2d.astype(np.float32),
                           rate, names, root=root)

    # ---- files, all in a temporary folder renamed at the end
    ts = time.perf_counter()
    out = Path(out)
    with atomic_dir(out) as tmp:
        files = write_outputs(tmp, result, meta, export=export, videos=videos if video else None,
                              render=video, image_size=[(kv.width, kv.height) for kv in views], progress=progress)
        timings["write_s"] = time.perf_counter() - ts
        timings["total_s"] = time.perf_counter() - t0
        summary = {**meta, "frames": T, "fps": rate, "coord_frame": coord, "timings": timings,
                   "frames_per_s": T / max(timings["total_s"], 1e-9), "sources_2d": [kv.source for kv in views]}
        write_json(tmp / "summary.json", summary)
    result.files = {k: out / p.name for k, p in files.items()} | {"summary": out / "summary.json"}
    result.timings = timings
    return result


def write_outputs(folder: Path, r: FootageResult, meta: dict, *, export: Sequence[str], videos, render: bool,
                  image_size, progress: bool) -> dict[str, Path]:
    """Every export of ``r`` into ``folder`` -> {kind: path}."""
    T = len(r.joints)
    files: dict[str, Path] = {}
    action = Path(meta["inputs"][0]).stem
    keys2d = pd.DataFrame({"subject": "footage", "action": action, "camera": np.repeat(r.views, T),
                           "frame": np.tile(np.arange(T), len(r.views))})
    write_detections(folder / "keypoints_2d.parquet", keys2d, r.points_2d.reshape(-1, len(JOINT_NAMES), 2),
                     r.scores_2d.reshape(-1, len(JOINT_NAMES)), meta={"image_size": {n: list(s) for n, s in zip(r.views, image_size)}})
    files["keypoints_2d"] = folder / "keypoints_2d.parquet"
    filled, _ = fill_gaps(r.joints, "the 3D predictions")
    R_up = exports.y_up_rotation(filled)
    y_up = filled @ R_up.T
    y_up_raw = r.joints @ R_up.T  # NaN kept: TRC leaves them blank, C3D marks them invalid
    if "parquet" in export:
        cam = r.views[0] if r.coord_frame == "camera" else ""
        extra = {"root_3d": (r.root, "camera-frame root trajectory, m")} if r.root is not None else None
        write_predictions(folder / "poses_3d.parquet", {"subject": ["footage"] * T, "action": [action] * T,
                                                         "camera": [cam] * T, "frame": np.arange(T)},
                          r.joints, method=meta["method"], coord_frame=r.coord_frame, root_relative=False,
                          extra_columns=extra, meta={"fps": r.fps, "views": r.views})
        files["parquet"] = folder / "poses_3d.parquet"
    if "bvh" in export:
        exports.write_bvh(folder / "poses_3d.bvh", y_up, r.fps)
        files["bvh"] = folder / "poses_3d.bvh"
    if "trc" in export:
        exports.write_trc(folder / "poses_3d.trc", y_up_raw, r.fps)
        files["trc"] = folder / "poses_3d.trc"
    if "c3d" in export:
        exports.write_c3d(folder / "poses_3d.c3d", y_up_raw, r.fps)
        files["c3d"] = folder / "poses_3d.c3d"
    if "npz" in export:
        exports.write_vp3d_npz(folder / "poses_3d_vp3d.npz", r.joints, r.points_2d, r.fps, r.coord_frame,
                               list(image_size), r.views)
        files["npz"] = folder / "poses_3d_vp3d.npz"
    if render:
        render_video(folder / "skeleton.mp4", videos, r.points_2d, r.scores_2d, y_up, r.fps, image_size,
                     title=action, progress=progress, png_frame=folder / "skeleton.png")
        files["video"] = folder / "skeleton.mp4"
        files["png"] = folder / "skeleton.png"
    return files
