"""Rotation helpers: pure batched, differentiable torch functions over leading ``*`` dims.

Conventions (see also :mod:`pose3d.geometry.camera`):

* rotation matrices act on column vectors, ``x' = R @ x``; poses ``(*, J, 3)`` are rotated as
  ``x @ R.transpose(-1, -2)``;
* axis-angle ``v = theta * axis`` (radians, right-hand rule), ``theta`` in ``[0, pi]``;
* quaternions are unit, ``(w, x, y, z)`` when ``scalar_first=True`` (Hamilton, as Human3.6M and
  VideoPose3D store them) and ``(x, y, z, w)`` otherwise (scipy's order), canonical ``w >= 0``;
* cameras follow OpenCV: x right, y down, z forward, ``x_cam = R @ x_world + t``.
"""

from __future__ import annotations

import torch

from pose3d.geometry.camera import quaternion_to_matrix
from pose3d.geometry.shapes import check_shape

__all__ = [
    "skew", "axis_angle_to_matrix", "matrix_to_axis_angle", "matrix_to_quaternion",
    "quaternion_to_matrix", "rotation_angle_deg", "random_rotation", "rotation_about_axis",
    "look_at",
]

_AXES = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrix ``[v]_x`` (*, 3, 3) of ``v`` (*, 3): ``[v]_x @ u = v x u`` (H&Z A4.5)."""
    check_shape(v, "* 3", "v")
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle ``v`` (*, 3) radians -> rotation matrix (*, 3, 3).

    ``R = I + sin(th)/th [v]_x + (1 - cos(th))/th^2 [v]_x^2`` with ``th = |v|`` (H&Z A4.3.2).
    Near ``th = 0`` the coefficients use their Taylor series, so values and gradients are finite.
    """
    check_shape(v, "* 3", "v")
    th2 = (v * v).sum(-1)
    small = th2 < 1e-8
    th2_safe = torch.where(small, torch.ones_like(th2), th2)
    th = th2_safe.sqrt()
    a = torch.where(small, 1 - th2 / 6, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(th)) / th2_safe)
    K = skew(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand(K.shape)
    return eye + a[..., None, None] * K + b[..., None, None] * (K @ K)


def matrix_to_quaternion(R: torch.Tensor, scalar_first: bool = True) -> torch.Tensor:
    """Rotation matrix (*, 3, 3) -> unit quaternion (*, 4), canonical ``w >= 0``.

    Shepperd's method (J. Guidance & Control 1978): of the four candidate formulas
    (from ``4w^2 = 1 + tr R``, ``4x^2 = 1 + R00 - R11 - R22``, ...), each row is computed with
    the one with the largest denominator, which is stable for every rotation.
    """
    check_shape(R, "* 3 3", "R")
    m00, m01, m02 = R[..., 0, 0], R[..., 0, 1], R[..., 0, 2]
    m10, m11, m12 = R[..., 1, 0], R[..., 1, 1], R[..., 1, 2]
    m20, m21, m22 = R[..., 2, 0], R[..., 2, 1], R[..., 2, 2]
    # 4 * (w^2, x^2, y^2, z^2)
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                      1 - m00 + m11 - m22, 1 - m00 - m11 + m22], dim=-1)
    # candidate k = 4 * q_k * q  (rows: derived from the largest component w, x, y, z)
    cand = torch.stack([
        torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, sq[..., 2], m21 + m12], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, sq[..., 3]], dim=-1),
    ], dim=-2)  # (*, 4 candidates, 4)
    best = sq.argmax(dim=-1)  # (*,)
    denom = 2 * sq.clamp_min(1e-12).sqrt()  # 4 |q_k| -> divide to get q
    q = cand / denom[..., None]
    q = torch.gather(q, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)
    return q if scalar_first else torch.cat([q[..., 1:], q[..., :1]], dim=-1)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrix (*, 3, 3) -> axis-angle (*, 3), angle in ``[0, pi]`` (inverse of Rodrigues).

    Through the canonical quaternion ``(w, u)``: ``th = 2 atan2(|u|, w)``, ``v = th u / |u|``;
    for ``|u| -> 0`` the factor ``th / |u| -> 2 / w``.
    """
    q = matrix_to_quaternion(R, scalar_first=True)
    w, u = q[..., 0], q[..., 1:]
    n = u.norm(dim=-1)
    small = n < 1e-7
    n_safe = torch.where(small, torch.ones_like(n), n)
    factor = torch.where(small, 2 / w, 2 * torch.atan2(n_safe, w) / n_safe)
    return factor[..., None] * u


def rotation_angle_deg(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Geodesic distance between rotations (*, 3, 3) -> (*) degrees, in ``[0, 180]``.

    The angle of ``R1^T R2``: ``atan2(|vee(M - M^T)| / 2, (tr M - 1) / 2)`` (Hartley et al.,
    "Rotation averaging", IJCV 2013, eq. 2), accurate near 0 and 180 unlike ``acos``.
    """
    check_shape(R1, "* 3 3", "R1")
    check_shape(R2, "* 3 3", "R2")
    M = R1.transpose(-1, -2) @ R2
    s = torch.stack([M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0],
                     M[..., 1, 0] - M[..., 0, 1]], dim=-1).norm(dim=-1) / 2
    c = (M[..., 0, 0] + M[..., 1, 1] + M[..., 2, 2] - 1) / 2
    return torch.rad2deg(torch.atan2(s, c))


