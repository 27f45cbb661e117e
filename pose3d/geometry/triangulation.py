"""Calibrated multi-view triangulation as pure batched torch functions.

Every frame x joint of a batch is solved in one call: no Python loop over points.

Layout: 2D observations ``(*, V, J, 2)`` (V views, J joints or any points), weights or detection
scores ``(*, V, J)``, cameras ``K (V, 3, 3)``, ``dist (V, 5)``, ``R (V, 3, 3)``, ``t (V, 3)`` with
``x_cam = R @ x_world + t`` (OpenCV; see :mod:`pose3d.geometry.camera`). NaN in a 2D point means
the view is missing; a joint seen in fewer than two usable views comes back as NaN.

Methods (Hartley & Zisserman, *Multiple View Geometry*, 2nd ed.):

* :func:`triangulate_dlt` - the homogeneous linear method (H&Z 12.2): each view contributes the
  two rows ``x p3^T - p1^T`` and ``y p3^T - p2^T`` of ``A``; ``X`` is the right null vector of
  ``A`` (the eigenvector of ``A^T A`` with the smallest eigenvalue). Rows are scaled by per-view
  weights (detection confidences), as in learnable triangulation (Iskakov et al. 2019).
* :func:`triangulate_ransac` - RANSAC over views (H&Z 4.7): every hypothesis is a pair of views,
  all hypotheses for all points are triangulated and scored in one batched call (MSAC score,
  Torr & Zisserman 2000), then a refit on the inliers.
* :func:`refine_reprojection` - Levenberg-Marquardt on the reprojection error in the distorted
  image (the "gold standard", H&Z 12.3 / A6.2), batched over points, 3x3 normal equations each.
* :func:`triangulate` - the whole pipeline from distorted pixels and detection scores, with
  per-joint reprojection errors.

DLT is run in normalised camera coordinates (undistorted, ``K^-1``), which is H&Z's data
normalisation (4.4.4) for free; each view's rows are multiplied by its focal length so that the
algebraic residual is measured in pixels (times depth), equal across cameras with different K.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from pose3d.geometry.camera import Camera, project, stack_cameras, undistort_points
from pose3d.geometry.shapes import check_shape

__all__ = [
    "Triangulation", "triangulate", "triangulate_dlt", "triangulate_ransac", "refine_reprojection",
    "reprojection_errors", "view_pairs", "camera_tensors",
]


# --------------------------------------------------------------------------- checks and helpers
def camera_tensors(cameras: Mapping[str, torch.Tensor] | Sequence[Camera], dtype=torch.float64,
                   device=None) -> dict[str, torch.Tensor]:
    """A list of :class:`Camera` or a dict of tensors -> {'K' (V,3,3), 'dist' (V,5), 'R', 't'}."""
    if isinstance(cameras, Mapping):
        missing = [k for k in ("K", "dist", "R", "t") if k not in cameras]
        if missing:
            raise ValueError(f"cameras: missing {missing} (expected keys K, dist, R, t)")
        out = {k: torch.as_tensor(cameras[k], dtype=dtype, device=device) for k in ("K", "dist", "R", "t")}
    else:
        out = stack_cameras(list(cameras), dtype=dtype, device=device)
    check_shape(out["K"], "V 3 3", "cameras K")
    n = out["K"].shape[0]
    for k, spec in (("dist", f"{n} 5"), ("R", f"{n} 3 3"), ("t", f"{n} 3")):
        check_shape(out[k], spec, f"cameras {k}")
    return out


def _check_views(points: torch.Tensor, n_cameras: int, name: str = "points") -> None:
    check_shape(points, "* V J 2", name)
    V = points.shape[-3]
    if V != n_cameras:
        raise ValueError(f"{name}: {V} views (shape {tuple(points.shape)}) but {n_cameras} cameras; "
                         "the view axis (-3) must match the cameras one to one")
    if V < 2:
        raise ValueError(f"{name}: triangulation needs at least 2 views, got {V} "
                         f"(shape {tuple(points.shape)})")


def _usable(points: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (points with NaN replaced by 0, weights (*, V, J) with 0 where missing/NaN/negative)."""
    valid = torch.isfinite(points).all(-1)
    if weights is None:
        w = valid.to(points.dtype)
    else:
        weights = weights.to(points)
        w = torch.where(valid & torch.isfinite(weights) & (weights > 0), weights, torch.zeros_like(weights))
    return torch.where(valid.unsqueeze(-1), points, torch.zeros_like(points)), w


