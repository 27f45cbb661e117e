"""Multi-camera calibration from board views: intrinsics, pairwise extrinsics, bundle adjustment.

Conventions as :mod:`pose3d.geometry.camera`: ``x_cam = R @ x + t``, ``K`` with zero skew,
``dist = (k1, k2, p1, p2, k3)`` (OpenCV's 5-coefficient model), pixels with integer
coordinates at pixel centres. Board frames as :mod:`pose3d.data.boards`.

Steps (Zhang 2000 per camera, then a bundle adjustment as in Triggs et al. 2000 / H&Z 18.1):

1. :func:`calibrate_intrinsics`: ``cv2.calibrateCamera`` on a camera's board views (Zhang's
   homography initialisation + Levenberg-Marquardt), then every view's board pose by
   ``cv2.solvePnP`` (IPPE for planes) refined by LM.
2. :func:`initial_extrinsics`: for every camera pair, the relative pose ``T_a <- b =
   T_a <- board  T_b <- board ^-1`` over the views both saw, averaged robustly (chordal mean
   of the rotations after dropping views more than 3 median deviations away, median
   translation); then a maximum spanning tree over the pairs (weight: shared views) chains the
   cameras to the reference camera, whose frame is the frame of the solve.
3. :func:`bundle_adjust`: all cameras (6 extrinsic + fx fy cx cy + 5 distortion; the reference
   camera's extrinsics fixed, which fixes the gauge; the board's known size fixes the scale) and
   all board poses (6 each) by ``scipy.optimize.least_squares`` (trust region reflective,
   plain least squares, then a Huber loss on the pixel residual from there; the Jacobian's
   sparsity pattern given, so finite differences take one evaluation per group of
   structurally independent columns).
4. :func:`world_from_floor`: the floor board's pose (one more view in the adjustment) defines
   the world: X along the board's x, Y along its -y, Z up (out of the printed side), origin at
   the board origin shifted by ``offset`` (the world coordinates where the board origin lies).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation
import torch

from pose3d.data.io import DataError
from pose3d.geometry.camera import project

log = logging.getLogger(__name__)

N_CAM = 15  # rvec 3, tvec 3, fx fy cx cy, k1 k2 p1 p2 k3


@dataclass
class Observations:
    """M corner observations: camera index (M,), view index (M,), board point (M, 3) metres in
    the view's board frame, distorted pixels (M, 2)."""
    cam: np.ndarray
    view: np.ndarray
    obj: np.ndarray
    uv: np.ndarray


@dataclass
class Intrinsics:
    K: np.ndarray  # (3, 3)
    dist: np.ndarray  # (5,)
    rms_px: float  # cv2.calibrateCamera's RMS over the views it used
    views_used: int


# --------------------------------------------------------------------------- helpers
def rodrigues(rvec: np.ndarray) -> np.ndarray:
    """Axis-angle (N, 3) -> rotation matrices (N, 3, 3) (Rodrigues' formula)."""
    return Rotation.from_rotvec(rvec.reshape(-1, 3)).as_matrix()


