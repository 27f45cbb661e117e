"""Pinhole cameras with OpenCV's distortion model, as pure batched torch functions.

Convention (the only one in pose3d): ``x_cam = R @ x_world + t``; intrinsics ``K`` (3, 3);
``dist = (k1, k2, p1, p2, k3)`` in OpenCV's order; metres inside; pixels ``points_px``.
Every function broadcasts over leading ``*`` dims; camera tensors broadcast against points
as ``K (*, 3, 3)``, ``dist (*, 5)``, ``R (*, 3, 3)``, ``t (*, 3)`` with points ``(*, J, C)``.
Glossary: J joints (or any points), C coords.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pose3d.geometry.shapes import check_shape


def _t(x, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if like is None else x.to(like)
    dtype = like.dtype if like is not None else torch.float64
    device = like.device if like is not None else None
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def world_to_camera(x_world: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_cam = R @ x_world + t`` (H&Z 6.1, eq. 6.6 with t = -R C). x (*, J, 3) metres,
    R (*, 3, 3), t (*, 3) metres -> (*, J, 3) metres; camera axes x right, y down, z forward."""
    check_shape(x_world, "* J 3", "x_world")
    return x_world @ R.transpose(-1, -2) + t.unsqueeze(-2)


def camera_to_world(x_cam: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_world = R^T (x_cam - t)``: x (*, J, 3), R (*, 3, 3), t (*, 3) -> (*, J, 3). Inverse of
    :func:`world_to_camera`."""
    check_shape(x_cam, "* J 3", "x_cam")
    return (x_cam - t.unsqueeze(-2)) @ R


def distort_normalized(xy: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """Apply OpenCV's radial-tangential model to normalised coords ``xy`` (*, J, 2).

    r² = x² + y²; radial = 1 + k1 r² + k2 r⁴ + k3 r⁶;
    x' = x·radial + 2 p1 x y + p2 (r² + 2x²);  y' = y·radial + p1 (r² + 2y²) + 2 p2 x y.
    """
    check_shape(xy, "* J 2", "xy")
    d = dist.unsqueeze(-2)  # (*, 1, 5)
    k1, k2, p1, p2, k3 = (d[..., i] for i in range(5))
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def normalized_to_pixels(xy: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Normalised (x, y) (*, J, 2) -> pixels (*, J, 2): ``u = fx x + s y + cx, v = fy y + cy``
    with K (*, 3, 3) (H&Z 6.1, eq. 6.10; s is the skew K[0, 1])."""
    Kx = K.unsqueeze(-3)  # (*, 1, 3, 3)
    u = Kx[..., 0, 0] * xy[..., 0] + Kx[..., 0, 1] * xy[..., 1] + Kx[..., 0, 2]
    v = Kx[..., 1, 1] * xy[..., 1] + Kx[..., 1, 2]
    return torch.stack([u, v], dim=-1)


def pixels_to_normalized(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixels (*, J, 2) -> normalised (*, J, 2), ``K^-1 [u v 1]^T``: inverse of
    :func:`normalized_to_pixels`."""
    Kx = K.unsqueeze(-3)
    y = (uv[..., 1] - Kx[..., 1, 2]) / Kx[..., 1, 1]
    x = (uv[..., 0] - Kx[..., 0, 2] - Kx[..., 0, 1] * y) / Kx[..., 0, 0]
    return torch.stack([x, y], dim=-1)


def project_camera(x_cam: torch.Tensor, K: torch.Tensor, dist: torch.Tensor | None = None) -> torch.Tensor:
    """Camera-frame points (*, J, 3) -> distorted pixels (*, J, 2) (H&Z 6.1 + OpenCV distortion)."""
    check_shape(x_cam, "* J 3", "x_cam")
    xy = x_cam[..., :2] / x_cam[..., 2:3]
    if dist is not None:
        xy = distort_normalized(xy, dist)
    return normalized_to_pixels(xy, K)


def project(x_world: torch.Tensor, K: torch.Tensor, dist: torch.Tensor | None, R: torch.Tensor,
            t: torch.Tensor) -> torch.Tensor:
    """World points (*, J, 3) metres -> distorted pixels (*, J, 2); matches cv2.projectPoints.

    ``u = K distort(x_c[:2] / x_c[2])`` with ``x_c = R x + t`` (H&Z 6.1; OpenCV's
    Brown-Conrady model). K (*, 3, 3), dist (*, 5) or None, R (*, 3, 3), t (*, 3) broadcast
    against the points' leading dims. Points behind the camera (z <= 0) are not detected here:
    callers check ``world_to_camera(...)[..., 2] > 0`` where that can happen.
    """
    return project_camera(world_to_camera(x_world, R, t), K, dist)


def undistort_points(uv: torch.Tensor, K: torch.Tensor, dist: torch.Tensor | None, iters: int = 20,
                     normalized: bool = False) -> torch.Tensor:
    """Distorted pixels (*, J, 2) -> ideal pinhole pixels (same K) or normalised coords.

    Inverts :func:`distort_normalized`: fixed-point iteration as in cv2.undistortPoints
    (x = (x_d - tangential(x)) / radial(x)), then two Newton steps with the analytic 2x2
    Jacobian, so the result inverts the forward model to ~1e-12 px. Note: cv2.undistortPoints
    with its default criteria (5 iterations) stops early and is off by up to ~0.4 px at the
    corners of strongly distorted images; with ``criteria=(COUNT|EPS, 200, 1e-15)`` it agrees
    with this function to < 1e-9 px. Valid inside the region where the lens model is monotonic
    (the image, for real lenses). ``dist=None`` means no distortion.
    """
    check_shape(uv, "* J 2", "uv")
    xd = pixels_to_normalized(uv, K)
    if dist is None:
        return xd if normalized else uv
    d = dist.unsqueeze(-2)
    k1, k2, p1, p2, k3 = (d[..., i] for i in range(5))
    x = xd.clone()
    for _ in range(iters):
        xx, yy = x[..., 0], x[..., 1]
        r2 = xx * xx + yy * yy
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * xx * yy + p2 * (r2 + 2 * xx * xx)
        dy = p1 * (r2 + 2 * yy * yy) + 2 * p2 * xx * yy
        x = torch.stack([(xd[..., 0] - dx) / radial, (xd[..., 1] - dy) / radial], dim=-1)
    # Newton refinement: solve distort(x) = xd with the analytic 2x2 Jacobian.
    for _ in range(2):
        xx, yy = x[..., 0], x[..., 1]
        r2 = xx * xx + yy * yy
        radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        drad = 2 * (k1 + r2 * (2 * k2 + 3 * k3 * r2))  # d radial / d r2 * 2
        res = distort_normalized(x, dist) - xd
        j00 = radial + xx * drad * xx + 2 * p1 * yy + 6 * p2 * xx
        j01 = xx * drad * yy + 2 * p1 * xx + 2 * p2 * yy
        j10 = yy * drad * xx + 2 * p1 * xx + 2 * p2 * yy
        j11 = radial + yy * drad * yy + 6 * p1 * yy + 2 * p2 * xx
        det = j00 * j11 - j01 * j10
        ddx = (j11 * res[..., 0] - j01 * res[..., 1]) / det
        ddy = (-j10 * res[..., 0] + j00 * res[..., 1]) / det
        x = x - torch.stack([ddx, ddy], dim=-1)
    return x if normalized else normalized_to_pixels(x, K)


def projection_matrix(K: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``P = K [R | t]`` (*, 3, 4) from K (*, 3, 3), R (*, 3, 3), t (*, 3) (H&Z 6.1, eq. 6.8).

    Maps homogeneous world points to *undistorted* pixels: undistort observations first
    (:func:`undistort_points`) before using P, e.g. in the DLT (H&Z 12.2).
    """
    return K @ torch.cat([R, t.unsqueeze(-1)], dim=-1)


def _wh(v, like: torch.Tensor) -> torch.Tensor:
    # width/height: a number or a (*,) tensor broadcasting against points (*, J, 2)
    return torch.as_tensor(v, dtype=like.dtype, device=like.device)[..., None]


def normalize_screen(uv: torch.Tensor, width, height) -> torch.Tensor:
    """Pixels (*, J, 2) -> screen coords: x = u/w*2 - 1, y = v/w*2 - h/w (VideoPose3D).

    Keeps the aspect ratio: x spans [-1, 1], y spans [-h/w, h/w].
    """
    w, h = _wh(width, uv), _wh(height, uv)
    return torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / w * 2 - h / w], dim=-1)


