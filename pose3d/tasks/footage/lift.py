"""One camera: 2D of a user's video -> 3D with the trained temporal lifter (lift@temporal's model).

The lifter learned one kind of camera: Human3.6M's (the studio copies its intrinsics), seeing
screen-normalised pixels (x in [-1, 1] across the width). A user's camera has another focal
length, principal point, image size and lens. So each 2D point is turned into the ray it
stands for (``K_user^-1``, undoing ``dist_user`` when known) and re-imaged by the
:func:`reference_camera` (its K and its lens distortion, as in training); the lifter then sees
what Human3.6M's camera would have seen along the same rays. Rays are unchanged, so the
predicted root trajectory (metres, camera frame) is the person's position in the *user's*
camera frame, given that the person has a human size.

The focal length is the user's (``--focal`` px, or a cameras.json), else assumed:
``ASSUMED_FOCAL_PER_SIDE`` x the longer image side (a 45 degree horizontal field of view for a
landscape frame). A wrong focal length scales the depth of the trajectory and changes the
perspective the lifter sees; the root-relative pose barely moves (docs/footage.md measures it).

Prediction itself is :func:`pose3d.tasks.lifting.pipeline.predict`, as in lift@temporal (edge
padding, flip test-time augmentation, root trajectory).

Glossary: T frames, J joints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pose3d.data.io import DataError
from pose3d.data.studio.rig import H36M_INTRINSICS
from pose3d.geometry.camera import distort_normalized, normalized_to_pixels, undistort_points
from pose3d.geometry.shapes import check_shape
from pose3d.skeleton import JOINT_NAMES
from pose3d.tasks.lifting.data import FrameSet
from pose3d.tasks.lifting.pipeline import load_lifter, predict
from pose3d.tasks.lifting.steps import LIFTERS

#: focal length in px assumed without --focal or cameras: this x max(width, height)
ASSUMED_FOCAL_PER_SIDE = 1.2
#: the reference camera's image size (px): screen normalisation makes the size itself irrelevant
_REF_SIZE = 1000


def reference_camera() -> tuple[np.ndarray, np.ndarray, int, int]:
    """The camera the lifter learned: (K (3, 3), dist (5,) OpenCV k1 k2 p1 p2 k3, width, height),
    the mean of Human3.6M's four cameras at 1000 x 1000 px."""
    a = np.asarray([c[1:] for c in H36M_INTRINSICS], np.float64)  # fx fy cx cy k1 k2 k3 p1 p2
    fx, fy, cx, cy, k1, k2, k3, p1, p2 = a.mean(0)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    return K, np.array([k1, k2, p1, p2, k3]), _REF_SIZE, _REF_SIZE


def user_intrinsics(width: int, height: int, focal: float | None) -> np.ndarray:
    """K (3, 3) of a camera known only by its image size (and perhaps its focal length, px):
    principal point at the image centre (pixel centres at integers), square pixels."""
    f = float(focal) if focal else ASSUMED_FOCAL_PER_SIDE * max(width, height)
    return np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])


def to_reference_pixels(points_px: np.ndarray, K: np.ndarray, dist: np.ndarray | None) -> np.ndarray:
    """(T, J, 2) pixels of the user's camera -> (T, J, 2) pixels of :func:`reference_camera`
    along the same rays."""
    K_ref, dist_ref, _, _ = reference_camera()
    uv = torch.as_tensor(points_px, dtype=torch.float64)
    xy = undistort_points(uv, torch.as_tensor(K), None if dist is None else torch.as_tensor(dist, dtype=torch.float64),
                          normalized=True)
    out = normalized_to_pixels(distort_normalized(xy, torch.as_tensor(dist_ref)), torch.as_tensor(K_ref))
    return out.numpy()


def fill_gaps(points: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation over time of NaN joints (T, J, C) (edges: nearest) -> (filled, mask of
    the originally finite joints (T, J)). A joint missing in every frame is a DataError naming
    ``where`` and the joints."""
    x = np.array(points, np.float64, copy=True)
    ok = np.isfinite(x).all(-1)
    never = [JOINT_NAMES[j] for j in np.flatnonzero(~ok.any(0))] if x.shape[1] == len(JOINT_NAMES) else []
    if not ok.any(0).all():
        raise DataError(f"{where}: joint(s) {never or list(np.flatnonzero(~ok.any(0)))} missing in every frame "
                        "(for triangulation: fewer than 2 views saw them above the score threshold)")
    t = np.arange(len(x))
    for j in np.flatnonzero(~ok.all(0)):
        for c in range(x.shape[-1]):
            x[~ok[:, j], j, c] = np.interp(t[~ok[:, j]], t[ok[:, j]], x[ok[:, j], j, c])
    return x, ok


def load_temporal(model_dir: str | Path) -> torch.nn.Module:
    """The trained lifter of ``model_dir`` (config.json + model.pt, as lift@temporal writes it);
    it must predict a root trajectory."""
    model_dir = Path(model_dir)
    for f in ("config.json", "model.pt"):
        if not (model_dir / f).exists():
            raise DataError(f"{model_dir / f}: not found (a lifter model dir: models/temporal after `dvc repro lift@temporal`)")
    model = load_lifter(model_dir)
    name = type(model).__name__
    if not any(isinstance(model, spec.model) and spec.with_root for spec in LIFTERS.values()):
        raise DataError(f"{model_dir}/config.json: the lifter {name} predicts no root trajectory; "
                        "footage needs the temporal model (models/temporal)")
    return model


@torch.no_grad()
def lift_view(model: torch.nn.Module, points_px: np.ndarray, K: np.ndarray, dist: np.ndarray | None,
              flip_tta: bool = True, device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """(T, J, 2) user pixels (no NaN) -> (pose (T, J, 3) root-relative metres, root (T, 3) metres),
    both in the user's camera frame (x right, y down, z forward)."""
    check_shape(points_px, "T 17 2", "points_px")
    T = len(points_px)
    K_ref, dist_ref, w, h = reference_camera()
    uv = to_reference_pixels(points_px, K, dist).astype(np.float32)
    z = np.zeros((T, len(JOINT_NAMES), 3), np.float32)
    fs = FrameSet(subject=["footage"], action=["footage"], camera=["footage"], starts=np.array([0]),
                  lengths=np.array([T]), pos_world=z, pos_cam=z, uv_gt=uv, uv=uv, K=K_ref[None],
                  dist=dist_ref[None], R=np.eye(3)[None], t=np.zeros((1, 3)), wh=np.array([[w, h]], np.float64),
                  seq_of_frame=np.zeros(T, np.int64), up=np.array([0.0, -1.0, 0.0]))
    pose, root = predict(model, fs, flip_tta=flip_tta, device=device, with_root=True)
    return pose, root