def to_rvec(R: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(R).as_rotvec()


def project_points(X: np.ndarray, R: np.ndarray, t: np.ndarray, intr: np.ndarray) -> np.ndarray:
    """Points (M, 3) through cameras given per point: R (M, 3, 3), t (M, 3), intr (M, 9) =
    fx fy cx cy k1 k2 p1 p2 k3 -> distorted pixels (M, 2), by the project's one camera model
    (:func:`pose3d.geometry.camera.project`)."""
    K = np.zeros((len(intr), 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = intr[:, 0], intr[:, 1], intr[:, 2], intr[:, 3], 1.0
    f64 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    return project(f64(X)[:, None], f64(K), f64(intr[:, 4:]), f64(R), f64(t)).numpy()[:, 0]


def _invert(R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return R.T, -R.T @ t


def _rotation_mean(Rs: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of rotations (N, 3, 3): the rotation nearest to their sum (SVD)."""
    U, _, Vt = np.linalg.svd(Rs.sum(0))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


# --------------------------------------------------------------------------- 1. intrinsics
def calibrate_intrinsics(obj: list[np.ndarray], uv: list[np.ndarray], size: tuple[int, int],
                         max_views: int = 60) -> Intrinsics:
    """One camera's K and dist from its board views (Zhang 2000, via cv2.calibrateCamera).

    ``obj`` / ``uv``: per view (N_i, 3) board points and (N_i, 2) pixels; ``size`` (width,
    height). At most ``max_views`` views, evenly spread over the list, enter (the bundle
    adjustment later uses them all).
    """
    n = len(obj)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_views)).round().astype(int))
    o = [obj[i].astype(np.float32).reshape(-1, 1, 3) for i in idx]
    p = [uv[i].astype(np.float32).reshape(-1, 1, 2) for i in idx]
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    rms, K, dist, _, _ = cv2.calibrateCamera(o, p, tuple(int(v) for v in size), None, None, criteria=crit)
    return Intrinsics(np.asarray(K, np.float64), np.asarray(dist, np.float64).ravel()[:5], float(rms), len(idx))


def board_pose(obj: np.ndarray, uv: np.ndarray, K: np.ndarray, dist: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Board -> camera (R (3, 3), t (3,)) of one view: IPPE (planar PnP) + LM refinement."""
    o = obj.astype(np.float64).reshape(-1, 1, 3)
    p = uv.astype(np.float64).reshape(-1, 1, 2)
    ok, rv, tv = cv2.solvePnP(o, p, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        ok, rv, tv = cv2.solvePnP(o, p, K, dist, flags=cv2.SOLVEPNP_ITERATIVE)
    rv, tv = cv2.solvePnPRefineLM(o, p, K, dist, rv, tv)
    return cv2.Rodrigues(rv)[0], tv.ravel()


# --------------------------------------------------------------------------- 2. extrinsics
def initial_extrinsics(poses: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]], n_cams: int,
                       ref: int = 0, names: list[str] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, int], int]]:
    """Camera poses in the reference camera's frame from per-view board poses.

    ``poses[(cam, view)] = (R, t)`` board -> camera. Returns R (V, 3, 3), t (V, 3) (reference
    frame -> camera) and the shared-view count of every linked pair. A camera that shares no
    view with the others (directly or through other cameras) is a DataError.
    """
    names = names or [str(i) for i in range(n_cams)]
    by_view: dict[int, list[int]] = {}
    for c, v in poses:
        by_view.setdefault(v, []).append(c)
    rel: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    counts: dict[tuple[int, int], int] = {}
    for a in range(n_cams):
        for b in range(a + 1, n_cams):
            shared = [v for v, cs in by_view.items() if a in cs and b in cs]
            if not shared:
                continue
            Rs, ts = [], []
            for v in shared:
                Ra, ta = poses[(a, v)]
                Rb, tb = poses[(b, v)]
                R_ab = Ra @ Rb.T  # b -> a
                Rs.append(R_ab)
                ts.append(ta - R_ab @ tb)
            Rs, ts = np.array(Rs), np.array(ts)
            R0 = _rotation_mean(Rs)
            ang = np.linalg.norm(Rotation.from_matrix(Rs @ R0.T).as_rotvec(), axis=-1)
            keep = ang <= max(3 * np.median(ang), 1e-9) + 1e-6
            R_ab = _rotation_mean(Rs[keep])
            t_ab = np.median(ts[keep], axis=0)
            rel[(a, b)] = (R_ab, t_ab)
            rel[(b, a)] = _invert(R_ab, t_ab)
            counts[(a, b)] = len(shared)
    # maximum spanning tree from the reference camera (Prim)
    R = np.full((n_cams, 3, 3), np.nan)
    t = np.full((n_cams, 3), np.nan)
    R[ref], t[ref] = np.eye(3), np.zeros(3)
    done = {ref}
    while len(done) < n_cams:
        best = None
        for (a, b), n in counts.items():
            for src, dst in ((a, b), (b, a)):
                if src in done and dst not in done and (best is None or n > best[0]):
                    best = (n, src, dst)
        if best is None:
            lost = [names[i] for i in range(n_cams) if i not in done]
            raise DataError(f"camera(s) {lost}: no board view shared with camera(s) "
                            f"{[names[i] for i in sorted(done)]}; film the board where neighbouring "
                            "cameras see it at the same time")
        _, src, dst = best
        R_ds, t_ds = rel[(dst, src)]  # src -> dst
        R[dst] = R_ds @ R[src]
        t[dst] = R_ds @ t[src] + t_ds
        done.add(dst)
    return R, t, counts


# --------------------------------------------------------------------------- 3. bundle adjustment
@dataclass
class BundleResult:
    R: np.ndarray  # (V, 3, 3) reference frame -> camera
    t: np.ndarray  # (V, 3)
    K: np.ndarray  # (V, 3, 3)
    dist: np.ndarray  # (V, 5)
    board_R: np.ndarray  # (F, 3, 3) board -> reference frame
    board_t: np.ndarray  # (F, 3)
    residuals: np.ndarray  # (M, 2) px at the solution
    seconds: float
    nfev: int
    cost_initial: float
    cost_final: float


def _pack_intr(K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    return np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2], *dist])


