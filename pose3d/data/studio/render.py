"""The studio's renderer: a ray-cast body of capsules and ellipsoids filmed by distorted cameras.

Every pixel (u, v) of the output image is looked up *through the lens*: its ray is the
undistorted normalised direction ``(x, y, 1)`` of :func:`pose3d.geometry.camera.undistort_points`
at that distorted pixel. Hence a 3D point is drawn exactly where
:func:`pose3d.geometry.camera.project` puts it (distortion included), which is the 2D ground
truth everybody uses; there is no separate warp.

The body (per frame, from the 17 joints only, so real mocap renders the same way): head
(skin ellipsoid, hair ellipsoid behind and on top, a nose), neck, chest/abdomen/pelvis
ellipsoids, shoulder spheres, upper arm/forearm/hand capsules, two-part thighs, shins and shoe
capsules. A z-buffer resolves occlusion per pixel, also between body parts. Shading is Lambert
with ambient occlusion by normal, under a per-sequence directional light; clothing colours
vary per subject (left and right sides are dressed alike; a print on the shirt's front and a belt
buckle in a contrasting colour tell front from back, as real clothes do). Background: a textured room
(tiled floor, panelled walls with doors and posters, ceiling) ray-cast once per camera, a soft
contact shadow under the person, slight optical blur and sensor noise.

Units: metres, world Z up; images are (H, W, 3) uint8 BGR when written (OpenCV), RGB float
in [0, 1] inside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pose3d.data.studio.anthropometry import Subject
from pose3d.geometry.camera import Camera
from pose3d.skeleton import JOINT_INDEX

J = JOINT_INDEX
_ROOM_HALF = 6.0      # the room spans [-6, 6] m in x and y
_ROOM_HEIGHT = 3.4    # ceiling height, m


# --------------------------------------------------------------------------- camera rays
def pixel_rays(cam: Camera) -> np.ndarray:
    """(H, W, 3) float32 camera-frame ray directions (x, y, 1) of every distorted pixel centre.

    A point at depth z on the ray of pixel (u, v) is ``z * rays[v, u]``; its distorted
    projection is (u, v).
    """
    u, v = np.meshgrid(np.arange(cam.width, dtype=np.float64), np.arange(cam.height, dtype=np.float64))
    xy = undistort_pixels(cam, np.stack([u.ravel(), v.ravel()], -1))
    rays = np.concatenate([xy, np.ones((xy.shape[0], 1))], -1)
    return rays.reshape(cam.height, cam.width, 3).astype(np.float32)


def undistort_pixels(cam: Camera, uv: np.ndarray, iters: int = 8) -> np.ndarray:
    """Distorted pixels (N, 2) -> undistorted normalised coords (N, 2), float64.

    Numpy version of :func:`pose3d.geometry.camera.undistort_points` for whole images (fast on
    CPU): a few fixed-point steps, then Newton steps on the forward model with a numerical
    Jacobian; the round trip through :func:`_distort_project` is below 1e-6 px.
    """
    K = cam.K
    yd = (uv[:, 1] - K[1, 2]) / K[1, 1]
    xd = (uv[:, 0] - K[0, 2] - K[0, 1] * yd) / K[0, 0]
    target = np.stack([xd, yd], -1)
    k1, k2, p1, p2, k3 = cam.dist

    def distort(q):
        x, y = q[:, 0], q[:, 1]
        r2 = x * x + y * y
        rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        return np.stack([x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                         y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y], -1)

    q = target.copy()
    for _ in range(iters):
        x, y = q[:, 0], q[:, 1]
        r2 = x * x + y * y
        rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        q = np.stack([(xd - dx) / rad, (yd - dy) / rad], -1)
    eps = 1e-7
    for _ in range(3):
        f0 = distort(q) - target
        jx = (distort(q + [eps, 0]) - distort(q - [eps, 0])) / (2 * eps)
        jy = (distort(q + [0, eps]) - distort(q - [0, eps])) / (2 * eps)
        det = jx[:, 0] * jy[:, 1] - jy[:, 0] * jx[:, 1]
        q = q - np.stack([(jy[:, 1] * f0[:, 0] - jy[:, 0] * f0[:, 1]) / det,
                          (-jx[:, 1] * f0[:, 0] + jx[:, 0] * f0[:, 1]) / det], -1)
    return q


def _distort_project(cam: Camera, x_cam: np.ndarray) -> np.ndarray:
    """Numpy twin of geometry.camera.project_camera for a few points (N, 3) -> (N, 2) pixels."""
    xy = x_cam[:, :2] / x_cam[:, 2:3]
    k1, k2, p1, p2, k3 = cam.dist
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    K = cam.K
    return np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], -1)


# --------------------------------------------------------------------------- background
def _fbm(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, octaves: int = 4,
         scale: float = 1.0) -> np.ndarray:
    """Smooth pseudo-random texture (sum of oriented sinusoids), roughly in [-1, 1]."""
    out = np.zeros_like(x)
    for o in range(octaves):
        f = scale * 2 ** o
        th = rng.uniform(0, np.pi, 3)
        ph = rng.uniform(0, 2 * np.pi, 3)
        for k in range(3):
            out += np.sin(f * (np.cos(th[k]) * x + np.sin(th[k]) * y) + ph[k]) / (3 * 1.7 ** o)
    return out


def _hash01(i: np.ndarray, j: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic per-cell random numbers in [0, 1) for integer grids i, j."""
    h = (i.astype(np.int64) * 73856093) ^ (j.astype(np.int64) * 19349663) ^ salt
    h = (h * 2654435761) & 0xFFFFFFFF
    return (h % 10007) / 10007.0


