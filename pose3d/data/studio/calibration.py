"""The studio's calibration takes: a printed board filmed by every camera, with the true cameras.

A board (:class:`pose3d.data.boards.BoardSpec`) is drawn into the empty room through the same
lens model as the films (:mod:`pose3d.data.studio.render`): every output pixel is split into
``supersample``\\ ² sub-pixels, each sub-pixel's *distorted* position is undistorted to its
ray (:func:`pose3d.data.studio.render.undistort_pixels`), the ray is cut with the board's
plane and the printed texture is read there (bilinear); the pixel is the mean of its
sub-pixels. So a board corner appears exactly where :func:`pose3d.geometry.camera.project`
puts it (distortion included), with antialiased edges, then the films' optical blur and sensor
noise. The back of the board is plain grey (a viewer behind it sees no pattern).

Takes (``render_calibration_takes``), written as ``<out>/<take>/<camera>.mp4`` (or image
folders): ``board`` (a board held at random places and tilts in the capture volume, each pose
facing some of the cameras), and ``floor`` (a board lying still on the floor, printed side up,
which fixes the world frame: see :func:`floor_pose`). Units: metres, world Z up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pose3d.data.boards import BoardSpec
from pose3d.data.io import atomic_dir
from pose3d.data.studio.seeds import stable_seed
from pose3d.data.studio.render import CameraView, _distort_project, finish_frame, undistort_pixels
from pose3d.geometry.camera import Camera

log = logging.getLogger(__name__)

MARGIN_SQUARES = 0.5  # white border of the print around the pattern, in squares
_PX_PER_SQUARE = 64


@dataclass(frozen=True)
class BoardPose:
    """Board frame -> world: ``x_world = R @ x_board + t`` (metres)."""
    R: np.ndarray
    t: np.ndarray


def floor_pose(offset_xy: tuple[float, float] = (0.0, 0.0)) -> BoardPose:
    """A board lying printed side up on the floor z = 0: its x along world X, its y along
    world -Y, its z (into the board) along world -Z, its origin at world (ox, oy, 0)."""
    return BoardPose(np.diag([1.0, -1.0, -1.0]), np.array([offset_xy[0], offset_xy[1], 0.0]))


def held_board_poses(board: BoardSpec, n: int, seed: int, radius: float = 1.0,
                     z_range: tuple[float, float] = (0.6, 1.7), tilt_deg: float = 30.0,
                     roll_deg: float = 30.0) -> list[BoardPose]:
    """``n`` poses of a hand-held board: centre uniform in a disc of ``radius`` m around the
    volume's axis at a height in ``z_range``; printed side facing a uniformly random azimuth,
    tilted up/down by up to ``tilt_deg`` and turned in its plane by up to ``roll_deg``."""
    rng = np.random.default_rng(stable_seed(seed, "held-board"))
    w, h = board.size_m
    up = np.array([0.0, 0.0, 1.0])
    out = []
    for _ in range(n):
        r, a = radius * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
        centre = np.array([r * np.cos(a), r * np.sin(a), rng.uniform(*z_range)])
        az, el = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(-tilt_deg, tilt_deg))
        v = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])  # to the viewer
        z = -v
        y = -up - np.dot(-up, z) * z
        y /= np.linalg.norm(y)
        x = np.cross(y, z)
        psi = np.deg2rad(rng.uniform(-roll_deg, roll_deg))  # turn about z
        x, y = np.cos(psi) * x + np.sin(psi) * y, -np.sin(psi) * x + np.cos(psi) * y
        R = np.stack([x, y, z], -1)
        out.append(BoardPose(R, centre - R @ np.array([w / 2, h / 2, 0.0])))
    return out


def subpixel_rays(cam: Camera, supersample: int = 4) -> np.ndarray:
    """(H S, W S, 2) float32 undistorted normalised coords of the S x S sub-pixel centres of
    every pixel (S = ``supersample``); sub-pixel (a, b) of pixel (u, v) sits at
    ``u + (b + 0.5) / S - 0.5``, ``v + (a + 0.5) / S - 0.5``."""
    S = supersample
    off = (np.arange(S) + 0.5) / S - 0.5
    uu = (np.arange(cam.width)[:, None] + off[None, :]).ravel()
    vv = (np.arange(cam.height)[:, None] + off[None, :]).ravel()
    U, V = np.meshgrid(uu, vv)
    q = undistort_pixels(cam, np.stack([U.ravel(), V.ravel()], -1))
    return q.reshape(U.shape + (2,)).astype(np.float32)


def render_board(cam: Camera, rays: np.ndarray, board: BoardSpec, texture: np.ndarray, pose: BoardPose,
                 base: np.ndarray, shade: float = 1.0) -> np.ndarray:
    """Draw the board at ``pose`` over ``base`` (H, W, 3) RGB float in [0, 1] -> a new image.

    ``rays`` is :func:`subpixel_rays` of ``cam`` (its supersampling factor is read from its
    shape); ``texture`` is ``board.texture(64, MARGIN_SQUARES)``; ``shade`` scales the print's
    brightness (lighting). See the module docstring for the per-sub-pixel ray cast.
    """
    R_cb = cam.R @ pose.R
    t_cb = cam.R @ pose.t + cam.t
    s = board.square_m
    m = MARGIN_SQUARES * s
    w, h = board.size_m
    # the print's outline, densely (the lens bends straight edges)
    e = np.linspace(0, 1, 25)
    xs = np.concatenate([-m + e * (w + 2 * m), np.full(25, w + m), w + m - e * (w + 2 * m), np.full(25, -m)])
    ys = np.concatenate([np.full(25, -m), -m + e * (h + 2 * m), np.full(25, h + m), h + m - e * (h + 2 * m)])
    Xc = np.stack([xs, ys, np.zeros_like(xs)], -1) @ R_cb.T + t_cb
    out = base.copy()
    if (Xc[:, 2] <= 0.05).all():
        return out
    H, W = cam.height, cam.width
    r_lim = 1.2 * np.hypot(W, H) / 2 / cam.K[0, 0]  # beyond this the polynomial lens model folds
    front = Xc[:, 2] > 0.05
    xy = Xc[front, :2] / Xc[front, 2:3]
    if (~front).any() or (np.hypot(xy[:, 0], xy[:, 1]) > r_lim).any():
        u0, v0, u1, v1 = 0, 0, W, H
    else:
        uv = _distort_project(cam, Xc)
        u0, v0 = (np.floor(uv.min(0)) - 2).astype(int)
        u1, v1 = (np.ceil(uv.max(0)) + 3).astype(int)
        u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, W), min(v1, H)
        if u1 <= u0 or v1 <= v0:
            return out
    S = rays.shape[0] // H
    q = rays[v0 * S:v1 * S, u0 * S:u1 * S].reshape(-1, 2).astype(np.float64)  # (h S * w S, 2)
    grid = ((v1 - v0) * S, (u1 - u0) * S)
    rays = np.concatenate([q, np.ones((q.shape[0], 1))], -1)
    n = R_cb[:, 2]
    denom = rays @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = float(n @ t_cb) / denom
    Xb = (lam[:, None] * rays - t_cb) @ R_cb  # R_cb^T (X_c - t)
    inside = (lam > 0) & (Xb[:, 0] >= -m) & (Xb[:, 0] <= w + m) & (Xb[:, 1] >= -m) & (Xb[:, 1] <= h + m)
    inside &= np.hypot(q[:, 0], q[:, 1]) < r_lim
    facing = (-R_cb.T @ t_cb)[2] < 0  # the camera is on the printed side
    if facing:
        col = ((Xb[:, 0] / s + MARGIN_SQUARES) * _PX_PER_SQUARE - 0.5).astype(np.float32)
        row = ((Xb[:, 1] / s + MARGIN_SQUARES) * _PX_PER_SQUARE - 0.5).astype(np.float32)
        tex = cv2.remap(texture, col.reshape(grid), row.reshape(grid), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE).ravel()
        value = shade * (0.04 + 0.88 * tex)  # ink and paper albedo
    else:
        value = np.full(q.shape[0], 0.3 * shade)
    patch = np.repeat(np.repeat(out[v0:v1, u0:u1], S, 0), S, 1).reshape(-1, 3)
    patch = np.where(inside[:, None], value[:, None], patch).reshape(v1 - v0, S, u1 - u0, S, 3)
    out[v0:v1, u0:u1] = patch.mean(axis=(1, 3))
    return out


def _shade(pose: BoardPose, light_dir: np.ndarray) -> float:
    """Lambert on the printed side (normal -z of the board) plus ambient light."""
    normal = -pose.R[:, 2]
    return float(0.55 + 0.45 * abs(normal @ light_dir))


def render_take(views: dict[str, CameraView], rays: dict[str, np.ndarray], board: BoardSpec,
                poses: list[BoardPose], out_dir: Path, seed: int, fmt: str = "mp4", fps: float = 10.0,
                progress=None) -> None:
    """Film ``poses`` (one per frame) with every camera: ``<out_dir>/<camera>.mp4`` (``fmt``
    "mp4") or ``<out_dir>/<camera>/<frame:05d>.png`` ("png"); written atomically per take.
    ``rays``: :func:`subpixel_rays` per camera. Repeated poses are drawn once (new noise each
    frame)."""
    if fmt not in ("mp4", "png"):
        raise ValueError(f"fmt = {fmt!r}: expected 'mp4' or 'png'")
    texture = board.texture(_PX_PER_SQUARE, MARGIN_SQUARES)
    rng = np.random.default_rng(stable_seed(seed, "take", out_dir.name))
    light = np.array([0.3, -0.4, 0.87])
    light /= np.linalg.norm(light)
    with atomic_dir(out_dir) as tmp:
        for name, view in views.items():
            cam = view.cam
            noise = [rng.normal(0, 2.0, (cam.height, cam.width, 3)).astype(np.float32) for _ in range(4)]
            writer = None
            if fmt == "mp4":
                writer = cv2.VideoWriter(str(tmp / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (cam.width, cam.height))
                if not writer.isOpened():
                    raise OSError(f"{tmp / name}.mp4: cannot open an mp4v video writer")
            else:
                (tmp / name).mkdir()
            try:
                img, last = None, None
                for k, pose in enumerate(poses):
                    if pose is not last:
                        img = render_board(cam, rays[name], board, texture, pose, view.background,
                                           _shade(pose, light))
                        last = pose
                    frame = finish_frame(img, noise[int(rng.integers(4))])
                    if writer is not None:
                        writer.write(frame)
                    else:
                        cv2.imwrite(str(tmp / name / f"{k:05d}.png"), frame)
                    if progress:
                        progress(1)
            finally:
                if writer is not None:
                    writer.release()


def render_calibration_takes(cameras: dict[str, Camera], out_dir: str | Path, board: BoardSpec,
                             floor_board: BoardSpec, n_views: int = 200, floor_frames: int = 5,
                             floor_offset: tuple[float, float] = (0.0, 0.0), seed: int = 0,
                             room_seed: int = 0, fmt: str = "mp4", progress=None) -> dict:
    """Render the ``board`` take (``n_views`` held poses) and the ``floor`` take (``floor_board``
    lying at :func:`floor_pose` (``floor_offset``) for ``floor_frames`` frames) of one rig.

    Returns {"board": [BoardPose], "floor": BoardPose}: the true board poses (world).
    """
    out_dir = Path(out_dir)
    views = {n: CameraView(c, room_seed) for n, c in cameras.items()}
    rays = {n: subpixel_rays(c) for n, c in cameras.items()}
    held = held_board_poses(board, n_views, seed)
    floor = floor_pose(floor_offset)
    render_take(views, rays, board, held, out_dir / "board", seed, fmt, progress=progress)
    render_take(views, rays, floor_board, [floor] * floor_frames, out_dir / "floor", seed, fmt,
                progress=progress)
    return {"board": held, "floor": floor}