def bundle_adjust(obs: Observations, R: np.ndarray, t: np.ndarray, K: np.ndarray, dist: np.ndarray,
                  board_R: np.ndarray, board_t: np.ndarray, ref: int = 0, loss: str = "huber",
                  f_scale_px: float = 1.0, max_nfev: int = 200, verbose: int = 0) -> BundleResult:
    """Refine all cameras and board poses jointly (module docstring, step 3).

    obs: M observations; cameras R (V, 3, 3), t (V, 3) (reference frame -> camera), K (V, 3, 3),
    dist (V, 5); boards board_R (F, 3, 3), board_t (F, 3) (board -> reference frame). Camera
    ``ref`` keeps its extrinsics. Returns the refined values and the residuals (M, 2) px.
    """
    V, F, M = len(R), len(board_R), len(obs.cam)
    free = [c for c in range(V) if c != ref]
    cam0 = np.concatenate([np.concatenate([to_rvec(R[c]), t[c], _pack_intr(K[c], dist[c])]) for c in range(V)])
    cam0 = cam0.reshape(V, N_CAM)
    # x = [free cameras' extrinsics (6 each) | every camera's intrinsics (9 each) | boards (6 each)]
    x0 = np.concatenate([cam0[free, :6].ravel(), cam0[:, 6:].ravel(),
                         np.concatenate([to_rvec(board_R), board_t], -1).ravel()])
    n_ext, n_int = 6 * len(free), 9 * V
    ext_fixed = cam0[ref, :6]
    slot = np.full(V, -1)
    slot[free] = np.arange(len(free))

    def unpack(x):
        ext = np.empty((V, 6))
        ext[free] = x[:n_ext].reshape(-1, 6)
        ext[ref] = ext_fixed
        intr = x[n_ext:n_ext + n_int].reshape(V, 9)
        brd = x[n_ext + n_int:].reshape(F, 6)
        return ext, intr, brd

    def residuals(x):
        ext, intr, brd = unpack(x)
        Rc, Rb = rodrigues(ext[:, :3]), rodrigues(brd[:, :3])
        X = np.einsum("mij,mj->mi", Rb[obs.view], obs.obj) + brd[obs.view, 3:]
        uv = project_points(X, Rc[obs.cam], ext[obs.cam, 3:], intr[obs.cam])
        return (uv - obs.uv).ravel()

    # sparsity: the two rows of observation m depend on its camera's and its board's columns
    rows, cols = [], []
    m2 = np.arange(M)
    for r_off in (0, 1):
        r = 2 * m2 + r_off
        s = slot[obs.cam]
        has = s >= 0
        for k in range(6):
            rows.append(r[has]); cols.append(6 * s[has] + k)
        for k in range(9):
            rows.append(r); cols.append(n_ext + 9 * obs.cam + k)
        for k in range(6):
            rows.append(r); cols.append(n_ext + n_int + 6 * obs.view + k)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    sparsity = scipy.sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)),
                                       shape=(2 * M, len(x0))).tocsr()
    t0 = time.perf_counter()
    r0 = residuals(x0)
    nfev = 0
    # two passes: plain least squares from the initial guess, then the robust loss from there.
    # From a guess a few pixels off, trf with a Huber loss of 1 px shrinks its trust region to
    # nothing (measured: stalled at 40x the noise's cost), while the plain loss converges.
    passes = [("linear", 1.0), (loss, f_scale_px)] if loss != "linear" else [("linear", 1.0)]
    x = x0
    for lo, fs in passes:
        res = least_squares(residuals, x, jac_sparsity=sparsity, loss=lo, f_scale=fs,
                            x_scale="jac", method="trf", tr_solver="lsmr", max_nfev=max_nfev,
                            # near-exact inner solves: lsmr's default tolerances leave the steps
                            # inexact along the weak directions (principal point vs rotation),
                            # and the outer loop then crawls for hundreds of iterations
                            tr_options={"atol": 1e-12, "btol": 1e-12, "regularize": False},
                            xtol=1e-8, ftol=1e-8, gtol=1e-10, verbose=verbose)
        x, nfev = res.x, nfev + int(res.nfev)
    dt = time.perf_counter() - t0
    ext, intr, brd = unpack(res.x)
    Kout = np.zeros((V, 3, 3))
    Kout[:, 0, 0], Kout[:, 1, 1], Kout[:, 0, 2], Kout[:, 1, 2], Kout[:, 2, 2] = (
        intr[:, 0], intr[:, 1], intr[:, 2], intr[:, 3], 1.0)
    return BundleResult(rodrigues(ext[:, :3]), ext[:, 3:].copy(), Kout, intr[:, 4:].copy(),
                        rodrigues(brd[:, :3]), brd[:, 3:].copy(), res.fun.reshape(M, 2), dt,
                        nfev, float(0.5 * np.sum(r0 ** 2)), float(0.5 * np.sum(res.fun ** 2)))


# --------------------------------------------------------------------------- 4. world frame
FLOOR_AXES = np.diag([1.0, -1.0, -1.0])  # board axes -> world axes for a board lying face up


def world_from_floor(R: np.ndarray, t: np.ndarray, floor_R: np.ndarray, floor_t: np.ndarray,
                     offset_xy: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """Cameras (V, 3, 3), (V, 3) in the reference frame -> in the floor board's world frame.

    The floor board (board -> reference: floor_R, floor_t) lies printed side up, so world =
    ``FLOOR_AXES @ x_board + (ox, oy, 0)``: X along the board's x, Y = -y, Z = -z (up).
    x_ref = floor_R A (x_w - o) + floor_t, hence R_w = R floor_R A and
    t_w = R (floor_t - floor_R A o) + t.
    """
    A = FLOOR_AXES
    o = np.array([offset_xy[0], offset_xy[1], 0.0])
    M = floor_R @ A
    Rw = R @ M
    tw = np.einsum("vij,j->vi", R, floor_t - M @ o) + t
    return Rw, tw