def _smallest_eigvec(M: torch.Tensor, iters: int = 3) -> torch.Tensor:
    """Unit eigenvector of the smallest eigenvalue of symmetric PSD ``M`` (*, 4, 4) -> (*, 4).

    Shifted inverse iteration (Golub & Van Loan 8.2.2), started from the inhomogeneous solution
    (``X_4 = 1``, H&Z 12.2): the shift ``1e-12 tr(M)`` keeps the eigenvectors and makes exactly
    singular (noise-free) systems solvable; each step shrinks the error by ``lambda_1 / lambda_2``,
    which is tiny for a well-posed triangulation; systems whose eigen-residual stays above 1e-9
    (|M x - rho x| with M scaled to unit trace) fall back to ``torch.linalg.eigh``. 3-4x faster
    than ``eigh`` alone on CPU for millions of 4x4 systems, and equal to it to ~1e-12 (tested).
    """
    eye = torch.eye(4, dtype=M.dtype, device=M.device)
    tr = M.diagonal(dim1=-2, dim2=-1).sum(-1)
    ok = tr > 0
    scale = torch.where(ok, tr, torch.ones_like(tr))[..., None, None]
    Ms = torch.where(ok[..., None, None], M / scale, eye) + 1e-12 * eye
    x3 = torch.linalg.solve(Ms[..., :3, :3], -Ms[..., :3, 3:])  # inhomogeneous start
    x = torch.cat([x3, torch.ones_like(x3[..., :1, :])], dim=-2)
    for _ in range(iters):
        x = torch.linalg.solve(Ms, x)
        x = x / x.norm(dim=-2, keepdim=True)
    x = x.squeeze(-1)
    # ill-conditioned systems (lambda_1 / lambda_2 not small) fall back to the exact eigh
    Mx = (Ms @ x.unsqueeze(-1)).squeeze(-1)
    resid = (Mx - (Mx * x).sum(-1, keepdim=True) * x).norm(dim=-1)
    bad = ~(resid <= 1e-9)
    if bad.any():
        x = x.clone()
        x[bad] = torch.linalg.eigh(Ms[bad])[1][..., 0]
    return x


# --------------------------------------------------------------------------- DLT
def triangulate_dlt(points: torch.Tensor, P: torch.Tensor, weights: torch.Tensor | None = None,
                    min_views: int = 2) -> torch.Tensor:
    """Weighted homogeneous DLT (H&Z 12.2), every point of the batch in one solve.

    Args:
        points: (*, V, J, 2) image points consistent with ``P`` (normalised coordinates with
            ``P = [R | t]``, or undistorted pixels with ``P = K [R | t]``); NaN = missing.
        P: (*, V, 3, 4) projection matrices, broadcast against ``points``' leading dims.
        weights: (*, V, J) non-negative row weights (e.g. detection scores); None = all ones.
            Both rows of view v are multiplied by ``weights[v]``; equal weights give plain DLT.
        min_views: joints with fewer views of positive weight come back as NaN.

    Returns:
        (*, J, 3) points in the frame of ``P`` (world).

    Solves ``min |A X|`` s.t. ``|X| = 1`` with A's rows ``w (x p3^T - p1^T)``, ``w (y p3^T - p2^T)``
    via the 4x4 normal matrix ``A^T A`` (built with one einsum), then dehomogenises.
    """
    check_shape(points, "* V J 2", "points")
    check_shape(P, "* V 3 4", "P")
    x, w = _usable(points, weights)
    Pj = P.unsqueeze(-3)  # (*, V, 1, 3, 4)
    rows = torch.stack([x[..., 0:1] * Pj[..., 2, :] - Pj[..., 0, :],
                        x[..., 1:2] * Pj[..., 2, :] - Pj[..., 1, :]], dim=-2)  # (*, V, J, 2, 4)
    rows = rows * w[..., None, None]
    M = torch.einsum("...vjra,...vjrb->...jab", rows, rows)  # (*, J, 4, 4) = A^T A
    Xh = _smallest_eigvec(M)
    X = Xh[..., :3] / Xh[..., 3:]
    n = (w > 0).sum(-2)  # (*, J)
    return torch.where((n >= min_views).unsqueeze(-1), X, torch.full_like(X, float("nan")))


