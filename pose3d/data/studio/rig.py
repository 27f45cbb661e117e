"""The studio's camera rig: Human3.6M-like calibrated, distorted cameras around the volume.

Intrinsics are Human3.6M's published values (the four cameras' focal lengths, principal
points and radial/tangential distortion, as distributed with VideoPose3D's
``h36m_cameras_intrinsic_params``), scaled from the 1000 px wide originals to the output width.
Extrinsics: camera k sits at azimuth ``45 + 90 k`` degrees (more cameras: evenly spaced),
``distance`` metres from the volume centre at ``height`` metres, aimed at a point 1 m above
the floor, each with a small per-subject change (centre +-3 cm, aim +-1 degree), because
Human3.6M's extrinsics differ slightly per subject too. Conventions as
:mod:`pose3d.geometry.camera`: ``x_cam = R @ x_world + t``, dist = (k1, k2, p1, p2, k3).
"""

from __future__ import annotations


import numpy as np
import torch

from pose3d.data.studio.seeds import stable_seed
from pose3d.geometry.camera import Camera
from pose3d.geometry.rotations import axis_angle_to_matrix, look_at

#: (name, fx, fy, cx, cy, k1, k2, k3, p1, p2) at 1000 px width (Human3.6M).
H36M_INTRINSICS: tuple[tuple, ...] = (
    ("54138969", 1145.05, 1143.78, 512.54, 515.45, -0.2071, 0.2478, -0.0031, -0.0010, -0.0014),
    ("55011271", 1149.68, 1147.59, 508.85, 508.06, -0.1942, 0.2404, 0.0068, -0.0016, -0.0027),
    ("58860488", 1149.14, 1148.80, 519.82, 501.40, -0.2083, 0.2555, -0.0025, 0.0015, -0.0008),
    ("60457274", 1145.51, 1144.77, 514.97, 501.88, -0.1984, 0.2183, -0.0089, -0.0006, -0.0018),
)


def camera_names(num_cameras: int) -> list[str]:
    """The 4 Human3.6M ids, then ``cam05``, ``cam06``, ... for additional cameras."""
    names = [c[0] for c in H36M_INTRINSICS]
    return names[:num_cameras] + [f"cam{k + 1:02d}" for k in range(len(names), num_cameras)]


def make_rig(subject: str, num_cameras: int = 4, width: int = 512, height: int = 512,
             distance: float = 4.5, camera_height: float = 1.5, target_height: float = 1.0,
             seed: int = 0, jitter: bool = True) -> dict[str, Camera]:
    """{camera_name: Camera} for one subject (see module docstring). Reproducible per seed."""
    if num_cameras < 1:
        raise ValueError(f"num_cameras = {num_cameras}: must be >= 1")
    names = camera_names(num_cameras)
    rng = np.random.default_rng(stable_seed(seed, "rig", subject))
    out = {}
    for k, name in enumerate(names):
        fx, fy, cx, cy, k1, k2, k3, p1, p2 = H36M_INTRINSICS[k % 4][1:]
        s = width / 1000.0
        # keep the principal point's offset from the centre in proportion to the image size
        K = np.array([[fx * s, 0, width / 2 + (cx - 500) * s], [0, fy * s, height / 2 + (cy - 500) * s],
                      [0, 0, 1]])
        dist = np.array([k1, k2, p1, p2, k3])
        az = np.deg2rad(45 + 90 * k if num_cameras <= 4 else 45 + 360.0 * k / num_cameras)
        eye = np.array([distance * np.cos(az), distance * np.sin(az), camera_height])
        target = np.array([0.0, 0.0, target_height])
        if jitter:
            eye = eye + rng.uniform(-0.03, 0.03, 3)
            target = target + rng.uniform(-1, 1, 3) * np.deg2rad(1.0) * distance
        R, t = look_at(torch.as_tensor(eye), torch.as_tensor(target))
        if jitter:  # a small roll about the optical axis
            roll = axis_angle_to_matrix(torch.tensor([0.0, 0.0, np.deg2rad(rng.uniform(-1, 1))], dtype=R.dtype))
            R, t = roll @ R, roll @ t
        out[name] = Camera(K=K, dist=dist, R=R.numpy(), t=t.numpy(), width=width, height=height, name=name)
    return out