def unnormalize_screen(xy: torch.Tensor, width, height) -> torch.Tensor:
    """Inverse of :func:`normalize_screen`."""
    w, h = _wh(width, xy), _wh(height, xy)
    return torch.stack([(xy[..., 0] + 1) * w / 2, (xy[..., 1] + h / w) * w / 2], dim=-1)


# --------------------------------------------------------------------------- converters
def quaternion_to_matrix(q: torch.Tensor, scalar_first: bool = True) -> torch.Tensor:
    """Unit quaternion (*, 4) -> rotation matrix (*, 3, 3). ``scalar_first``: (w, x, y, z)."""
    check_shape(q, "* 4", "q")
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1) if scalar_first else (q[..., 3], q[..., 0], q[..., 1], q[..., 2])
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


def extrinsics_from_h36m(orientation_wxyz, center_mm) -> tuple[torch.Tensor, torch.Tensor]:
    """Human3.6M's published extrinsics (VideoPose3D ``h36m_cameras_extrinsic_params``) -> (R, t).

    ``orientation`` is the camera->world rotation as a scalar-first quaternion and
    ``translation`` the camera centre C in world millimetres. Hence R = R_c2w^T and
    t = -R C / 1000 (metres).
    """
    q = _t(orientation_wxyz)
    c = _t(center_mm) / 1000.0
    R = quaternion_to_matrix(q, scalar_first=True).transpose(-1, -2)
    t = -(R @ c.unsqueeze(-1)).squeeze(-1)
    return R, t