def random_rotation(n: int | None = None, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Rotations drawn uniformly (Haar measure): (n, 3, 3), or (3, 3) when ``n`` is None.

    A normalised 4D standard-normal vector is a uniform unit quaternion (Shoemake, "Uniform
    random rotations", Graphics Gems III, 1992).
    """
    shape = (1 if n is None else n, 4)
    q = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    R = quaternion_to_matrix(q / q.norm(dim=-1, keepdim=True), scalar_first=True)
    return R[0] if n is None else R


def rotation_about_axis(angle: torch.Tensor | float, axis: str | torch.Tensor = "z") -> torch.Tensor:
    """Rotation by ``angle`` (*) radians about ``axis`` -> (*, 3, 3), right-hand rule.

    ``axis`` is ``"x"``, ``"y"``, ``"z"`` (optionally with a ``-`` sign, e.g. ``"-y"``) or a
    direction (3,) / (*, 3), normalised here. ``rotation_about_axis(pi/2, "z") @ e_x = e_y``.
    """
    angle = angle if isinstance(angle, torch.Tensor) else torch.tensor(float(angle), dtype=torch.float64)
    if isinstance(axis, str):
        sign = -1.0 if axis.startswith("-") else 1.0
        key = axis.lstrip("+-").lower()
        if key not in _AXES:
            raise ValueError(f"rotation_about_axis: axis must be x, y, z or a vector, got {axis!r}")
        a = torch.tensor(_AXES[key], dtype=angle.dtype, device=angle.device) * sign
    else:
        check_shape(axis, "* 3", "axis")
        a = axis.to(angle.dtype)
        a = a / a.norm(dim=-1, keepdim=True)
    return axis_angle_to_matrix(angle[..., None] * a)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Extrinsics of a camera at ``eye`` (*, 3) looking at ``target`` (*, 3): ``R`` (*, 3, 3), ``t`` (*, 3).

    OpenCV convention (x right, y down, z forward), ``x_cam = R @ x_world + t``:
    ``z = (target - eye) / |.|``, ``x = z x up / |.|``, ``y = z x x`` (points down, i.e. along
    ``-up`` projected), ``R = [x; y; z]`` (rows), ``t = -R @ eye``. ``up`` (*, 3) defaults to
    world +Z (pose3d's world is Z up). Raises if ``up`` is parallel to the viewing direction.
    """
    check_shape(eye, "* 3", "eye")
    check_shape(target, "* 3", "target")
    if up is None:
        up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device)
    eye, target, up = torch.broadcast_tensors(eye, target, up.to(eye))
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(z, up)
    xn = x.norm(dim=-1, keepdim=True)
    if bool((xn < 1e-9 * up.norm(dim=-1, keepdim=True)).any()):
        raise ValueError("look_at: 'up' is parallel to the viewing direction (target - eye)")
    x = x / xn
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z], dim=-2)
    t = -(R @ eye.unsqueeze(-1)).squeeze(-1)
    return R, t