def render_background(cam: Camera, rays: np.ndarray, room_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The empty room seen by ``cam``: RGB float32 (H, W, 3) in [0, 1], and the floor points
    (H, W, 2) world xy in metres (NaN where the pixel does not see the floor)."""
    rng = np.random.default_rng(room_seed)
    C = cam.center
    d = rays.reshape(-1, 3).astype(np.float64) @ cam.R  # world directions (R^T d)
    n = d.shape[0]
    t_best = np.full(n, np.inf)
    kind = np.full(n, -1)
    # planes: floor z=0 (0), ceiling (1), walls x=+-6 (2, 3), y=+-6 (4, 5)
    planes = [(2, 0.0), (2, _ROOM_HEIGHT), (0, _ROOM_HALF), (0, -_ROOM_HALF), (1, _ROOM_HALF), (1, -_ROOM_HALF)]
    for k, (ax, val) in enumerate(planes):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (val - C[ax]) / d[:, ax]
        ok = (t > 1e-6) & (t < t_best)
        t_best = np.where(ok, t, t_best)
        kind = np.where(ok, k, kind)
    P = C + t_best[:, None] * d
    col = np.zeros((n, 3))
    # floor: large tiles with grout and a carpet-like texture
    fl = kind == 0
    x, y = P[fl, 0], P[fl, 1]
    tile = 0.6
    ti, tj = np.floor(x / tile), np.floor(y / tile)
    fx, fy = x / tile - ti, y / tile - tj
    base_floor = np.array(rng.uniform([0.35, 0.32, 0.28], [0.6, 0.55, 0.5]))
    tone = 0.85 + 0.3 * _hash01(ti, tj, 17)
    grain = 0.06 * _fbm(x, y, rng, 4, 6.0)
    grout = np.minimum.reduce([fx, 1 - fx, fy, 1 - fy]) < 0.02
    c = base_floor[None] * (tone + grain)[:, None]
    c[grout] *= 0.55
    # a large rug in the middle, so the person stands on a different texture than the border
    rug = (np.abs(x) < 2.4) & (np.abs(y) < 2.4)
    rug_col = np.array(rng.uniform([0.2, 0.2, 0.25], [0.55, 0.45, 0.5]))
    stripes = 0.08 * np.sin(x * 9 + 3 * np.sin(y * 2.0)) + 0.05 * _fbm(x, y, rng, 3, 12.0)
    c[rug] = rug_col[None] * (1 + stripes[rug])[:, None]
    col[fl] = c
    # ceiling
    col[kind == 1] = 0.75 + 0.05 * _fbm(P[kind == 1, 0], P[kind == 1, 1], rng, 2, 1.0)[:, None]
    # walls: a colour each, a skirting board, panels, doors and posters
    for k in range(2, 6):
        m = kind == k
        if not m.any():
            continue
        s = P[m, 1] if planes[k][0] == 0 else P[m, 0]  # along the wall
        z = P[m, 2]
        wall = np.array(rng.uniform([0.45, 0.45, 0.45], [0.85, 0.82, 0.8]))
        c = wall[None] * (1 + 0.04 * _fbm(s, z, rng, 3, 4.0))[:, None]
        panel = (np.abs(((s / 1.2) % 1.0) - 0.5) > 0.48) & (z > 0.1)
        c[panel] *= 0.85
        c[z < 0.12] = np.array([0.25, 0.22, 0.2])
        for _ in range(int(rng.integers(2, 5))):  # doors / cupboards / posters
            s0, w = rng.uniform(-5, 4), rng.uniform(0.5, 1.4)
            z0 = rng.choice([0.0, rng.uniform(0.9, 1.6)])
            h = 2.1 if z0 == 0.0 else rng.uniform(0.4, 0.9)
            box = (s > s0) & (s < s0 + w) & (z > z0) & (z < z0 + h)
            bc = np.array(rng.uniform(0.1, 0.9, 3))
            c[box] = bc[None] * (1 + 0.1 * np.sin(z[box] * 20 * rng.uniform(0.5, 2)))[:, None]
        col[m] = c
    # soft studio lighting: brighter towards the capture volume's centre
    r = np.hypot(P[:, 0], P[:, 1])
    col *= (0.75 + 0.35 * np.exp(-(r / 3.5) ** 2))[:, None]
    floor_xy = np.where(fl[:, None], P[:, :2], np.nan)
    H, W = cam.height, cam.width
    return (np.clip(col, 0, 1).reshape(H, W, 3).astype(np.float32),
            floor_xy.reshape(H, W, 2).astype(np.float32))


# --------------------------------------------------------------------------- body primitives
@dataclass(frozen=True)
class Body:
    """Primitives for T frames, world frame. Capsules: (T, Nc, 2, 3) ends, (Nc,) radii,
    (Nc,) material ids. Ellipsoids: (T, Ne, 3) centres, (T, Ne, 3, 3) axes (columns),
    (Ne, 3) semi-axes, (Ne,) materials. Materials index ``MATERIALS``."""

    cap_ends: np.ndarray
    cap_radius: np.ndarray
    cap_mat: np.ndarray
    ell_centre: np.ndarray
    ell_axes: np.ndarray
    ell_semi: np.ndarray
    ell_mat: np.ndarray


MATERIALS = ("skin", "hair", "shirt", "trousers", "shoes", "front")
_M = {m: i for i, m in enumerate(MATERIALS)}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _frame(fwd: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Columns (fwd, left, up) (*, 3, 3) from approximate fwd and up (*, 3)."""
    up = _unit(up)
    fwd = _unit(fwd - (fwd * up).sum(-1, keepdims=True) * up)
    left = np.cross(up, fwd)
    return np.stack([fwd, left, up], -1)


def build_body(positions: np.ndarray, subject: Subject) -> Body:
    """Body primitives from joints (T, 17, 3) metres world (see module docstring)."""
    p = np.asarray(positions, np.float64)
    H, g = subject.stature, subject.girth
    zup = np.array([0.0, 0.0, 1.0])
    P = {n: p[:, i] for n, i in J.items()}
    hip_left = P["l_hip"] - P["r_hip"]
    pelvis_up = P["spine"] - P["pelvis"]
    body_fwd = _unit(np.cross(hip_left, pelvis_up))
    chest_left = P["l_shoulder"] - P["r_shoulder"]
    chest_up = P["thorax"] - P["spine"]
    chest_fwd = _unit(np.cross(chest_left, chest_up))
    th, nn, ht = P["thorax"], P["neck_nose"], P["head_top"]
    head_up = _unit(ht - th)
    head_R = _frame(2 * nn - th - ht, head_up)
    head_c = th + head_up * 0.112 * H + head_R[..., 0] * 0.012 * H

    ells, caps = [], []

    def ell(c, R, semi, mat):
        ells.append((c, R, np.asarray(semi, float), _M[mat]))

    def cap(a, b, r, mat):
        caps.append((a, b, float(r), _M[mat]))

    ell(head_c, head_R, (0.057 * H, 0.045 * H, 0.066 * H), "skin")
    ell(head_c - head_R[..., 0] * 0.013 * H + head_R[..., 2] * 0.008 * H, head_R,
        (0.056 * H, 0.048 * H, 0.066 * H), "hair")
    nose = head_c + head_R[..., 0] * 0.056 * H - head_R[..., 2] * 0.008 * H
    ell(nose, head_R, (0.012 * H, 0.009 * H, 0.014 * H), "skin")
    cap(th - head_up * 0.01 * H, head_c - head_up * 0.03 * H, 0.029 * H * g, "skin")
    chest_R = _frame(chest_fwd, chest_up)
    ell(P["spine"] + 0.55 * chest_up, chest_R, (0.062 * H * g, 0.088 * H * g, 0.115 * H), "shirt")
    ell(P["spine"], _frame(chest_fwd + body_fwd, chest_up + pelvis_up),
        (0.056 * H * g, 0.077 * H * g, 0.09 * H), "shirt")
    pelvis_R = _frame(body_fwd, pelvis_up)
    ell(P["pelvis"] + 0.15 * pelvis_up, pelvis_R, (0.062 * H * g, 0.094 * H * g, 0.07 * H), "trousers")
    # Front/back cues, as real clothes have them (a print, buttons, a buckle): without them the
    # mannequin is front/back symmetric apart from its small face, and a 2D network cannot tell
    # left from right on a person seen from behind. Both protrude ~1 cm from the surface.
    ell(P["spine"] + 0.5 * chest_up + chest_R[..., 0] * 0.056 * H * g, chest_R,
        (0.012 * H * g, 0.042 * H * g, 0.05 * H), "front")
    ell(P["pelvis"] + 0.22 * pelvis_up + pelvis_R[..., 0] * 0.058 * H * g, pelvis_R,
        (0.01 * H * g, 0.02 * H * g, 0.013 * H), "front")
    long_sleeves = subject.sleeves == "long"
    for s in ("l", "r"):
        sh, el, wr = P[f"{s}_shoulder"], P[f"{s}_elbow"], P[f"{s}_wrist"]
        ell(sh, chest_R, (0.033 * H * g,) * 3, "shirt")
        cap(sh, el, 0.026 * H * g, "shirt")
        cap(el, wr, 0.020 * H * g, "shirt" if long_sleeves else "skin")
        fore = _unit(wr - el)
        cap(wr + fore * 0.012 * H, wr + fore * 0.07 * H, 0.019 * H, "skin")
        hp, kn, an = P[f"{s}_hip"], P[f"{s}_knee"], P[f"{s}_ankle"]
        mid = hp + 0.5 * (kn - hp)
        cap(hp + 0.05 * (pelvis_up), mid, 0.050 * H * g, "trousers")
        cap(mid, kn, 0.038 * H * g, "trousers")
        cap(kn, an, 0.030 * H * g, "trousers")
        # the foot points along the body's forward direction, perpendicular to the shank
        shank = _unit(an - kn)
        ff = _unit(body_fwd - (body_fwd * shank).sum(-1, keepdims=True) * shank * 0.5)
        ff = _unit(ff - (ff * zup).sum(-1, keepdims=True) * zup * 0.8)
        drop = 0.015 * H
        cap(an - ff * 0.025 * H - zup * drop, an + ff * 0.095 * H - zup * drop * 1.3, 0.022 * H, "shoes")
    T = p.shape[0]
    return Body(
        cap_ends=np.stack([np.stack([a, b], 1) for a, b, _, _ in caps], 1).astype(np.float64),
        cap_radius=np.array([r for _, _, r, _ in caps]),
        cap_mat=np.array([m for *_, m in caps]),
        ell_centre=np.stack([np.broadcast_to(c, (T, 3)) for c, _, _, _ in ells], 1),
        ell_axes=np.stack([np.broadcast_to(R, (T, 3, 3)) for _, R, _, _ in ells], 1),
        ell_semi=np.stack([s for _, _, s, _ in ells]),
        ell_mat=np.array([m for *_, m in ells]),
    )


# --------------------------------------------------------------------------- ray casting
def _hit_capsule(D: np.ndarray, A: np.ndarray, B: np.ndarray, r: float, rdrd: np.ndarray):
    """Rays from the origin with directions D (h, w, 3) vs the capsule A-B of radius r
    (camera frame): (t (h, w) with inf on a miss, normals (h, w, 3))."""
    ba = B - A
    oa = -A
    baba = ba @ ba
    bard = D @ ba
    baoa = ba @ oa
    rdoa = D @ oa
    oaoa = oa @ oa
    a = baba * rdrd - bard * bard
    b = baba * rdoa - baoa * bard
    c = baba * oaoa - baoa * baoa - r * r * baba
    h = b * b - a * c
    ok = h >= 0
    sh = np.sqrt(np.where(ok, h, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (-b - sh) / a
    y = baoa + t * bard
    body = ok & (y > 0) & (y < baba)
    # caps: the sphere at the end the ray reaches first
    first = y <= 0  # the cap at A (else the one at B)
    b2 = np.where(first, rdoa, D @ -B)
    c2 = np.where(first, oaoa, B @ B) - r * r
    h2 = b2 * b2 - rdrd * c2
    tc = (-b2 - np.sqrt(np.maximum(h2, 0))) / rdrd
    t = np.where(body, t, np.where(ok & (h2 >= 0), tc, np.inf))
    t = np.where(t > 0, t, np.inf)
    P = t[..., None] * D
    P = np.where(np.isfinite(P), P, 0)
    s = np.clip(((P - A) @ ba) / baba, 0, 1)
    n = (P - A - s[..., None] * ba) / r
    return t, n


def _hit_ellipsoid(D: np.ndarray, c: np.ndarray, R: np.ndarray, semi: np.ndarray, rdrd=None):
    """Rays (h, w, 3) from the origin vs the ellipsoid centre c, axes R (columns), semi-axes."""
    o = (R.T @ (-c)) / semi
    d = (D @ R) / semi
    a = np.einsum("hwc,hwc->hw", d, d)
    b = d @ o
    cc = o @ o - 1
    h = b * b - a * cc
    t = np.where(h >= 0, (-b - np.sqrt(np.maximum(h, 0))) / a, np.inf)
    t = np.where(t > 0, t, np.inf)
    P = o + np.where(np.isfinite(t), t, 0)[..., None] * d
    n = (P / semi) @ R.T
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
    return t, n


@dataclass
class Lighting:
    """Per-sequence lighting: light direction (world, towards the light), colours, gains."""

    direction: np.ndarray
    ambient: float
    diffuse: float
    tint: np.ndarray
    background_gain: float
    noise_sigma: float  # sensor noise, in 0..255 units

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Lighting":
        az, el = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(35, 75))
        d = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.08, 0.08, 3)
        return cls(d, float(rng.uniform(0.35, 0.5)), float(rng.uniform(0.55, 0.8)), tint,
                   float(rng.uniform(0.8, 1.15)), float(rng.uniform(1.5, 4.0)))


class CameraView:
    """One camera's cached rays, background and floor points for a subject's room."""

    def __init__(self, cam: Camera, room_seed: int):
        self.cam = cam
        self.rays = pixel_rays(cam)
        self.rays_sq = np.einsum("hwc,hwc->hw", self.rays, self.rays)
        self.background, self.floor_xy = render_background(cam, self.rays, room_seed)
        self.f = float(cam.K[0, 0])


def render_frame(view: CameraView, body: Body, k: int, colors: np.ndarray, light: Lighting,
                 background: np.ndarray | None = None, shadow_joints: np.ndarray | None = None,
                 windows: list | None = None, canvas: np.ndarray | None = None,
                 zbuf: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``k`` of ``body`` seen by ``view``: RGB float32 (H, W, 3) and depth (H, W) (inf = bg).

    ``colors`` (len(MATERIALS), 3) albedos; ``background`` the lit background (defaults to the
    view's); ``shadow_joints`` (J, 3) world joints casting a soft contact shadow; ``windows``, if
    given, collects the (v0, v1, u0, u1) image windows that were drawn into. ``canvas`` and
    ``zbuf``, if given, are drawn into in place (they must hold the background and inf; the
    caller restores the windows afterwards), which saves two full-frame copies per frame.
    """
    cam = view.cam
    H, W = cam.height, cam.width
    img = (view.background if background is None else background).copy() if canvas is None else canvas
    zbuf = np.full((H, W), np.inf, np.float32) if zbuf is None else zbuf
    R, tvec = cam.R, cam.t
    L = R @ light.direction  # light direction in the camera frame
    up_c = R[:, 2]           # world up in the camera frame

    if shadow_joints is not None:
        win = _contact_shadow(view, img, shadow_joints, light)
        if win is not None and windows is not None:
            windows.append(win)

    def bbox(centre_c: np.ndarray, radius: float):
        if centre_c[2] < 0.2:
            return None
        uv = _distort_project(cam, centre_c[None])[0]
        r = radius * view.f / max(centre_c[2] - radius, 0.1) * 1.15 + 2
        u0, u1 = int(max(uv[0] - r, 0)), int(min(uv[0] + r + 1, W))
        v0, v1 = int(max(uv[1] - r, 0)), int(min(uv[1] + r + 1, H))
        if u0 >= u1 or v0 >= v1:
            return None
        if windows is not None:
            windows.append((v0, v1, u0, u1))
        return v0, v1, u0, u1

    def shade_write(win, t, n, mat):
        v0, v1, u0, u1 = win
        zb = zbuf[v0:v1, u0:u1]
        m = t < zb
        if not m.any():
            return
        nm = n[m]
        lam = np.clip(nm @ L, 0, None)
        ao = 0.8 + 0.2 * (nm @ up_c)  # faces looking up are brighter
        shade = (light.ambient * ao + light.diffuse * lam)[:, None]
        img[v0:v1, u0:u1][m] = colors[mat][None] * shade * light.tint[None]
        zb[m] = t[m]

    ends_c = body.cap_ends[k] @ R.T + tvec  # (Nc, 2, 3)
    for i in range(ends_c.shape[0]):
        A, B = ends_c[i]
        r = body.cap_radius[i]
        win = bbox(0.5 * (A + B), 0.5 * np.linalg.norm(B - A) + r)
        if win is None:
            continue
        v0, v1, u0, u1 = win
        t, n = _hit_capsule(view.rays[v0:v1, u0:u1], A.astype(np.float32), B.astype(np.float32),
                            np.float32(r), view.rays_sq[v0:v1, u0:u1])
        shade_write(win, t, n, body.cap_mat[i])
    cen_c = body.ell_centre[k] @ R.T + tvec
    axes_c = R @ body.ell_axes[k]  # (Ne, 3, 3)
    for i in range(cen_c.shape[0]):
        win = bbox(cen_c[i], float(body.ell_semi[i].max()))
        if win is None:
            continue
        v0, v1, u0, u1 = win
        t, n = _hit_ellipsoid(view.rays[v0:v1, u0:u1], cen_c[i].astype(np.float32),
                              axes_c[i].astype(np.float32), body.ell_semi[i].astype(np.float32))
        shade_write(win, t, n, body.ell_mat[i])
    return img, zbuf


_SHADOW_JOINTS = tuple(J[n] for n in ("pelvis", "l_ankle", "r_ankle", "thorax"))


def _contact_shadow(view: CameraView, img: np.ndarray, joints: np.ndarray, light: Lighting) -> None:
    """Darken the floor under the person: Gaussian blobs at the joints' floor projections
    along the light (shifted by height), restricted to the person's floor footprint window."""
    cam = view.cam
    d = light.direction
    shift = -joints[:, 2:3] * d[None, :2] / max(d[2], 0.3)  # where the light casts each joint
    pts = joints[:, :2] + 0.6 * shift
    lo, hi = pts.min(0) - 0.5, pts.max(0) + 0.5
    corners = np.array([[lo[0], lo[1], 0], [hi[0], lo[1], 0], [lo[0], hi[1], 0], [hi[0], hi[1], 0]])
    cc = corners @ cam.R.T + cam.t
    if (cc[:, 2] < 0.2).any():
        return None
    uv = _distort_project(cam, cc)
    u0, v0 = np.floor(uv.min(0)).astype(int)
    u1, v1 = np.ceil(uv.max(0)).astype(int) + 1
    u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, cam.width), min(v1, cam.height)
    if u0 >= u1 or v0 >= v1:
        return None
    fxy = view.floor_xy[v0:v1, u0:u1]
    valid = np.isfinite(fxy[..., 0])
    if not valid.any():
        return None
    q = np.where(valid[..., None], fxy, 1e3)
    sig2 = 0.16 ** 2
    dens = np.zeros(q.shape[:2], np.float32)
    heights = joints[:, 2]
    for j in _SHADOW_JOINTS:
        w = 0.45 * np.exp(-heights[j] / 0.8)
        dens += w * np.exp(-((q[..., 0] - pts[j, 0]) ** 2 + (q[..., 1] - pts[j, 1]) ** 2) / sig2)
    img[v0:v1, u0:u1] *= (1 - np.clip(dens, 0, 0.6))[..., None]
    return v0, v1, u0, u1


# --------------------------------------------------------------------------- sequences -> mp4
def material_colors(subject: Subject) -> np.ndarray:
    return np.array([subject.colors[m] for m in MATERIALS], np.float64)


def render_sequence(positions: np.ndarray, subject: Subject, views: dict[str, CameraView],
                    out_paths: dict[str, Path], fps: float, seed: int,
                    blur_sigma: float = 0.6) -> int:
    """Render joints (T, 17, 3) m for every camera into mp4v files; returns frames written.

    Frame k of every file shows ``positions[k]``. Lighting and noise come from ``seed``.
    """
    rng = np.random.default_rng(seed)
    light = Lighting.random(rng)
    colors = material_colors(subject)
    body = build_body(positions, subject)
    T = positions.shape[0]
    for name, view in views.items():
        cam = view.cam
        bg = np.clip(view.background * light.background_gain * light.tint[None, None], 0, 1)
        bg_final = cv2.GaussianBlur(bg * 255.0, (0, 0), blur_sigma) if blur_sigma > 0 else bg * 255.0
        noise = [rng.normal(0, light.noise_sigma, (cam.height, cam.width, 3)).astype(np.float32)
                 for _ in range(4)]
        # the static part of each frame, noise included, precomputed (uint8 BGR)
        bg_noisy = [cv2.cvtColor(np.clip(bg_final + n, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
                    for n in noise]
        canvas = bg.copy()
        zbuf = np.full((cam.height, cam.width), np.inf, np.float32)
        path = Path(out_paths[name])
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (cam.width, cam.height))
        if not writer.isOpened():
            raise OSError(f"{path}: cannot open an mp4v video writer")
        try:
            for k in range(T):
                wins: list = []
                render_frame(view, body, k, colors, light, bg, positions[k], windows=wins,
                             canvas=canvas, zbuf=zbuf)
                i = int(rng.integers(len(noise)))
                out = bg_noisy[i].copy()
                if wins:  # only the drawn window changes: blur it (with a margin) and paste it
                    m = 4
                    v0 = max(min(w[0] for w in wins) - m, 0)
                    v1 = min(max(w[1] for w in wins) + m, cam.height)
                    u0 = max(min(w[2] for w in wins) - m, 0)
                    u1 = min(max(w[3] for w in wins) + m, cam.width)
                    patch = canvas[v0:v1, u0:u1] * 255.0
                    if blur_sigma > 0:
                        patch = cv2.GaussianBlur(patch, (0, 0), blur_sigma)
                    patch += noise[i][v0:v1, u0:u1]
                    np.clip(patch, 0, 255, out=patch)
                    out[v0:v1, u0:u1] = cv2.cvtColor(patch.astype(np.uint8), cv2.COLOR_RGB2BGR)
                    canvas[v0:v1, u0:u1] = bg[v0:v1, u0:u1]  # restore for the next frame
                    zbuf[v0:v1, u0:u1] = np.inf
                writer.write(out)
        finally:
            writer.release()
    return T


def finish_frame(img: np.ndarray, noise: np.ndarray | None, blur_sigma: float = 0.6) -> np.ndarray:
    """RGB float [0, 1] -> BGR uint8 with optical blur and sensor noise."""
    out = img * 255.0
    if blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur_sigma)
    if noise is not None:
        out += noise
    np.clip(out, 0, 255, out=out)
    return cv2.cvtColor(out.astype(np.uint8), cv2.COLOR_RGB2BGR)