def extrinsics_from_martinez(R, T_mm) -> tuple[torch.Tensor, torch.Tensor]:
    """Martinez et al.'s ``cameras.h5`` form (x_cam = R (X - T), T centre in mm) -> (R, t metres)."""
    R = _t(R)
    c = _t(T_mm).reshape(R.shape[:-2] + (3,)) / 1000.0
    return R, -(R @ c.unsqueeze(-1)).squeeze(-1)


def intrinsics_matrix(fx, fy, cx, cy) -> torch.Tensor:
    """K from focal lengths and principal point (pixels)."""
    fx, fy, cx, cy = (_t(v) for v in (fx, fy, cx, cy))
    z, o = torch.zeros_like(fx), torch.ones_like(fx)
    return torch.stack([fx, z, cx, z, fy, cy, z, z, o], dim=-1).reshape(fx.shape + (3, 3))


def dist_from_h36m(radial_k123, tangential_p12) -> torch.Tensor:
    """Human3.6M's (k1, k2, k3) and (p1, p2) -> OpenCV order (k1, k2, p1, p2, k3).

    pose3d then applies OpenCV's tangential model. Human3.6M's own code (and Martinez's
    ``project_point_radial``) uses ``x' = x (radial + p1 y + p2 x) + p2 r^2``, a different
    tangential form: for S1 camera 54138969 the two differ by at most 0.56 px at the image
    corners (tests/test_camera.py measures it).
    """
    k = _t(radial_k123)
    p = _t(tangential_p12)
    return torch.stack([k[..., 0], k[..., 1], p[..., 0], p[..., 1], k[..., 2]], dim=-1)


# --------------------------------------------------------------------------- Camera record
@dataclass(frozen=True)
class Camera:
    """One calibrated camera (numpy at I/O, float64). x_cam = R @ x_world + t (metres)."""

    K: np.ndarray
    dist: np.ndarray
    R: np.ndarray
    t: np.ndarray
    width: int
    height: int
    name: str = ""

    def __post_init__(self):
        for field, shape in (("K", (3, 3)), ("dist", (5,)), ("R", (3, 3)), ("t", (3,))):
            v = np.asarray(getattr(self, field), dtype=np.float64)
            if v.shape != shape:
                raise ValueError(f"Camera {self.name!r}: {field} has shape {v.shape}, expected {shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"Camera {self.name!r}: {field} has non-finite values")
            object.__setattr__(self, field, v)
        if not np.allclose(self.R @ self.R.T, np.eye(3), atol=1e-5) or np.linalg.det(self.R) < 0:
            raise ValueError(f"Camera {self.name!r}: R is not a rotation matrix")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"Camera {self.name!r}: image size {self.width}x{self.height} must be positive")
        if not (self.K[0, 0] > 0 and self.K[1, 1] > 0) or not np.allclose(self.K[2], [0, 0, 1]):
            raise ValueError(f"Camera {self.name!r}: K needs focal lengths > 0 and a last row 0 0 1 "
                             f"(fx = {self.K[0, 0]:g}, fy = {self.K[1, 1]:g}, last row {self.K[2].tolist()})")

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates, C = -R^T t."""
        return -self.R.T @ self.t

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "dist": self.dist.tolist(), "R": self.R.tolist(),
                "t": self.t.tolist(), "width": int(self.width), "height": int(self.height)}

    @classmethod
    def from_dict(cls, d: dict, name: str = "") -> "Camera":
        return cls(K=d["K"], dist=d["dist"], R=d["R"], t=d["t"], width=int(d["width"]),
                   height=int(d["height"]), name=name)

    def tensors(self, dtype=torch.float64, device=None) -> dict[str, torch.Tensor]:
        """{'K', 'dist', 'R', 't'} as tensors, for the batched functions above."""
        return {k: torch.as_tensor(getattr(self, k), dtype=dtype, device=device)
                for k in ("K", "dist", "R", "t")}

    def project(self, x_world) -> np.ndarray:
        """World points (*, J, 3) metres -> distorted pixels (*, J, 2) (numpy convenience)."""
        c = self.tensors()
        return project(_t(x_world), c["K"], c["dist"], c["R"], c["t"]).numpy()


def stack_cameras(cams: list[Camera], dtype=torch.float64, device=None) -> dict[str, torch.Tensor]:
    """A list of V cameras -> {'K' (V,3,3), 'dist' (V,5), 'R' (V,3,3), 't' (V,3)}."""
    return {k: torch.as_tensor(np.stack([getattr(c, k) for c in cams]), dtype=dtype, device=device)
            for k in ("K", "dist", "R", "t")}
