"""Human3.6M in its four common third-party layouts -> the studio layout.

Readers (each returns a :class:`Dataset`: world poses in metres, H36M-17 order, cameras in
pose3d's convention ``x_cam = R @ x_world + t``):

* :func:`load_vp3d` -- VideoPose3D's ``data_3d_h36m.npz`` (``positions_3d[subject][action]``
  (T, 32, 3) world metres) and optionally ``data_2d_h36m_<source>.npz``
  (``positions_2d[subject][action]`` = one (T, 17, 2) pixel array per camera). Both are pickled
  dicts: they are only read with ``allow_pickle=True``. Cameras come from a camera file.
* :func:`load_h36m_fetch` -- h36m-fetch's ``processed/<S>/<Action>-<sub>/annot.h5``
  (``pose/3d`` (N, 32, 3) *camera-frame* mm, ``pose/2d``, ``frame`` 1-based, ``camera`` id) with
  images ``imageSequence/<camera>/img_%06d.jpg``. Extrinsics come from a camera file.
* :func:`load_learnable_triangulation` -- ``human36m-multiview-labels-GTbboxes.npy`` (pickled
  dict: ``cameras`` (S, C) records R, t (mm), K, dist (OpenCV order); ``table`` records with
  0-based ``frame_idx`` into the h36m-fetch image folders, ``keypoints`` (17, 3) world mm in
  its MPII-like order, ``bbox_by_camera_tlbr``).
* :func:`load_gluon_annot` -- ``annot/s_<SS>_act_<AA>_subact_<ss>_ca_<CC>/matlab_meta.txt``
  (``x_cam = M^T (X - T)``), images ``images/<folder>/<folder>_%06d.jpg`` (1-based).

Camera files (:func:`load_camera_file`): Martinez et al.'s ``cameras.h5``
(``subject<N>/camera<M>/{R,T,f,c,k,p,Name}``, x_cam = R^T_stored (X - T)) or a JSON in
VideoPose3D's published form (quaternion camera->world + centre in mm), converted through the
named converters of :mod:`pose3d.geometry.camera`.

Human3.6M conventions kept here, once: cameras 0-3 = 54138969, 55011271, 58860488, 60457274;
S1 S5 S6 S7 S8 train, S9 S11 test; actions 2-16 x sub-actions 1-2 named ``<Action>-<sub>``;
50 fps; the 32 -> 17 joint reduction goes by name (:func:`pose3d.skeleton.h36m32_to_17`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa

from pose3d.data.contracts import write_detections
from pose3d.data.io import DataError, Sequence, atomic_dir, save_cameras, write_mocap, write_table
from pose3d.geometry.camera import (
    Camera,
    camera_to_world,
    dist_from_h36m,
    extrinsics_from_h36m,
    extrinsics_from_martinez,
    intrinsics_matrix,
)
from pose3d.skeleton import H36M32_NAMES, NUM_JOINTS, from_coco17, h36m32_to_17

import torch

# --------------------------------------------------------------------------- conventions
H36M_CAMERAS: tuple[str, ...] = ("54138969", "55011271", "58860488", "60457274")
#: image (width, height) per camera, from the dataset's published intrinsics.
H36M_IMAGE_SIZE: dict[str, tuple[int, int]] = {
    "54138969": (1000, 1002), "55011271": (1000, 1000),
    "58860488": (1000, 1000), "60457274": (1000, 1002),
}
H36M_TRAIN_SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
H36M_TEST_SUBJECTS: tuple[str, ...] = ("S9", "S11")
H36M_FPS: float = 50.0
#: action id (2-16, as in the dataset's file naming) -> name used by h36m-fetch and
#: learnable-triangulation; sequences are named ``<name>-<subaction>``.
H36M_ACTIONS: dict[int, str] = {
    2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning", 7: "Posing",
    8: "Purchases", 9: "Sitting", 10: "SittingDown", 11: "Smoking", 12: "TakingPhoto",
    13: "Waiting", 14: "Walking", 15: "WalkingDog", 16: "WalkingTogether",
}
#: learnable-triangulation's 17 joints (16 in MPII order + the head joint), as 0-based
#: indices into the 32; mapped to H36M-17 by name below.
_LT_JOINTS_32: tuple[int, ...] = (3, 2, 1, 6, 7, 8, 0, 12, 13, 15, 27, 26, 25, 17, 18, 19, 14)

LAYOUTS = ("vp3d", "h36m_fetch", "learnable_triangulation", "gluon_annot")


# --------------------------------------------------------------------------- data model
@dataclass
class RawSequence:
    """One multi-view sequence read from a layout, before selection and sampling.

    ``positions_world`` (T, J, 3) metres, H36M-17; ``source_frames`` (T,) the layout's own frame
    numbers (1-based where the layout is); per camera (dicts keyed by camera name, one entry per
    camera that filmed it): ``images`` list of T paths (or absent), ``bboxes_xyxy`` (T, 4)
    pixels with NaN for a missing view, ``keypoints_px`` (T, J, 2) the layout's 2D and
    ``scores`` (T, J). ``keypoints_kind`` says what the 2D is: "gt" (the dataset's own
    projection) or "detections" (imported detector output).
    """
    subject: str
    action: str
    positions_world: np.ndarray
    source_frames: np.ndarray
    cameras: tuple[str, ...]
    images: dict[str, list[Path]] | None = None
    bboxes_xyxy: dict[str, np.ndarray] | None = None
    keypoints_px: dict[str, np.ndarray] | None = None
    scores: dict[str, np.ndarray] | None = None
    keypoints_kind: str = "gt"
    keypoints_source: str = ""

    @property
    def name(self) -> str:
        return f"{self.subject}/{self.action}"

    def take(self, idx: np.ndarray) -> "RawSequence":
        """The same sequence restricted to rows ``idx`` (frame sampling)."""
        pick = (lambda d: None if d is None else {c: v[idx] for c, v in d.items()})
        return replace(
            self, positions_world=self.positions_world[idx], source_frames=self.source_frames[idx],
            images=None if self.images is None else {c: [v[i] for i in idx] for c, v in self.images.items()},
            bboxes_xyxy=pick(self.bboxes_xyxy), keypoints_px=pick(self.keypoints_px),
            scores=pick(self.scores))


@dataclass
class Dataset:
    """Sequences plus cameras ``{subject: {camera: Camera}}`` and a note of where it came from."""

    sequences: list[RawSequence]
    cameras: dict[str, dict[str, Camera]]
    layout: str
    source: str
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers
def _load_pickled(path: Path, allow_pickle: bool, what: str) -> np.lib.npyio.NpzFile | np.ndarray:
    """np.load with a clear error for pickled files read without the opt-in."""
    if not path.exists():
        raise DataError(f"{path}: file not found ({what})")
    try:
        obj = np.load(path, allow_pickle=allow_pickle)
        if isinstance(obj, np.lib.npyio.NpzFile):
            for k in obj.files:  # force the object check now, not at first use
                obj[k]
        return obj
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise DataError(
                f"{path}: {what} stores pickled Python objects; reading it can run code from the "
                f"file. Set prepare.allow_pickle: true (only for files you trust) to read it") from e
        raise DataError(f"{path}: not a readable numpy file ({e})") from e


def _item(arr, path: Path, key: str):
    try:
        return arr.item() if isinstance(arr, np.ndarray) and arr.dtype == object else arr
    except ValueError as e:
        raise DataError(f"{path}: '{key}' is not a single pickled object ({e})") from e


def _reduce_32(x: np.ndarray, where: str) -> np.ndarray:
    """(T, 32, C) -> (T, 17, C) by name; (T, 17, C) passes through (assumed H36M-17 order)."""
    if x.ndim != 3:
        raise DataError(f"{where}: expected (T, J, C) poses, got shape {x.shape}")
    if x.shape[1] == len(H36M32_NAMES):
        return np.asarray(h36m32_to_17(x))
    if x.shape[1] == NUM_JOINTS:
        return x
    raise DataError(f"{where}: {x.shape[1]} joints; expected 32 (Human3.6M) or 17 (H36M-17)")


def _image_size(camera: str, where: str) -> tuple[int, int]:
    if camera in H36M_IMAGE_SIZE:
        return H36M_IMAGE_SIZE[camera]
    raise DataError(f"{where}: unknown image size for camera {camera!r} (not a Human3.6M camera id)")


def camera_from_h36m(orientation_wxyz, center_mm, focal, center_px, radial_k123, tangential_p12,
                     width: int, height: int, name: str = "") -> Camera:
    """A :class:`Camera` from Human3.6M's published form (VideoPose3D's camera tables)."""
    R, t = extrinsics_from_h36m(orientation_wxyz, center_mm)
    K = intrinsics_matrix(focal[0], focal[1], center_px[0], center_px[1])
    return Camera(K=K.numpy(), dist=dist_from_h36m(radial_k123, tangential_p12).numpy(), R=R.numpy(),
                  t=t.numpy(), width=width, height=height, name=name)


def camera_from_martinez(R, T_mm, f, c, k, p, width: int, height: int, name: str = "") -> Camera:
    """A :class:`Camera` from the ``x_cam = R (X - T)`` form (cameras.h5, Gluon's M^T)."""
    Rm, t = extrinsics_from_martinez(np.asarray(R, np.float64), np.asarray(T_mm, np.float64).reshape(3))
    f, c = np.asarray(f, np.float64).reshape(2), np.asarray(c, np.float64).reshape(2)
    K = intrinsics_matrix(f[0], f[1], c[0], c[1])
    dist = dist_from_h36m(np.asarray(k, np.float64).reshape(3), np.asarray(p, np.float64).reshape(2))
    return Camera(K=K.numpy(), dist=dist.numpy(), R=Rm.numpy(), t=t.numpy(), width=width,
                  height=height, name=name)


def _camera_or_error(make, where: str) -> Camera:
    try:
        return make()
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{where}: bad camera ({e})") from e


# --------------------------------------------------------------------------- camera files
def load_camera_file(path: str | os.PathLike) -> dict[str, dict[str, Camera]]:
    """Read Human3.6M cameras -> ``{subject: {camera_id: Camera}}``.

    ``.h5``: Martinez et al.'s ``cameras.h5`` (``subject<N>/camera<M>/R`` stored transposed,
    ``T`` centre mm, ``f``, ``c``, ``k`` (k1 k2 k3), ``p`` (p1 p2), ``Name`` char codes).
    ``.json``: ``{"intrinsics": {cam: {focal_length, center, radial_distortion,
    tangential_distortion, res_w, res_h}}, "extrinsics": {subject: {cam: {orientation (w x y z,
    camera->world), translation (centre, mm)}}}}`` -- VideoPose3D's published tables.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: camera file not found (set prepare.cameras)")
    out: dict[str, dict[str, Camera]] = {}
    if path.suffix in (".h5", ".hdf5"):

        with h5py.File(path, "r") as f:
            for sg in f:
                m = re.fullmatch(r"subject(\d+)", sg)
                if not m:
                    continue
                subject = f"S{int(m.group(1))}"
                for cg in f[sg]:
                    g = f[sg][cg]
                    where = f"{path}: {sg}/{cg}"
                    try:
                        name = "".join(chr(int(v)) for v in np.asarray(g["Name"]).reshape(-1))
                        R = np.asarray(g["R"], np.float64).T  # MATLAB order: stored transposed
                        cam = _camera_or_error(lambda: camera_from_martinez(
                            R, g["T"][()], g["f"][()], g["c"][()], g["k"][()], g["p"][()],
                            *_image_size(name, where), name=name), where)
                    except KeyError as e:
                        raise DataError(f"{where}: missing dataset {e}") from e
                    out.setdefault(subject, {})[name] = cam
    elif path.suffix == ".json":
        try:
            obj = json.loads(path.read_text())
            intr, extr = obj["intrinsics"], obj["extrinsics"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{path}: expected {{'intrinsics': ..., 'extrinsics': ...}} ({e!r})") from e
        for subject, cams in extr.items():
            for cam, e in cams.items():
                where = f"{path}: extrinsics.{subject}.{cam}"
                if cam not in intr:
                    raise DataError(f"{where}: camera {cam} has no intrinsics entry")
                i = intr[cam]
                out.setdefault(subject, {})[cam] = _camera_or_error(lambda: camera_from_h36m(
                    e["orientation"], e["translation"], i["focal_length"], i["center"],
                    i["radial_distortion"], i["tangential_distortion"], int(i["res_w"]),
                    int(i["res_h"]), name=cam), where)
    else:
        raise DataError(f"{path}: unknown camera file type (expected Martinez cameras.h5 or a .json)")
    if not out:
        raise DataError(f"{path}: no cameras found")
    return out


def _subject_cameras(cameras: Mapping[str, Mapping[str, Camera]], subject: str, wanted: Iterable[str],
                     where: str, origin: str) -> dict[str, Camera]:
    have = cameras.get(subject, {})
    missing = [c for c in wanted if c not in have]
    if missing:
        raise DataError(f"{where}: camera {missing[0]} of subject {subject} is missing from {origin} "
                        f"(has {sorted(have) or 'none'})")
    return {c: have[c] for c in wanted}


# --------------------------------------------------------------------------- (a) VideoPose3D
def read_vp3d_3d(path: str | os.PathLike, allow_pickle: bool) -> dict[str, dict[str, np.ndarray]]:
    """``data_3d_<name>.npz`` -> ``{subject: {action: (T, J, 3) float}}`` (as stored)."""
    path = Path(path)
    z = _load_pickled(path, allow_pickle, "VideoPose3D 3D file")
    if "positions_3d" not in z.files:
        raise DataError(f"{path}: no 'positions_3d' (not a VideoPose3D data_3d file)")
    data = _item(z["positions_3d"], path, "positions_3d")
    if not isinstance(data, dict):
        raise DataError(f"{path}: 'positions_3d' is a {type(data).__name__}, expected a dict")
    return {str(s): {str(a): np.asarray(v) for a, v in acts.items()} for s, acts in data.items()}


def read_vp3d_2d(path: str | os.PathLike, allow_pickle: bool
                 ) -> tuple[dict[str, dict[str, list[np.ndarray]]], dict]:
    """``data_2d_<name>_<source>.npz`` -> (``{subject: {action: [(T, J, 2) per camera]}}``, metadata)."""
    path = Path(path)
    z = _load_pickled(path, allow_pickle, "VideoPose3D 2D file")
    if "positions_2d" not in z.files:
        raise DataError(f"{path}: no 'positions_2d' (not a VideoPose3D data_2d file)")
    data = _item(z["positions_2d"], path, "positions_2d")
    meta = _item(z["metadata"], path, "metadata") if "metadata" in z.files else {}
    if not isinstance(data, dict):
        raise DataError(f"{path}: 'positions_2d' is a {type(data).__name__}, expected a dict")
    out = {str(s): {str(a): [np.asarray(v) for v in views] for a, views in acts.items()}
           for s, acts in data.items()}
    return out, dict(meta or {})


def _vp3d_2d_to_h36m17(kp: np.ndarray, meta: dict, where: str) -> np.ndarray:
    layout = str(meta.get("layout_name", "h36m"))
    if kp.ndim != 3 or kp.shape[-1] < 2:
        raise DataError(f"{where}: 2D keypoints have shape {kp.shape}, expected (T, J, 2)")
    kp = kp[..., :2]
    if layout == "coco":
        return np.asarray(from_coco17(kp))
    return _reduce_32(kp, where)


def load_vp3d(path_3d: str | os.PathLike, path_2d: str | os.PathLike | None,
              cameras: Mapping[str, Mapping[str, Camera]], *, allow_pickle: bool,
              camera_order: Iterable[str] | None = None, trim_extra_2d: bool = True,
              camera_origin: str = "the camera file") -> Dataset:
    """Read VideoPose3D's files. 2D arrays are listed in ``camera_order``: by default the 3D
    file's ``metadata['camera_names'][subject]`` (pose3d exports) or Human3.6M's 0-3 order.

    VideoPose3D keeps 2D sequences that are a few frames longer than the mocap (some Human3.6M
    videos have extra frames) and cuts them to the 3D length; ``trim_extra_2d`` does the same.
    Shorter 2D, or longer 2D without ``trim_extra_2d``, is an error naming the sequence.
    """
    path_3d = Path(path_3d)
    pos3d = read_vp3d_3d(path_3d, allow_pickle)
    z = _load_pickled(path_3d, allow_pickle, "VideoPose3D 3D file")
    meta3d = _item(z["metadata"], path_3d, "metadata") if "metadata" in z.files else {}
    fixed_order = None if camera_order is None else tuple(camera_order)
    pos2d, meta2d = (read_vp3d_2d(path_2d, allow_pickle) if path_2d else ({}, {}))
    source2d = Path(path_2d).stem.split("_", 3)[-1] if path_2d else ""
    seqs, cams = [], {}
    for subject in sorted(pos3d, key=_subject_key):
        camera_order = fixed_order or tuple((meta3d or {}).get("camera_names", {}).get(subject, H36M_CAMERAS))
        cams[subject] = _subject_cameras(cameras, subject, camera_order, f"{path_3d}: {subject}",
                                         camera_origin)
        for action in sorted(pos3d[subject]):
            where = f"{path_3d}: {subject}/{action}"
            world = _reduce_32(pos3d[subject][action], where).astype(np.float64)
            T = world.shape[0]
            seq = RawSequence(subject, action, world, np.arange(T), camera_order)
            if path_2d:
                views = pos2d.get(subject, {}).get(action)
                w2 = f"{path_2d}: {subject}/{action}"
                if views is None:
                    raise DataError(f"{w2}: sequence is in the 3D file but not in the 2D file")
                if len(views) != len(camera_order):
                    raise DataError(f"{w2}: {len(views)} camera views in the 2D file, expected "
                                    f"{len(camera_order)} ({', '.join(camera_order)}): a camera is missing")
                kps = {}
                for cam, kp in zip(camera_order, views):
                    kp = _vp3d_2d_to_h36m17(np.asarray(kp, np.float64), meta2d, f"{w2} camera {cam}")
                    if kp.shape[0] < T or (kp.shape[0] > T and not trim_extra_2d):
                        raise DataError(f"{w2} camera {cam}: 2D has {kp.shape[0]} frames but 3D has {T} "
                                        f"(frame counts must match; longer 2D is cut only with "
                                        f"prepare.trim_extra_2d: true)")
                    kps[cam] = kp[:T]
                seq.keypoints_px = kps
                seq.scores = {c: np.ones(v.shape[:2]) for c, v in kps.items()}
                seq.keypoints_kind, seq.keypoints_source = "detections", source2d
            seqs.append(seq)
    notes = [f"2D from {path_2d} (layout {meta2d.get('layout_name', 'h36m')}); no scores in "
             "VideoPose3D files, set to 1"] if path_2d else []
    return Dataset(seqs, cams, "vp3d", str(path_3d), notes)


def _subject_key(s: str):
    m = re.fullmatch(r"S(\d+)", s)
    return (0, int(m.group(1)), s) if m else (1, 0, s)


# --------------------------------------------------------------------------- (b) h36m-fetch
def load_h36m_fetch(root: str | os.PathLike, cameras: Mapping[str, Mapping[str, Camera]], *,
                    expected_cameras: Iterable[str] = H36M_CAMERAS, max_world_disagreement_mm: float = 5.0,
                    camera_origin: str = "the camera file", check_images: bool = True) -> Dataset:
    """Read h36m-fetch's ``processed/`` folder (``root``), one ``annot.h5`` per sequence.

    ``pose/3d`` is camera-frame millimetres, so world poses need the extrinsics: each camera's
    poses are taken to the world (``x_world = R^T (x_cam - t)``) and averaged; cameras that
    disagree by more than ``max_world_disagreement_mm`` mean the camera file does not belong
    to this data (an error). Only frames present in every camera are kept (h36m-fetch selects
    frames per camera), so all image folders stay aligned.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: h36m-fetch 'processed' folder not found")
    expected = tuple(expected_cameras)
    files = sorted(root.glob("*/*/annot.h5"), key=lambda p: (_subject_key(p.parts[-3]), p.parts[-2]))
    if not files:
        raise DataError(f"{root}: no <subject>/<action>/annot.h5 files (not an h36m-fetch processed folder)")
    seqs, cams_out = [], {}
    for f in files:
        subject, action = f.parts[-3], f.parts[-2]
        where = f"{f} ({subject}/{action})"
        try:
            with h5py.File(f, "r") as h:
                p3, p2 = np.asarray(h["pose/3d"], np.float64), np.asarray(h["pose/2d"], np.float64)
                frame, camid = np.asarray(h["frame"]).astype(np.int64), np.asarray(h["camera"]).astype(np.int64)
        except KeyError as e:
            raise DataError(f"{where}: missing dataset {e} (expected pose/3d, pose/2d, frame, camera)") from e
        n = {len(p3), len(p2), len(frame), len(camid)}
        if len(n) != 1:
            raise DataError(f"{where}: mismatched frame counts: pose/3d {len(p3)}, pose/2d {len(p2)}, "
                            f"frame {len(frame)}, camera {len(camid)}")
        present = sorted({str(c) for c in camid})
        missing = [c for c in expected if c not in present]
        if missing:
            raise DataError(f"{where}: camera {missing[0]} is missing from annot.h5 (has {', '.join(present)})")
        subj_cams = _subject_cameras(cameras, subject, expected, where, camera_origin)
        cams_out[subject] = subj_cams
        rows = {c: np.flatnonzero(camid == int(c)) for c in expected}
        common = sorted(set.intersection(*(set(frame[r].tolist()) for r in rows.values())))
        if not common:
            raise DataError(f"{where}: no frame is present in all cameras")
        common = np.asarray(common, np.int64)
        worlds, kp2d = [], {}
        for c in expected:
            r = rows[c]
            order = {fr: i for i, fr in zip(r, frame[r])}
            if len(order) != len(r):
                raise DataError(f"{where}: camera {c} lists a frame twice")
            sel = np.asarray([order[fr] for fr in common])
            cam = subj_cams[c]
            x_cam = torch.as_tensor(p3[sel] / 1000.0)
            worlds.append(camera_to_world(x_cam, torch.as_tensor(cam.R), torch.as_tensor(cam.t)).numpy())
            kp2d[c] = _reduce_32(p2[sel], f"{where} camera {c} pose/2d")
        worlds = np.stack(worlds)  # (V, T, 32, 3)
        spread = np.abs(worlds - worlds.mean(0)).max() * 1000.0
        if spread > max_world_disagreement_mm:
            raise DataError(f"{where}: the cameras put the same frame {spread:.1f} mm apart in the world; "
                            f"the camera file ({camera_origin}) does not match this data")
        world = _reduce_32(worlds.mean(0), where)
        images = {c: [f.parent / "imageSequence" / c / f"img_{fr:06d}.jpg" for fr in common] for c in expected}
        if check_images:
            for c in expected:
                d = f.parent / "imageSequence" / c
                if not d.is_dir():
                    raise DataError(f"{where}: camera {c}: image folder {d} is missing")
        seqs.append(RawSequence(subject, action, world, common, expected, images=images, keypoints_px=kp2d,
                                keypoints_kind="gt", keypoints_source="h36m-fetch pose/2d"))
    return Dataset(seqs, cams_out, "h36m_fetch", str(root))


# --------------------------------------------------------------------------- (c) learnable-triangulation
def load_learnable_triangulation(path: str | os.PathLike, images_root: str | os.PathLike | None, *,
                                 allow_pickle: bool) -> Dataset:
    """Read ``human36m-multiview-labels-*bboxes.npy`` (a pickled dict) and its h36m-fetch images.

    Cameras are in the file (``x_cam_mm = R X_mm + t``); a zero bounding box marks a missing
    view (NaN here). Images: ``<images_root>/<S>/<action>/imageSequence/<camera>/img_%06d.jpg``
    with ``frame_idx + 1``; ``images_root=None`` skips images.
    """
    path = Path(path)
    raw = _item(_load_pickled(path, allow_pickle, "learnable-triangulation labels"), path, "labels")
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    try:
        subjects, cam_names = list(raw["subject_names"]), [str(c) for c in raw["camera_names"]]
        actions, table, cam_table = list(raw["action_names"]), raw["table"], raw["cameras"]
        for k in ("subject_idx", "action_idx", "frame_idx", "keypoints", "bbox_by_camera_tlbr"):
            table[k]
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: not a learnable-triangulation labels file (missing {e})") from e
    # name the 17 joints: slot k holds Human3.6M joint _LT_JOINTS_32[k]
    cams_out: dict[str, dict[str, Camera]] = {}
    seqs = []
    for si, ai in sorted({(int(s), int(a)) for s, a in zip(table["subject_idx"], table["action_idx"])}):
        subject, action = str(subjects[si]), str(actions[ai])
        where = f"{path}: {subject}/{action}"
        if subject not in cams_out:
            cams_out[subject] = {}
            for ci, c in enumerate(cam_names):
                rec = cam_table[si][ci]
                K = np.asarray(rec["K"], np.float64)
                if not np.any(K):
                    raise DataError(f"{where}: camera {c} of subject {subject} is missing (all-zero K)")
                w, h = _image_size(c, where)
                cams_out[subject][c] = _camera_or_error(lambda: Camera(
                    K=K, dist=np.asarray(rec["dist"], np.float64).reshape(5), R=np.asarray(rec["R"], np.float64),
                    t=np.asarray(rec["t"], np.float64).reshape(3) / 1000.0, width=w, height=h, name=c),
                    f"{where} camera {c}")
        rows = np.flatnonzero((table["subject_idx"] == si) & (table["action_idx"] == ai))
        rows = rows[np.argsort(table["frame_idx"][rows], kind="stable")]
        frames = table["frame_idx"][rows].astype(np.int64)
        if len(np.unique(frames)) != len(frames):
            raise DataError(f"{where}: a frame_idx is listed twice")
        kp = np.asarray(table["keypoints"][rows], np.float64) / 1000.0  # (T, 17, 3) m
        full = np.full((len(rows), len(H36M32_NAMES), 3), np.nan)
        full[:, list(_LT_JOINTS_32)] = kp
        world = np.asarray(h36m32_to_17(full))
        tlbr = np.asarray(table["bbox_by_camera_tlbr"][rows], np.float64)  # (T, C, 4)
        bboxes = {}
        for ci, c in enumerate(cam_names):
            b = tlbr[:, ci][:, [1, 0, 3, 2]]  # (top, left, bottom, right) -> (x0, y0, x1, y1)
            b[~np.any(tlbr[:, ci] != 0, axis=-1)] = np.nan
            bboxes[c] = b
        images = None
        if images_root is not None:
            base = Path(images_root) / subject / action / "imageSequence"
            images = {c: [base / c / f"img_{fr + 1:06d}.jpg" for fr in frames] for c in cam_names}
        seqs.append(RawSequence(subject, action, world, frames, tuple(cam_names), images=images,
                                bboxes_xyxy=bboxes))
    return Dataset(seqs, cams_out, "learnable_triangulation", str(path),
                   ["source_frame = learnable-triangulation frame_idx (0-based; image number - 1)"])


# --------------------------------------------------------------------------- (d) Gluon annot
_GLUON_RE = re.compile(r"s_(\d+)_act_(\d+)_subact_(\d+)_ca_(\d+)")
_GLUON_HEADER = (("size", 2), ("M", 9), ("T", 3), ("f", 2), ("c", 2), ("k", 3), ("p", 2), ("joints", 17))


def read_gluon_meta(path: str | os.PathLike) -> dict:
    """Parse one ``matlab_meta.txt`` -> {'n', 'size', 'M', 'T', 'f', 'c', 'k', 'p', 'joints',
    'poses' (N, 32, 3) world mm}. Every line but the first is a tag followed by numbers."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path}: empty file")

    def numbers(tokens, count, lineno, what):
        vals = tokens[-count:] if len(tokens) >= count else tokens
        try:
            out = np.asarray([float(v) for v in vals], np.float64)
        except ValueError as e:
            raise DataError(f"{path}:{lineno}: {what}: {e}") from e
        if len(out) != count or len(tokens) > count + 1:
            raise DataError(f"{path}:{lineno}: {what}: expected a tag and {count} numbers, got {len(tokens)} tokens")
        return out

    meta = {"n": int(numbers(lines[0][-1:], 1, 1, "frame count")[0])}
    if len(lines) < 1 + len(_GLUON_HEADER):
        raise DataError(f"{path}: truncated header ({len(lines)} lines)")
    for i, (key, count) in enumerate(_GLUON_HEADER, start=1):
        meta[key] = numbers(lines[i], count, i + 1, key)
    body = lines[1 + len(_GLUON_HEADER):]
    if len(body) != meta["n"]:
        raise DataError(f"{path}: header says {meta['n']} frames but {len(body)} pose lines follow "
                        f"(mismatched frame counts)")
    start = 2 + len(_GLUON_HEADER)
    meta["poses"] = np.stack([numbers(t, 96, start + j, "pose") for j, t in enumerate(body)]).reshape(-1, 32, 3) \
        if body else np.zeros((0, 32, 3))
    meta["joints"] = meta["joints"].astype(int)
    if meta["joints"].min() < 1 or meta["joints"].max() > 32:
        raise DataError(f"{path}: joint indices must be 1-based into 32 joints, got {meta['joints'].tolist()}")
    return meta


def gluon_sequence_name(subject: int, action: int, subaction: int) -> tuple[str, str]:
    """(1, 2, 1) -> ("S1", "Directions-1")."""
    if action not in H36M_ACTIONS:
        raise DataError(f"action id {action} is not a Human3.6M action (2-16)")
    return f"S{subject}", f"{H36M_ACTIONS[action]}-{subaction}"


def load_gluon_annot(root: str | os.PathLike, images_root: str | os.PathLike | None, *,
                     expected_cameras: Iterable[str] = H36M_CAMERAS, camera_tolerance: float = 1e-6
                     ) -> Dataset:
    """Read the Gluon simple-baseline layout: ``<root>/annot/<folder>/matlab_meta.txt``.

    Cameras: ``x_cam = M^T (X - T)``, i.e. Martinez's form with R = M^T; camera index 1-4 is
    Human3.6M camera 0-3. All cameras of a sequence must agree on the frame count and the
    world poses; each subject's camera must be the same in every sequence. Images:
    ``<images_root>/<folder>/<folder>_%06d.jpg`` (1-based); ``images_root=None`` skips them.
    """
    root = Path(root)
    annot = root / "annot"
    if not annot.is_dir():
        raise DataError(f"{annot}: folder not found (Gluon layout: <root>/annot/s_XX_act_YY_subact_ZZ_ca_CC/)")
    expected = tuple(expected_cameras)
    groups: dict[tuple[int, int, int], dict[str, Path]] = {}
    for d in sorted(annot.iterdir()):
        m = _GLUON_RE.fullmatch(d.name)
        if not m or not d.is_dir():
            continue
        s, a, sa, ca = (int(v) for v in m.groups())
        if not 1 <= ca <= len(expected):
            raise DataError(f"{d}: camera index {ca} out of range 1-{len(expected)}")
        groups.setdefault((s, a, sa), {})[expected[ca - 1]] = d
    if not groups:
        raise DataError(f"{annot}: no s_XX_act_YY_subact_ZZ_ca_CC folders")
    seqs, cams_out = [], {}
    for (s, a, sa), folders in sorted(groups.items()):
        subject, action = gluon_sequence_name(s, a, sa)
        where = f"{annot}: {subject}/{action} (s_{s:02d}_act_{a:02d}_subact_{sa:02d})"
        missing = [c for c in expected if c not in folders]
        if missing:
            ci = expected.index(missing[0]) + 1
            raise DataError(f"{where}: camera {missing[0]} (ca_{ci:02d}) is missing")
        world, images = None, {}
        for c in expected:
            d = folders[c]
            meta = read_gluon_meta(d / "matlab_meta.txt")
            w, h = (int(v) for v in meta["size"])
            cam = _camera_or_error(lambda: camera_from_martinez(
                meta["M"].reshape(3, 3).T, meta["T"], meta["f"], meta["c"], meta["k"], meta["p"], w, h, name=c),
                f"{d / 'matlab_meta.txt'}")
            prev = cams_out.setdefault(subject, {}).get(c)
            if prev is None:
                cams_out[subject][c] = cam
            elif not all(np.allclose(getattr(prev, k), getattr(cam, k), atol=camera_tolerance, rtol=0)
                         for k in ("K", "dist", "R", "t")):
                raise DataError(f"{where}: camera {c} differs from the same subject's camera in another sequence")
            pos = meta["poses"] / 1000.0
            if world is None:
                world = pos
            elif len(pos) != len(world):
                raise DataError(f"{where}: camera {c} has {len(pos)} frames but camera {expected[0]} has "
                                f"{len(world)} (mismatched frame counts)")
            elif np.abs(pos - world).max() > 1e-3:
                raise DataError(f"{where}: camera {c} carries different world poses than camera {expected[0]}")
            if images_root is not None:
                images[c] = [Path(images_root) / d.name / f"{d.name}_{i + 1:06d}.jpg" for i in range(len(pos))]
        seqs.append(RawSequence(subject, action, _reduce_32(world, where), np.arange(1, len(world) + 1),
                                expected, images=images or None))
    return Dataset(seqs, cams_out, "gluon_annot", str(root), ["source_frame = 1-based image number"])


# --------------------------------------------------------------------------- selection
def select(dataset: Dataset, *, subjects: Iterable[str] | None = None,
           drop: Mapping[str, Iterable[str]] | None = None, every_nth: int = 1) -> Dataset:
    """Keep ``subjects`` (None = all), drop ``{subject: [action, ...]}``, keep every n-th frame.

    Dropped names that are absent are fine (layouts name sequences differently); the dataset's
    notes record what was dropped.
    """
    if every_nth < 1:
        raise DataError(f"every_nth = {every_nth}: must be >= 1")
    subjects = None if subjects is None else set(subjects)
    drop = {s: set(a) for s, a in (drop or {}).items()}
    keep, notes = [], list(dataset.notes)
    for seq in dataset.sequences:
        if subjects is not None and seq.subject not in subjects:
            continue
        if seq.action in drop.get(seq.subject, ()):
            notes.append(f"dropped {seq.name}")
            continue
        idx = np.arange(0, len(seq.source_frames), every_nth)
        keep.append(seq.take(idx) if every_nth > 1 else seq)
    if not keep:
        raise DataError(f"{dataset.source}: no sequence left after selection (subjects {sorted(subjects or [])})")
    cams = {s: c for s, c in dataset.cameras.items() if any(q.subject == s for q in keep)}
    return replace(dataset, sequences=keep, cameras=cams, notes=notes)


# --------------------------------------------------------------------------- writing
def _strs(values: list[str]):

    return pa.array(values, type=pa.string())


def sequence_fps(source_frames: np.ndarray, source_fps: float) -> float:
    """Frame rate of a (possibly sampled) sequence: source fps / median step between frames."""
    if len(source_frames) < 2:
        return float(source_fps)
    return float(source_fps) / float(np.median(np.diff(source_frames)))


def write_prepared(out_dir: str | os.PathLike, dataset: Dataset | None, *, source_fps: float = H36M_FPS,
                   test_subjects: Iterable[str] = H36M_TEST_SUBJECTS, link_mode: str = "symlink") -> dict:
    """Write ``dataset`` in the studio layout under ``out_dir`` (atomically, as one folder).

    Files: ``mocap.h5``, ``cameras.json``, ``videos/<subject>/<action>.<camera>/%06d.jpg`` (0-based,
    symlinks or copies of the source images), ``frames.parquet`` (subject, action, camera, frame,
    source_frame, image, bbox_xyxy: where every frame came from) and ``detections_2d.parquet``
    (imported 2D detections; zero rows when the layout has none). ``dataset=None`` writes the
    same files empty. Returns a summary dict (counts).
    """
    if link_mode not in ("symlink", "copy"):
        raise DataError(f"link_mode = {link_mode!r}: expected 'symlink' or 'copy'")
    test_subjects = set(test_subjects)
    seqs = [] if dataset is None else dataset.sequences
    cams = {} if dataset is None else dataset.cameras
    summary = {"sequences": len(seqs), "frames": 0, "images": 0, "detections": 0}
    fr_cols = {k: [] for k in ("subject", "action", "camera", "frame", "source_frame", "image")}
    fr_bbox: list[np.ndarray] = []
    det = {k: [] for k in ("subject", "action", "camera", "frame")}
    det_kp, det_sc, det_sources = [], [], set()
    with atomic_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; the prepared folder is ordinary data
        videos = tmp / "videos"
        videos.mkdir()
        mocap = []
        for seq in seqs:
            if "/" in seq.action or "/" in seq.subject:
                raise DataError(f"{seq.name}: subject/action names cannot contain '/'")
            T = len(seq.source_frames)
            if seq.positions_world.shape != (T, NUM_JOINTS, 3):
                raise DataError(f"{seq.name}: positions_world {seq.positions_world.shape} vs {T} frames")
            split = "test" if seq.subject in test_subjects else "train"
            mocap.append(Sequence(seq.subject, seq.action, seq.positions_world.astype(np.float32),
                                  sequence_fps(seq.source_frames, source_fps), split))
            summary["frames"] += T
            for c in seq.cameras:
                imgs = (seq.images or {}).get(c)
                if imgs is not None:
                    d = videos / seq.subject / f"{seq.action}.{c}"
                    d.mkdir(parents=True)
                    for i, src in enumerate(imgs):
                        src = Path(src).absolute()
                        if not src.exists():
                            raise DataError(f"{seq.name} camera {c}: image for frame {i} "
                                            f"(source frame {seq.source_frames[i]}) not found: {src}")
                        dst = d / f"{i:06d}{src.suffix}"
                        if link_mode == "symlink":
                            os.symlink(src, dst)
                        else:
                            shutil.copyfile(src, dst)
                    summary["images"] += len(imgs)
                fr_cols["subject"] += [seq.subject] * T
                fr_cols["action"] += [seq.action] * T
                fr_cols["camera"] += [c] * T
                fr_cols["frame"].append(np.arange(T, dtype=np.int64))
                fr_cols["source_frame"].append(np.asarray(seq.source_frames, np.int64))
                fr_cols["image"] += [str(p) for p in imgs] if imgs is not None else [""] * T
                b = (seq.bboxes_xyxy or {}).get(c)
                fr_bbox.append(np.full((T, 4), np.nan) if b is None else b)
                if seq.keypoints_kind == "detections" and seq.keypoints_px and c in seq.keypoints_px:
                    det["subject"] += [seq.subject] * T
                    det["action"] += [seq.action] * T
                    det["camera"] += [c] * T
                    det["frame"].append(np.arange(T, dtype=np.int64))
                    det_kp.append(seq.keypoints_px[c])
                    det_sc.append(seq.scores[c] if seq.scores else np.ones((T, NUM_JOINTS)))
                    det_sources.add(seq.keypoints_source)
        write_mocap(tmp / "mocap.h5", mocap)
        save_cameras(tmp / "cameras.json", cams)
        cat = (lambda xs, shape, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(shape, dt))
        meta = {"layout": dataset.layout if dataset else "none", "source": dataset.source if dataset else "",
                "notes": dataset.notes if dataset else [], "units": "px"}
        write_table(tmp / "frames.parquet", {
            "subject": _strs(fr_cols["subject"]), "action": _strs(fr_cols["action"]),
            "camera": _strs(fr_cols["camera"]),
            "frame": cat(fr_cols["frame"], (0,), np.int64),
            "source_frame": cat(fr_cols["source_frame"], (0,), np.int64), "image": _strs(fr_cols["image"]),
            "bbox_xyxy": cat(fr_bbox, (0, 4), np.float32).reshape(-1, 4)}, meta)
        summary["detections"] = sum(len(x) for x in det_kp)
        image_size = {c: [cam.width, cam.height] for sc in cams.values() for c, cam in sc.items()}
        keys = pd.DataFrame({"subject": det["subject"], "action": det["action"], "camera": det["camera"],
                             "frame": cat(det["frame"], (0,), np.int64)})
        write_detections(tmp / "detections_2d.parquet", keys,
                         cat(det_kp, (0, NUM_JOINTS, 2), np.float32).reshape(-1, NUM_JOINTS, 2),
                         cat(det_sc, (0, NUM_JOINTS), np.float32).reshape(-1, NUM_JOINTS),
                         {"model_hash": "import:" + ",".join(sorted(det_sources)),
                          "image_size": image_size, "units": "px", "source": meta["source"]})
    return summary


def load_layout(layout: str, source: str | os.PathLike, *, source_2d: str | os.PathLike | None = None,
                cameras: str | os.PathLike | None = None, images: str | None = None,
                allow_pickle: bool = False, trim_extra_2d: bool = True) -> Dataset:
    """Dispatch to the reader of ``layout`` (one of :data:`LAYOUTS`).

    ``images``: None or "" = the layout's usual place (h36m-fetch: beside annot.h5;
    learnable-triangulation: ``<labels dir>/../processed``; Gluon: ``<source>/images``), "none"
    = no image folders, anything else = that folder.
    """
    source = Path(source)
    no_images = images == "none"
    images = None if (no_images or not images) else Path(images)
    if layout == "vp3d":
        cams = load_camera_file(cameras) if cameras else {}
        return load_vp3d(source, source_2d or None, cams, allow_pickle=allow_pickle,
                         trim_extra_2d=trim_extra_2d, camera_origin=str(cameras))
    if layout == "h36m_fetch":
        cams = load_camera_file(cameras) if cameras else {}
        ds = load_h36m_fetch(source, cams, camera_origin=str(cameras), check_images=not no_images)
        if no_images:
            for s in ds.sequences:
                s.images = None
        return ds
    if layout == "learnable_triangulation":
        root = None if no_images else (images or source.parent.parent / "processed")
        if root is not None and not Path(root).is_dir():
            raise DataError(f"{root}: image root not found (set prepare.images, or 'none' for no images)")
        return load_learnable_triangulation(source, root, allow_pickle=allow_pickle)
    if layout == "gluon_annot":
        root = None if no_images else (images or source / "images")
        if root is not None and not Path(root).is_dir():
            raise DataError(f"{root}: image root not found (set prepare.images, or 'none' for no images)")
        return load_gluon_annot(source, root)
    raise DataError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