def _project_P(X: torch.Tensor, P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Points X (*, J, 3) through P (*, V, 3, 4) -> image points (*, V, J, 2), depths (*, V, J)."""
    Xh = torch.cat([X, torch.ones_like(X[..., :1])], dim=-1).unsqueeze(-3)  # (*, 1, J, 4)
    x = Xh @ P.transpose(-1, -2)  # (*, V, J, 3)
    return x[..., :2] / x[..., 2:3], x[..., 2]


def view_pairs(V: int, max_pairs: int | None = None, generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """All view pairs (i < j) as (H, 2) long, or a random subset of ``max_pairs`` of them."""
    pairs = torch.tensor(list(itertools.combinations(range(V), 2)), dtype=torch.long)
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = pairs[torch.randperm(len(pairs), generator=generator)[:max_pairs]]
    return pairs


def triangulate_ransac(points: torch.Tensor, P: torch.Tensor, weights: torch.Tensor | None = None,
                       threshold: float | torch.Tensor = 1e-2, min_inliers: int = 2,
                       max_hypotheses: int = 64, refits: int = 1, ambiguity: float = 0.25,
                       generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """RANSAC over views (H&Z 4.7.1) with vectorised hypotheses, MSAC scoring and local refits.

    1. Hypotheses: every pair of views (or ``max_hypotheses`` random pairs, the same for every
       point) is triangulated by two-view DLT, for all points at once.
    2. Local optimisation (LO-RANSAC, Chum et al. 2003), also batched over hypotheses: each
       hypothesis is refitted by weighted DLT on its inliers (``e_v < threshold``, in front of
       the camera) and its inliers re-evaluated, so a pair whose 3rd-view prediction fell just
       outside the threshold still collects its support.
    3. Scoring: weighted MSAC (Torr & Zisserman 2000), ``sum_v s_v min(e_v^2, threshold^2)``
       with ``s_v`` the joint's detection weights scaled to max 1 (all 1 without weights): the
       pair that is geometrically consistent wins over a chance-consistent pair of outliers
       with the same inlier count unless the outliers fit better, and rejecting a confident view
       costs more than rejecting a doubtful one.
    4. Ambiguity: if a rival hypothesis (``>= min_inliers`` inliers, sharing fewer than 2 of
       them with the winner's inlier set, so a different 3D point) scores within ``ambiguity * threshold^2`` of the
       winner, the views hold two competing consensus sets (e.g. 2 inliers against 2
       epipolar-consistent outliers in 4 views) and the joint comes back as NaN (missing)
       rather than as a coin flip. ``ambiguity = 0`` disables the check.

    Args:
        points: (*, V, J, 2), same conventions as :func:`triangulate_dlt`; NaN = missing.
        P: (V, 3, 4) projection matrices (shared by the batch).
        weights: (*, V, J) optional detection weights (refits and MSAC; hypotheses ignore them).
        threshold: inlier threshold in ``points``' units, a number or a (V,) tensor (per view,
            e.g. ``px / focal`` for normalised coordinates).
        min_inliers: joints whose best hypothesis has fewer inliers come back as NaN.
        refits: extra inlier re-evaluations of the winner after the local optimisation.

    Returns:
        X (*, J, 3) and the inlier mask (*, V, J) bool (all False where X is NaN).
    """
    check_shape(points, "* V J 2", "points")
    check_shape(P, "V 3 4", "P")
    V = points.shape[-3]
    x, w = _usable(points, weights)
    valid = w > 0  # (*, V, J)
    wr = w if weights is not None else valid.to(points.dtype)
    # MSAC view weights: the joint's weights scaled to max 1
    s = wr / wr.amax(-2, keepdim=True).clamp_min(torch.finfo(wr.dtype).tiny)
    thr = torch.as_tensor(threshold, dtype=points.dtype, device=points.device)
    thr = thr.reshape(-1, 1) if thr.ndim == 1 else thr  # (V, 1) or scalar
    thr2 = thr ** 2
    mean_thr2 = thr2.mean()

    def score(X: torch.Tensor, hyp: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # X (*, [H,] J, 3) -> inlier mask (*, [H,] V, J) and MSAC cost (*, [H,] J) (inf if X NaN)
        proj, depth = _project_P(X, P)
        obs, ok, sv = (x.unsqueeze(-4), valid.unsqueeze(-3), s.unsqueeze(-3)) if hyp else (x, valid, s)
        e2 = ((proj - obs) ** 2).sum(-1)
        ok = ok & (depth > 0) & torch.isfinite(e2)
        e2 = torch.where(ok, e2, torch.full_like(e2, float("inf")))
        inl = e2 < thr2
        cost = (sv * torch.minimum(e2, thr2.expand_as(e2))).sum(-2)
        cost = torch.where(torch.isfinite(X).all(-1), cost, torch.full_like(cost, float("inf")))
        return inl, cost

    pairs = view_pairs(V, max_hypotheses, generator).to(points.device)  # (H, 2)
    Xh = triangulate_dlt(x[..., pairs, :, :], P[pairs], valid[..., pairs, :].to(points.dtype))  # (*, H, J, 3)
    inl, _ = score(Xh, hyp=True)  # (*, H, V, J)
    # local optimisation of every hypothesis at once: refit on its inliers, re-score
    Xh = triangulate_dlt(x.unsqueeze(-4), P, wr.unsqueeze(-3) * inl, min_views=2)
    inl, cost = score(Xh, hyp=True)
    n_h = inl.sum(-2)  # (*, H, J)
    cost = torch.where(n_h >= min_inliers, cost, torch.full_like(cost, float("inf")))
    best = cost.argmin(dim=-2, keepdim=True)  # (*, 1, J)
    inliers = inl.gather(-3, best.unsqueeze(-2).expand(*inl.shape[:-3], 1, V, inl.shape[-1])).squeeze(-3)
    X = Xh.gather(-3, best.unsqueeze(-1).expand(*Xh.shape[:-3], 1, Xh.shape[-2], 3)).squeeze(-3)
    best_cost = cost.gather(-2, best).squeeze(-2)  # (*, J)
    ok = torch.isfinite(best_cost)
    if ambiguity > 0:
        # a rival shares fewer than 2 inlier views with the winner: a different 3D point
        rival = ((inl & inliers.unsqueeze(-3)).sum(-2) < 2) & (n_h >= min_inliers)  # (*, H, J)
        close = cost <= best_cost.unsqueeze(-2) + ambiguity * mean_thr2
        ok = ok & ~(rival & close).any(-2)
    for _ in range(refits):
        inl2, _ = score(X, hyp=False)
        # keep the old set where the refit lost support (a refit never drops below min_inliers)
        keep = inl2.sum(-2, keepdim=True) >= inliers.sum(-2, keepdim=True)
        inliers = torch.where(keep, inl2, inliers)
        X = triangulate_dlt(x, P, wr * inliers)
    ok = ok & (inliers.sum(-2) >= min_inliers) & torch.isfinite(X).all(-1)
    X = torch.where(ok.unsqueeze(-1), X, torch.full_like(X, float("nan")))
    return X, inliers & ok.unsqueeze(-2)


# --------------------------------------------------------------------------- refinement
def reprojection_errors(X: torch.Tensor, points_px: torch.Tensor, cameras: Mapping[str, torch.Tensor]
                        ) -> torch.Tensor:
    """Distance in pixels between observed ``points_px`` (*, V, J, 2) (distorted) and the
    projection of X (*, J, 3) with the full camera model -> (*, V, J); NaN where missing."""
    proj = project(X.unsqueeze(-3), cameras["K"], cameras["dist"], cameras["R"], cameras["t"])
    return (proj - points_px).norm(dim=-1)


def _project_with_jacobian(X: torch.Tensor, cameras: Mapping[str, torch.Tensor]
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """X (*, J, 3) -> distorted pixels (*, V, J, 2) and d(pixels)/dX (*, V, J, 2, 3), analytic.

    Chain rule through ``x_c = R X + t``, ``(a, b) = (x_c / z_c, y_c / z_c)``, OpenCV's
    radial-tangential distortion and ``K``: ``J = K_2x2 D(a, b) [[1/z, 0, -a/z], [0, 1/z, -b/z]] R``.
    """
    K, dist, R, t = cameras["K"], cameras["dist"], cameras["R"], cameras["t"]
    xc = X.unsqueeze(-3) @ R.transpose(-1, -2) + t.unsqueeze(-2)  # (*, V, J, 3)
    z = xc[..., 2]
    a, b = xc[..., 0] / z, xc[..., 1] / z
    d = dist.unsqueeze(-2)  # (V, 1, 5) against (*, V, J)
    k1, k2, p1, p2, k3 = (d[..., i] for i in range(5))
    r2 = a * a + b * b
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    drad = 2 * (k1 + r2 * (2 * k2 + 3 * k3 * r2))  # (d radial / d a) / a
    xd = a * radial + 2 * p1 * a * b + p2 * (r2 + 2 * a * a)
    yd = b * radial + p1 * (r2 + 2 * b * b) + 2 * p2 * a * b
    Kx = K.unsqueeze(-3)  # (V, 1, 3, 3)
    fx, s, cx, fy, cy = Kx[..., 0, 0], Kx[..., 0, 1], Kx[..., 0, 2], Kx[..., 1, 1], Kx[..., 1, 2]
    uv = torch.stack([fx * xd + s * yd + cx, fy * yd + cy], dim=-1)
    j00 = radial + a * drad * a + 2 * p1 * b + 6 * p2 * a
    j01 = a * drad * b + 2 * p1 * a + 2 * p2 * b
    j10 = b * drad * a + 2 * p1 * a + 2 * p2 * b
    j11 = radial + b * drad * b + 6 * p1 * b + 2 * p2 * a
    # pixel <- distorted normalised: [[fx, s], [0, fy]] @ [[j00, j01], [j10, j11]]
    m00, m01 = fx * j00 + s * j10, fx * j01 + s * j11
    m10, m11 = fy * j10, fy * j11
    iz = 1 / z
    # d(a, b)/d x_c = [[1/z, 0, -a/z], [0, 1/z, -b/z]]
    row0 = torch.stack([m00 * iz, m01 * iz, -(m00 * a + m01 * b) * iz], dim=-1)
    row1 = torch.stack([m10 * iz, m11 * iz, -(m10 * a + m11 * b) * iz], dim=-1)
    Jc = torch.stack([row0, row1], dim=-2)  # (*, V, J, 2, 3) w.r.t. x_c
    return uv, Jc @ R.unsqueeze(-3)  # d x_c / d X = R


def refine_reprojection(X: torch.Tensor, points_px: torch.Tensor, cameras: Mapping[str, torch.Tensor],
                        weights: torch.Tensor | None = None, iters: int = 10,
                        damping: float = 1e-3) -> torch.Tensor:
    """Levenberg-Marquardt on ``sum_v w_v |project_v(X) - x_v|^2`` (distorted pixels), per point.

    The "gold standard" of H&Z 12.3 for calibrated cameras (only X moves), batched: residuals
    (*, V, J, 2) and their analytic Jacobians (*, V, J, 2, 3) for all points at once; the damped
    3x3 normal equations ``(J^T W J + lambda diag(J^T W J)) dX = -J^T W r`` (H&Z A6.2) are solved
    for all points together; a step is kept per point only if it lowers that point's cost.
    NaN points stay NaN.

    Args:
        X: (*, J, 3) initial points (world, metres), e.g. from DLT.
        points_px: (*, V, J, 2) observed distorted pixels; NaN = missing.
        cameras: dict K (V,3,3), dist (V,5), R (V,3,3), t (V,3).
        weights: (*, V, J) per-observation weights (e.g. scores x inliers); None = valid views.
    Returns:
        (*, J, 3) refined points.
    """
    check_shape(X, "* J 3", "X")
    check_shape(points_px, "* V J 2", "points_px")
    obs, w = _usable(points_px, weights)
    w = w.unsqueeze(-1)  # (*, V, J, 1)
    finite = torch.isfinite(X).all(-1, keepdim=True)
    X = torch.where(finite, X, torch.zeros_like(X))
    eye = torch.eye(3, dtype=X.dtype, device=X.device)

    def cost_of(uv: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(((uv - obs) ** 2 * w), nan=0.0, posinf=0.0).sum((-1, -3))  # (*, J)

    lam = torch.full(X.shape[:-1], damping, dtype=X.dtype, device=X.device)
    uv, Jac = _project_with_jacobian(X, cameras)
    cost = cost_of(uv)
    for _ in range(iters):
        r = torch.nan_to_num((uv - obs) * w)  # W r, (*, V, J, 2)
        Jac = torch.nan_to_num(Jac)
        JtJ = torch.einsum("...vjck,...vjc,...vjcl->...jkl", Jac, w.expand_as(r), Jac)  # (*, J, 3, 3)
        Jtr = torch.einsum("...vjck,...vjc->...jk", Jac, r)  # (*, J, 3)
        diag = JtJ.diagonal(dim1=-2, dim2=-1)
        A = JtJ + torch.diag_embed(lam.unsqueeze(-1) * diag + 1e-12 * (1 + diag))
        step = torch.linalg.solve(A, -Jtr.unsqueeze(-1)).squeeze(-1)
        X_new = X + torch.nan_to_num(step)
        uv_new, Jac_new = _project_with_jacobian(X_new, cameras)
        cost_new = cost_of(uv_new)
        better = cost_new < cost
        X = torch.where(better.unsqueeze(-1), X_new, X)
        uv = torch.where(better[..., None, :, None], uv_new, uv)
        Jac = torch.where(better[..., None, :, None, None], Jac_new, Jac)
        cost = torch.where(better, cost_new, cost)
        lam = torch.where(better, lam * 0.1, lam * 10.0).clamp(1e-12, 1e12)
    return torch.where(finite, X, torch.full_like(X, float("nan")))


# --------------------------------------------------------------------------- pipeline
@dataclass(frozen=True)
class Triangulation:
    """Result of :func:`triangulate`.

    points_3d: (*, J, 3) world metres, NaN where fewer than 2 usable views.
    reprojection_error_px: (*, J) mean distorted-pixel error over the views used.
    used: (*, V, J) bool, the views each joint was solved from (valid, above the score
        threshold, and RANSAC inliers).
    """

    points_3d: torch.Tensor
    reprojection_error_px: torch.Tensor
    used: torch.Tensor


def triangulate(points_px: torch.Tensor, cameras: Mapping[str, torch.Tensor] | Sequence[Camera],
                scores: torch.Tensor | None = None, *, method: str = "dlt",
                score_threshold: float = 0.0, weighted: bool = True, refine: bool = False,
                refine_iters: int = 10, ransac_threshold_px: float = 10.0,
                ransac_min_inliers: int = 2, ransac_max_hypotheses: int = 64,
                ransac_ambiguity: float = 0.25,
                chunk_points: int = 200_000, seed: int = 0) -> Triangulation:
    """Distorted 2D detections (*, V, J, 2) pixels + calibrated cameras -> 3D (*, J, 3) metres.

    Steps: undistort to normalised coordinates with each camera's K and dist; drop observations
    that are NaN or have ``scores < score_threshold``; solve by ``method`` ("dlt": weighted DLT,
    H&Z 12.2; "ransac": RANSAC over views with a ``ransac_threshold_px`` reprojection threshold,
    local refits and weighted MSAC scoring; joints whose views hold two competing consensus sets
    within ``ransac_ambiguity * threshold^2`` come back NaN, see :func:`triangulate_ransac`);
    optionally ``refine`` by Levenberg-Marquardt on the distorted reprojection
    error (H&Z 12.3); report each joint's mean reprojection error over the views it used.

    ``weighted``: detection scores become DLT row weights (else every kept view weighs 1).
    Raises ValueError for fewer than 2 views, a camera count that differs from V, or input in
    which no joint has 2 usable views (all NaN or all below the threshold). Runs on
    ``points_px``' device and dtype (float64 recommended); batches of more than
    ``chunk_points`` frames x joints are processed in chunks to bound memory.
    """
    cams = camera_tensors(cameras, dtype=points_px.dtype, device=points_px.device)
    _check_views(points_px, cams["K"].shape[0], "points_px")
    lead, (V, J) = points_px.shape[:-3], points_px.shape[-3:-1]
    if scores is not None:
        if tuple(scores.shape) != tuple(points_px.shape[:-1]):
            raise ValueError(f"scores: expected shape {tuple(points_px.shape[:-1])} (*, V, J), "
                             f"got {tuple(scores.shape)}")
        scores = scores.to(points_px)
    if method not in ("dlt", "ransac"):
        raise ValueError(f"method = {method!r}: expected 'dlt' or 'ransac'")

    keep = torch.isfinite(points_px).all(-1)
    if scores is not None:
        keep = keep & torch.isfinite(scores) & (scores >= score_threshold)
    if not (keep.sum(-2) >= 2).any():
        raise ValueError(f"points_px: no joint has at least 2 usable views (shape {tuple(points_px.shape)}, "
                         f"{int(keep.sum())} finite observations with score >= {score_threshold}); "
                         "check for NaN input or a too high score threshold")
    w = keep.to(points_px.dtype)
    if weighted and scores is not None:
        w = w * torch.nan_to_num(scores).clamp_min(0)

    # flatten the batch: (N, V, J, 2) with N = prod(lead); chunk over N
    pts = points_px.reshape(-1, V, J, 2)
    w = w.reshape(-1, V, J)
    norm = undistort_points(pts, cams["K"], cams["dist"], normalized=True)
    f = (cams["K"][:, 0, 0] + cams["K"][:, 1, 1]) / 2  # (V,) focal in px
    # P = diag(f, f, 1) [R | t] on f-scaled normalised points: DLT rows and RANSAC errors in px
    Fm = torch.diag_embed(torch.stack([f, f, torch.ones_like(f)], dim=-1))  # (V, 3, 3)
    P = Fm @ torch.cat([cams["R"], cams["t"].unsqueeze(-1)], dim=-1)  # (V, 3, 4)
    norm_f = norm * f[:, None, None]
    gen = torch.Generator().manual_seed(seed)
    n_per = max(1, chunk_points // (J * (max(1, ransac_max_hypotheses) if method == "ransac" else 1)))
    Xs, useds = [], []
    for s in range(0, pts.shape[0], n_per):  # chunks bound memory, each chunk is one batched solve
        sl = slice(s, s + n_per)
        if method == "dlt":
            X = triangulate_dlt(norm_f[sl], P, w[sl])
            used = w[sl] > 0
        else:
            X, used = triangulate_ransac(norm_f[sl], P, w[sl], threshold=ransac_threshold_px,
                                         min_inliers=ransac_min_inliers,
                                         max_hypotheses=ransac_max_hypotheses,
                                         ambiguity=ransac_ambiguity, generator=gen)
            used = used & (w[sl] > 0)
        if refine:
            X = refine_reprojection(X, pts[sl], cams, w[sl] * used, iters=refine_iters)
        Xs.append(X)
        useds.append(used)
    X = torch.cat(Xs).reshape(*lead, J, 3)
    used = torch.cat(useds).reshape(*lead, V, J)
    err = reprojection_errors(X, points_px, cams)
    err = torch.where(used, err, torch.zeros_like(err))
    n = used.sum(-2)
    rep = torch.where(n > 0, err.sum(-2) / n.clamp_min(1), torch.full_like(err[..., 0, :], float("nan")))
    rep = torch.where(torch.isfinite(X).all(-1), rep, torch.full_like(rep, float("nan")))
    return Triangulation(points_3d=X, reprojection_error_px=rep, used=used)
