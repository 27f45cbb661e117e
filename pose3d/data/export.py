"""Export a studio-layout dataset as VideoPose3D-compatible ``.npz`` files, and read them back.

Files (VideoPose3D's own format: ``np.savez_compressed`` of pickled dicts, because that is what
its loaders read with ``allow_pickle=True``):

* ``data_3d_<name>.npz``: ``positions_3d[subject][action]`` (T, J, 3) float32 world metres.
  ``joints="h36m17"`` writes the 17 joints in H36M-17 order; ``"h36m32"`` writes Human3.6M's
  32 slots (the 17 at their places, the 15 static joints NaN) so VideoPose3D's
  ``Human36mDataset`` (which drops those 15) reads it unchanged. Extra keys, ignored by
  VideoPose3D: ``cameras[subject]`` = list of dicts in VideoPose3D's published form (``id``,
  ``res_w``, ``res_h``, ``focal_length``, ``center``, ``radial_distortion`` (k1 k2 k3),
  ``tangential_distortion`` (p1 p2), ``orientation`` (w x y z, camera -> world), ``translation``
  (camera centre, mm)) and ``metadata`` (joint names, fps, camera order).
* ``data_2d_<name>_<source>.npz``: ``positions_2d[subject][action]`` = list over the subject's
  cameras (sorted names, listed in ``metadata['camera_names']``) of (T, 17, 2) float32 pixels;
  ``metadata`` = {layout_name 'h36m', num_joints 17, keypoints_symmetry [left, right], ...}.
  ``source='gt'`` projects the ground truth through the cameras; other sources come from a
  pose3d detections table (missing frames are NaN).

Note: VideoPose3D's ``-d h36m`` also hard-codes Human3.6M's cameras; for other data take the
cameras from the ``cameras`` key (or use its custom-dataset path).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from pose3d.data.contracts import Detections
from pose3d.data.h36m import _item, _load_pickled, read_vp3d_2d, read_vp3d_3d
from pose3d.data.io import DataError, Sequence, atomic_path
from pose3d.data.views import GroundTruth
from pose3d.geometry.camera import Camera
from pose3d.skeleton import (
    H36M32_NAMES,
    JOINT_NAMES,
    LEFT_JOINTS,
    NUM_JOINTS,
    RIGHT_JOINTS,
    h36m32_indices_of_17,
)


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (w, x, y, z), w >= 0 (Shepperd's method)."""
    R = np.asarray(R, np.float64)
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + R[i, i] - R[j, j] - R[k, k])
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (R[k, j] - R[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (R[j, i] + R[i, j]) / s
        q[1 + k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def camera_to_vp3d(cam: Camera, name: str) -> dict:
    """A :class:`Camera` -> VideoPose3D's published dict form (quaternion camera->world, centre mm)."""
    return {
        "id": name, "res_w": int(cam.width), "res_h": int(cam.height),
        "focal_length": [float(cam.K[0, 0]), float(cam.K[1, 1])],
        "center": [float(cam.K[0, 2]), float(cam.K[1, 2])],
        "radial_distortion": [float(cam.dist[0]), float(cam.dist[1]), float(cam.dist[4])],
        "tangential_distortion": [float(cam.dist[2]), float(cam.dist[3])],
        "orientation": matrix_to_quaternion(cam.R.T).tolist(),
        "translation": (cam.center * 1000.0).tolist(),
    }


def _to_32(x: np.ndarray) -> np.ndarray:
    out = np.full(x.shape[:-2] + (len(H36M32_NAMES), x.shape[-1]), np.nan, np.float32)
    out[..., h36m32_indices_of_17(), :] = x
    return out


def _savez(path: Path, **objs) -> None:
    # savez of a dict makes a 0-d object array: VideoPose3D's own format.
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **{k: np.array(v, dtype=object) if isinstance(v, dict) else v
                                    for k, v in objs.items()})


def _camera_order(cameras: Mapping[str, Camera]) -> list[str]:
    return sorted(cameras)


def export_vp3d(out_dir: str | os.PathLike, name: str, truth: GroundTruth, *,
                detections: Detections | None = None, detections_source: str = "det",
                joints: str = "h36m17", gt_2d: bool = True) -> dict[str, Path]:
    """Write ``data_3d_<name>.npz``, ``data_2d_<name>_gt.npz`` (when ``gt_2d``) and, with a
    :class:`~pose3d.data.contracts.Detections` (``read_detections``),
    ``data_2d_<name>_<detections_source>.npz`` for every sequence of ``truth``. Returns
    {kind: path}.
    """
    if joints not in ("h36m17", "h36m32"):
        raise DataError(f"joints = {joints!r}: expected 'h36m17' or 'h36m32'")
    if not name or "/" in name or "_" in name:
        # VideoPose3D splits file names on '_' to find the dataset and the 2D source
        raise DataError(f"export name {name!r}: must be non-empty without '/' or '_'")
    out_dir = Path(out_dir)
    pos3d, fps, cams_out, cam_names, img_size = {}, {}, {}, {}, {}
    sequences, cameras = truth.sequences, truth.cameras
    for seq in sequences:
        truth.cameras_of(seq.subject)
        x = np.asarray(seq.positions_world, np.float32)
        pos3d.setdefault(seq.subject, {})[seq.action] = _to_32(x) if joints == "h36m32" else x
        fps.setdefault(seq.subject, {})[seq.action] = float(seq.fps)
    for subject in pos3d:
        order = _camera_order(cameras[subject])
        cam_names[subject] = order
        cams_out[subject] = [camera_to_vp3d(cameras[subject][c], c) for c in order]
        img_size[subject] = {c: [int(cameras[subject][c].width), int(cameras[subject][c].height)] for c in order}
    meta3d = {"joint_names": list(H36M32_NAMES if joints == "h36m32" else JOINT_NAMES), "units": "m",
              "fps": fps, "camera_names": cam_names, "joints": joints}
    paths = {"3d": out_dir / f"data_3d_{name}.npz"}
    _savez(paths["3d"], positions_3d=pos3d, cameras=cams_out, metadata=meta3d)
    meta2d = {"layout_name": "h36m", "num_joints": NUM_JOINTS,
              "keypoints_symmetry": [list(LEFT_JOINTS), list(RIGHT_JOINTS)],
              "joint_names": list(JOINT_NAMES), "camera_names": cam_names, "image_size": img_size,
              "units": "px"}
    if gt_2d:
        pos2d = {}
        for seq in sequences:
            views = [truth.view(seq, c).pixels.astype(np.float32) for c in cam_names[seq.subject]]
            pos2d.setdefault(seq.subject, {})[seq.action] = views
        paths["gt"] = out_dir / f"data_2d_{name}_gt.npz"
        _savez(paths["gt"], positions_2d=pos2d, metadata=dict(meta2d, source="gt"))
    if detections is not None:
        pos2d = _detections_to_vp3d(detections, sequences, cam_names)
        paths[detections_source] = out_dir / f"data_2d_{name}_{detections_source}.npz"
        _savez(paths[detections_source], positions_2d=pos2d, metadata=dict(meta2d, source=detections_source))
    return paths


def _detections_to_vp3d(det: Detections, sequences: list[Sequence], cam_names: Mapping[str, list[str]]) -> dict:
    key = {(s.subject, s.action): len(s.positions_world) for s in sequences}
    out = {s.subject: {} for s in sequences}
    for s in sequences:
        out[s.subject][s.action] = [np.full((len(s.positions_world), NUM_JOINTS, 2), np.nan, np.float32)
                                    for _ in cam_names[s.subject]]
    subj, act, cam = (det.keys[k].to_numpy() for k in ("subject", "action", "camera"))
    frame = det.keys["frame"].to_numpy()
    for i in range(len(frame)):  # one pass over rows; tables are (frames x cameras) long
        T = key.get((subj[i], act[i]))
        if T is None:
            continue
        if cam[i] not in cam_names[subj[i]]:
            raise DataError(f"{det.path}: {subj[i]}/{act[i]} camera {cam[i]} has no calibration")
        if not 0 <= frame[i] < T:
            raise DataError(f"{det.path}: {subj[i]}/{act[i]} camera {cam[i]} frame {frame[i]} outside 0..{T - 1}")
        out[subj[i]][act[i]][cam_names[subj[i]].index(cam[i])][frame[i]] = det.keypoints[i]
    return out


def read_vp3d_export(out_dir: str | os.PathLike, name: str, sources: Iterable[str] = ("gt",), *,
                     allow_pickle: bool) -> dict:
    """Read files written by :func:`export_vp3d` -> {'positions_3d', 'cameras', 'metadata',
    '2d': {source: (positions_2d, metadata)}}. They are pickled, like VideoPose3D's: pass
    ``allow_pickle=True`` for files you trust (your own exports)."""

    out_dir = Path(out_dir)
    p3 = out_dir / f"data_3d_{name}.npz"
    res = {"positions_3d": read_vp3d_3d(p3, allow_pickle)}
    z = _load_pickled(p3, allow_pickle, "VideoPose3D 3D file")
    res["cameras"] = _item(z["cameras"], p3, "cameras") if "cameras" in z.files else {}
    res["metadata"] = _item(z["metadata"], p3, "metadata") if "metadata" in z.files else {}
    res["2d"] = {s: read_vp3d_2d(out_dir / f"data_2d_{name}_{s}.npz", allow_pickle) for s in sources}
    return res


def vp3d_camera_json(exported_cameras: Mapping[str, list[dict]]) -> dict:
    """The ``cameras`` key of an export -> the .json form :func:`pose3d.data.h36m.load_camera_file`
    reads (so an export can be prepared back with layout ``vp3d``)."""
    intr, extr = {}, {}
    for subject, cams in exported_cameras.items():
        for c in cams:
            i = {k: c[k] for k in ("focal_length", "center", "radial_distortion", "tangential_distortion",
                                   "res_w", "res_h")}
            if c["id"] in intr and intr[c["id"]] != i:
                raise DataError(f"camera {c['id']}: intrinsics differ between subjects; the VideoPose3D "
                                f"form shares intrinsics per camera")
            intr[c["id"]] = i
            extr.setdefault(subject, {})[c["id"]] = {"orientation": c["orientation"], "translation": c["translation"]}
    return {"intrinsics": intr, "extrinsics": extr}
