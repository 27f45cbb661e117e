"""Uncalibrated probabilistic triangulation (after Jiang, Hu & Xia, ICCV 2023).

Intrinsics (K, dist) are known, extrinsics are not. The unknowns are, for every camera v other
than a reference camera r, its rotation ``R_v`` and translation direction ``d_v`` relative to r
(``x_v = R_v x_r + t_v``, ``t_v = s_v d_v``). They are modelled by a distribution: an isotropic
Gaussian in the tangent space of SO(3) around a mean rotation (``R = exp(eps) R_mean``,
``eps ~ N(0, sigma_R^2 I)``) and a tangent Gaussian on the sphere around a mean direction.

Each iteration draws S joint samples of all cameras (Monte Carlo), scores each one by the
reprojection error of the keypoints *triangulated with it* over a window of frames, and updates
the distribution from the best-scoring samples (cross-entropy method: the elite's chordal mean
rotation (Hartley et al., "Rotation averaging", IJCV 2013, 5.3), mean direction and their
spreads, smoothed), until the spreads fall below a tolerance. Each sample's translation
magnitudes come in closed form: with ``|t_a| = 1`` for an anchor camera a, the keypoints are
triangulated from (r, a), and every other ``s_v`` minimises ``sum |[x_v]_x (R_v X + s_v d_v)|^2``
(the cross-product form of H&Z 12.2), then all views are triangulated together and the scales
re-solved once. The distribution starts around the epipolar geometry of each pair (r, v)
(normalised 8-point algorithm, H&Z 11.2 + 9.6 decomposition with the cheirality test; the
coordinates conditioned as H&Z 11.2 prescribes: K-normalised coordinates alone left the start
11-21 degrees off on the studio's detections, conditioned 1.5-3.8).

The cross-entropy search stops near, not at, the optimum on real detections (studio test
subjects: 2.6 degrees mean rotation error); :func:`refine_cameras` then polishes the mean
(Levenberg-Marquardt on the robust reprojection error with the points eliminated), which the
paper's sampling leaves to more iterations: 0.18 degrees on the same detections.

The global scale is not observable from images; it comes from a prior on the subject's
stature (:func:`stature`): the output is rescaled so that the median stature over the window
equals ``stature_m``. Output 3D is in the reference camera's frame (metres).

Layout: keypoints ``(T, V, J, 2)`` distorted pixels (T frames of one static rig), scores
``(T, V, J)``, ``K (V, 3, 3)``, ``dist (V, 5)``; NaN = missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pose3d.geometry.camera import undistort_points
from pose3d.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from pose3d.geometry.shapes import check_shape
from pose3d.geometry.triangulation import _usable, triangulate, triangulate_dlt
from pose3d.skeleton import JOINT_INDEX, PARENTS

__all__ = ["ProbabilisticResult", "probabilistic_triangulate", "stature", "relative_pose_8point",
           "project_to_rotation"]


def project_to_rotation(M: torch.Tensor) -> torch.Tensor:
    """Nearest rotation (Frobenius) to M (*, 3, 3): ``U diag(1, 1, det(U V^T)) V^T``."""
    U, _, Vh = torch.linalg.svd(M)
    d = torch.sign(torch.linalg.det(U @ Vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    return (U * torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1).unsqueeze(-2)) @ Vh


def _chain(a: str, b: str) -> list[tuple[int, int]]:
    """Bones (child, parent) from joint a up to ancestor b."""
    out, j = [], JOINT_INDEX[a]
    while j != JOINT_INDEX[b]:
        out.append((j, PARENTS[j]))
        j = PARENTS[j]
    return out


_LEGS = (_chain("l_ankle", "l_hip"), _chain("r_ankle", "r_hip"))
_TRUNK = _chain("head_top", "pelvis")


def stature(X: torch.Tensor) -> torch.Tensor:
    """Stature (*, J, 3) -> (*): mean leg (ankle-knee-hip) + trunk (pelvis-spine-thorax-
    neck_nose-head_top) bone-chain length. Sums bone lengths, so it does not depend on the pose;
    H36M-17 joints (:mod:`pose3d.skeleton`)."""
    check_shape(X, "* J 3", "X")

    def length(chain):
        return sum((X[..., c, :] - X[..., p, :]).norm(dim=-1) for c, p in chain)

    return (length(_LEGS[0]) + length(_LEGS[1])) / 2 + length(_TRUNK)


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cross(*torch.broadcast_tensors(a, b), dim=-1)


def _essential_linear(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted linear 8-point on ``b^T E a = 0`` with Hartley's conditioning (H&Z 11.2: each
    image's points translated to their weighted centroid and scaled to mean distance sqrt(2)),
    batched: a, b (*, N, 2) normalised coords, w (*, N) weights. Returns E (*, 3, 3) in the
    normalised coordinates of a and b, singular values set to (1, 1, 0) (H&Z 11.3)."""
    ws = w.sum(-1, keepdim=True).clamp_min(1e-12)

    def conditioner(p):
        c = (w.unsqueeze(-1) * p).sum(-2) / ws  # (*, 2)
        r = (w * (p - c.unsqueeze(-2)).norm(dim=-1)).sum(-1, keepdim=True) / ws  # (*, 1)
        k = (2 ** 0.5) / r.clamp_min(1e-12)
        T = torch.zeros(*p.shape[:-2], 3, 3, dtype=p.dtype, device=p.device)
        T[..., 0, 0] = T[..., 1, 1] = k[..., 0]
        T[..., :2, 2] = -k * c
        T[..., 2, 2] = 1
        return T, (p - c.unsqueeze(-2)) * k.unsqueeze(-1)

    Ta, an = conditioner(a)
    Tb, bn = conditioner(b)
    ah = torch.cat([an, torch.ones_like(an[..., :1])], -1)
    bh = torch.cat([bn, torch.ones_like(bn[..., :1])], -1)
    rows = (bh.unsqueeze(-1) * ah.unsqueeze(-2)).flatten(-2) * w.unsqueeze(-1)  # (*, N, 9)
    En = torch.linalg.eigh(rows.transpose(-1, -2) @ rows)[1][..., 0].reshape(*w.shape[:-1], 3, 3)
    E = Tb.transpose(-1, -2) @ En @ Ta
    U, _, Vh = torch.linalg.svd(E)
    return U @ torch.diag_embed(torch.tensor([1.0, 1.0, 0.0], dtype=E.dtype, device=E.device)) @ Vh


def _decompose(E: torch.Tensor, x_ref: torch.Tensor, x_v: torch.Tensor, w: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (R, t) of E (V, 3, 3) that puts most weighted points in front of both cameras
    (H&Z 9.6.2 and the cheirality test)."""
    V = E.shape[0]
    U, _, Vh = torch.linalg.svd(E)
    U = U * torch.sign(torch.linalg.det(U))[..., None, None]
    Vh = Vh * torch.sign(torch.linalg.det(Vh))[..., None, None]
    W = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=E.dtype, device=E.device)
    Rs = torch.stack([U @ W @ Vh, U @ W @ Vh, U @ W.T @ Vh, U @ W.T @ Vh], 1)  # (V, 4, 3, 3)
    u3 = U[..., :, 2]
    ts = torch.stack([u3, -u3, u3, -u3], 1)  # (V, 4, 3)
    eye = torch.eye(3, 4, dtype=E.dtype, device=E.device).expand(V, 4, 3, 4)
    P = torch.stack([eye, torch.cat([Rs, ts.unsqueeze(-1)], -1)], 2)  # (V, 4, 2, 3, 4)
    pts = torch.stack([x_ref, x_v], 1).unsqueeze(1)  # (V, 1, 2, N, 2)
    ww = torch.stack([w, w], 1).unsqueeze(1)  # (V, 1, 2, N)
    X = triangulate_dlt(pts, P, ww)  # (V, 4, N, 3)
    z2 = (X @ Rs.transpose(-1, -2) + ts.unsqueeze(-2))[..., 2]
    front = (((X[..., 2] > 0) & (z2 > 0)).to(w.dtype) * w.unsqueeze(1)).sum(-1)  # (V, 4)
    best = front.argmax(-1)
    idx = torch.arange(V, device=E.device)
    return Rs[idx, best], ts[idx, best]


def relative_pose_8point(x_ref: torch.Tensor, x_v: torch.Tensor, w: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative pose from normalised correspondences, batched over cameras.

    Args:
        x_ref, x_v: (V, N, 2) normalised coords in the reference / other camera (zeros where
            missing); w (V, N) weights (0 = missing).
    Returns:
        R (V, 3, 3), unit t (V, 3) with ``x_v ~ R x_ref + t``.

    Linear 8-point on ``x_v^T E x_ref = 0`` (H&Z 11.2, conditioned), the singular values of E
    set to (1, 1, 0) (H&Z 11.3), the four ``(R, t)`` of H&Z 9.6.2 scored by how many points
    triangulate in front of both cameras (cheirality).
    """
    return _decompose(_essential_linear(x_ref, x_v, w), x_ref, x_v, w)


def refine_cameras(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, R: torch.Tensor, t: torch.Tensor,
                   ref: int, anchor: int, *, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Local refinement of the relative poses, robust to detection outliers: Levenberg-Marquardt
    (H&Z A6.2) on the reprojection error in pixels with the points eliminated (variable
    projection: each evaluation re-triangulates every keypoint by weighted DLT with the
    candidate cameras), inside iteratively reweighted least squares with Cauchy weights
    ``w / (1 + (e / c)^2)``, ``c = 2.385 * 1.4826 * median(e)`` re-estimated each round; the
    robust weights also weight the DLT, so an outlying view does not move its point.

    The unknowns are, for every camera but ``ref``, an axis-angle increment on ``R_v`` and
    ``t_v`` (``|t_anchor|`` held at its start value: the gauge); the Jacobian by forward
    differences (one batched triangulation for all 6 (V - 1) parameters).

    x (F, V, J, 2) normalised coords, w (F, V, J) weights (0 = missing), f (V,) focal px,
    R (V, 3, 3), t (V, 3) the start (``x_v = R_v x_ref + t_v``). Returns refined (R, t).
    """
    F_, V, J, _ = x.shape
    dt, dev = x.dtype, x.device
    others = [v for v in range(V) if v != ref]
    n = 6 * len(others)
    xf = x * f[:, None, None]
    t_norm = t[anchor].norm()

    def cameras(theta):  # theta (B, n) -> R (B, V, 3, 3), t (B, V, 3)
        B = theta.shape[0]
        th = theta.reshape(B, len(others), 6)
        Rb, tb = R.repeat(B, 1, 1, 1), t.repeat(B, 1, 1)
        Rb[:, others] = axis_angle_to_matrix(th[..., :3]) @ R[others]
        tb[:, others] = t[others] + th[..., 3:]
        tb[:, anchor] = tb[:, anchor] * (t_norm / tb[:, anchor].norm(dim=-1, keepdim=True).clamp_min(1e-12))
        return Rb, tb

    def residuals(theta, wd):  # (B, F, V, J, 2) px, unweighted
        Rb, tb = cameras(theta)
        Fm = torch.diag_embed(torch.stack([f, f, torch.ones_like(f)], -1))
        P = Fm @ torch.cat([Rb, tb.unsqueeze(-1)], -1)  # (B, V, 3, 4)
        X = triangulate_dlt(xf.unsqueeze(0), P.unsqueeze(1), wd.unsqueeze(0))  # (B, F, J, 3)
        xc = torch.einsum("bvac,bfjc->bfvja", Rb, torch.nan_to_num(X)) + tb[:, None, :, None, :]
        z = xc[..., 2:3]
        proj = xc[..., :2] / torch.where(z > 1e-6, z, torch.full_like(z, 1e-6))
        return (proj - x.unsqueeze(0)) * f[None, None, :, None, None]

    theta = torch.zeros(1, n, dtype=dt, device=dev)
    valid = w > 0
    wr = w.clone()
    lam, h = 1e-3, 1e-7
    for _ in range(iters):
        r = residuals(theta, wr)[0]
        e = r.norm(dim=-1)
        c = float(2.385 * 1.4826 * e[valid].median().clamp_min(1e-6))
        wr = torch.where(valid, w / (1 + (e / c) ** 2), torch.zeros_like(w))
        sw = wr.sqrt().unsqueeze(-1)
        r0 = (residuals(theta, wr)[0] * sw).flatten()
        steps = theta + h * torch.eye(n, dtype=dt, device=dev)
        Jm = ((residuals(steps, wr) * sw).reshape(n, -1) - r0) / h  # (n, N)
        A, g = Jm @ Jm.T, Jm @ r0
        cost0 = float(r0 @ r0)
        for _ in range(10):  # LM: raise the damping until the weighted cost falls
            delta = torch.linalg.solve(A + lam * torch.diag(A.diagonal().clamp_min(1e-12)), -g)
            r1 = (residuals(theta + delta, wr)[0] * sw).flatten()
            if float(r1 @ r1) < cost0:
                theta, lam = theta + delta, max(lam / 10, 1e-9)
                break
            lam *= 10
        else:
            break
        if cost0 - float(r1 @ r1) < 1e-7 * cost0:  # converged
            break
    Rb, tb = cameras(theta)
    return Rb[0], tb[0]


@dataclass(frozen=True)
class ProbabilisticResult:
    """Result of :func:`probabilistic_triangulate`, all in the reference camera's frame.

    R (V, 3, 3), t (V, 3) metres: ``x_v = R_v x_ref + t_v`` (identity / zero for the reference);
    points_3d (T, J, 3) metres; sigma_rot_deg, sigma_dir_deg (V,): final spreads of the
    distribution; iterations run; cost_px: the mean reprojection error of the mean cameras over
    the scoring frames; scale: the factor applied from the stature prior.
    """

    R: torch.Tensor
    t: torch.Tensor
    points_3d: torch.Tensor
    sigma_rot_deg: torch.Tensor
    sigma_dir_deg: torch.Tensor
    iterations: int
    cost_px: float
    scale: float


def _scales(xh: torch.Tensor, w: torch.Tensor, R: torch.Tensor, d: torch.Tensor, X: torch.Tensor,
            ref: int) -> torch.Tensor:
    """Closed-form translation magnitudes s (S, V) >= 0 given points X (S, F, J, 3).

    xh (F, V, J, 3) homogeneous normalised points, w (F, V, J); R (S, V, 3, 3), d (S, V, 3).
    ``min_s sum w |x_v x (R_v X + s d_v)|^2`` -> ``s = -sum w <a, b> / sum w |a|^2`` with
    ``a = x_v x d_v``, ``b = x_v x R_v X``.
    """
    RX = torch.einsum("svab,sfjb->sfvja", R, X)  # (S, F, V, J, 3)
    a = _cross(xh.unsqueeze(0), d[:, None, :, None, :])
    b = _cross(xh.unsqueeze(0), RX)
    num = -(w.unsqueeze(0) * (a * b).sum(-1)).nan_to_num().sum((1, 3))  # (S, V)
    den = (w.unsqueeze(0) * (a * a).sum(-1)).nan_to_num().sum((1, 3))
    s = torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(num)).clamp_min(0)
    s[:, ref] = 0
    return s


def _score(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, R: torch.Tensor, d: torch.Tensor,
           ref: int, anchor: int, robust_px: float, rounds: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Cost (S,) of camera samples R (S, V, 3, 3), d (S, V, 3) and their translations (S, V, 3).

    x (F, V, J, 2) normalised, w (F, V, J), f (V,) focal px. Keypoints are triangulated with
    each sample (batched over samples x frames x joints), reprojected, and the truncated mean
    pixel error ``mean min(e, robust_px)`` over valid observations is the cost; a point behind a
    camera counts ``robust_px``.
    """
    xh = torch.cat([x, torch.ones_like(x[..., :1])], -1)
    xf = x * f[:, None, None]  # px-scaled rows, as in pose3d.geometry.triangulation
    Fm = torch.diag_embed(torch.stack([f, f, torch.ones_like(f)], -1))  # (V, 3, 3)
    t = d.clone()
    t[:, ref] = 0
    t = t / t[:, anchor].norm(dim=-1, keepdim=True)[:, None]  # |t_anchor| = 1
    pair = [ref, anchor]
    P2 = torch.cat([R[:, pair], t[:, pair].unsqueeze(-1)], -1)  # (S, 2, 3, 4)
    X = triangulate_dlt(xf[:, pair].unsqueeze(0), (Fm[pair] @ P2).unsqueeze(1), w[:, pair].unsqueeze(0))
    for _ in range(rounds):  # scales from the current points, then all views together
        s = _scales(xh, w, R, d, torch.nan_to_num(X), ref)
        s[:, anchor] = torch.where(s[:, anchor] > 0, s[:, anchor], torch.ones_like(s[:, anchor]))
        t = s.unsqueeze(-1) * d
        P = Fm @ torch.cat([R, t.unsqueeze(-1)], -1)  # (S, V, 3, 4)
        X = triangulate_dlt(xf.unsqueeze(0), P.unsqueeze(1), w.unsqueeze(0))  # (S, F, J, 3)
    xc = torch.einsum("svab,sfjb->sfvja", R, X) + t[:, None, :, None, :]  # (S, F, V, J, 3)
    proj = xc[..., :2] / xc[..., 2:3]
    e = (proj - x.unsqueeze(0)).norm(dim=-1) * f[:, None]  # (S, F, V, J) px
    e = torch.where(xc[..., 2] > 0, e, torch.full_like(e, robust_px))
    e = torch.nan_to_num(e, nan=robust_px).clamp_max(robust_px)
    ww = w.unsqueeze(0)
    cost = (e * ww).sum((1, 2, 3)) / ww.sum((1, 2, 3)).clamp_min(1e-12)
    return cost, t


def probabilistic_triangulate(points_px: torch.Tensor, K: torch.Tensor, dist: torch.Tensor,
                              scores: torch.Tensor | None = None, *, reference: int = 0,
                              score_threshold: float = 0.0, n_samples: int = 48,
                              n_iters: int = 40, elite_frac: float = 0.2,
                              init_sigma_deg: float = 10.0, smoothing: float = 0.7,
                              tol_deg: float = 0.05, score_frames: int = 8,
                              robust_px: float = 30.0, stature_m: float = 1.7,
                              refine: bool = False,
                              refine_cameras_iters: int = 30, seed: int = 0) -> ProbabilisticResult:
    """Cameras' relative poses and 3D keypoints from 2D keypoints of a static rig, no extrinsics.

    Args:
        points_px: (T, V, J, 2) distorted pixels over a window of T frames; NaN = missing.
        K: (V, 3, 3), dist: (V, 5) known intrinsics.
        scores: (T, V, J) detection confidences (DLT row weights), optional.
        reference: index of the reference camera (output frame).
        n_samples: Monte Carlo samples per camera per iteration; n_iters: at most this many updates.
        elite_frac: fraction of best samples that define the updated distribution.
        init_sigma_deg: initial spread around the 8-point estimate (rotation and direction).
        smoothing: weight of the elite statistics in each update (1 = no memory).
        tol_deg: stop when every camera's rotation and direction spread is below this.
        score_frames: frames (evenly spaced over the window) used to score samples.
        robust_px: reprojection errors are truncated here (outliers, wrong samples).
        stature_m: prior stature (see :func:`stature`) that sets the metric scale.
        refine: Levenberg-Marquardt refinement of the final triangulation.
        refine_cameras_iters: at most this many robust Levenberg-Marquardt rounds on the
            cameras after the search (:func:`refine_cameras`); 0 = the search's mean as it is.

    Returns:
        :class:`ProbabilisticResult` in the reference camera's frame.
    """
    check_shape(points_px, "T V J 2", "points_px")
    T, V, J, _ = points_px.shape
    if V < 2:
        raise ValueError(f"points_px: probabilistic triangulation needs at least 2 views, got {V}")
    if K.shape[0] != V or dist.shape[0] != V:
        raise ValueError(f"points_px has {V} views but K/dist describe {K.shape[0]}/{dist.shape[0]} cameras")
    if not 0 <= reference < V:
        raise ValueError(f"reference = {reference}: expected a camera index in [0, {V})")
    dt, dev = points_px.dtype, points_px.device
    K, dist = K.to(points_px), dist.to(points_px)
    keep = torch.isfinite(points_px).all(-1)
    if scores is not None:
        check_shape(scores, f"{T} {V} {J}", "scores")
        keep = keep & torch.isfinite(scores) & (scores >= score_threshold)
    w = keep.to(dt) * (torch.nan_to_num(scores.to(points_px)).clamp_min(0) if scores is not None else 1)
    if not (keep.sum(1) >= 2).any():
        raise ValueError("points_px: no keypoint is seen in at least 2 usable views")
    x = undistort_points(points_px, K, dist, normalized=True)
    x, w = _usable(x, w)
    f = (K[:, 0, 0] + K[:, 1, 1]) / 2
    others = [v for v in range(V) if v != reference]

    # ---- initial distribution: pairwise epipolar geometry (reference, v)
    xr = x[:, reference].reshape(1, T * J, 2).expand(V - 1, -1, -1)
    xv = x[:, others].transpose(0, 1).reshape(V - 1, T * J, 2)
    wv = (w[:, reference].reshape(1, T * J) * w[:, others].transpose(0, 1).reshape(V - 1, T * J))
    R0, d0 = relative_pose_8point(xr, xv, (wv > 0).to(dt))
    R_mean = torch.eye(3, dtype=dt, device=dev).repeat(V, 1, 1)
    d_mean = torch.zeros(V, 3, dtype=dt, device=dev)
    R_mean[others], d_mean[others] = R0, d0
    # anchor: the camera seeing most keypoints together with the reference (|t_anchor| = 1)
    anchor = others[int(wv.gt(0).sum(-1).argmax())]

    frames = torch.linspace(0, T - 1, min(score_frames, T), device=dev).round().long().unique()
    xs, ws = x[frames], w[frames]
    sig_R = torch.full((V,), float(torch.deg2rad(torch.tensor(init_sigma_deg))), dtype=dt, device=dev)
    sig_d = sig_R.clone()
    sig_R[reference] = sig_d[reference] = 0
    gen = torch.Generator(device=dev).manual_seed(seed)
    n_elite = max(2, int(round(elite_frac * n_samples)))
    # log-rank weights of the elite (as in CMA-ES): the best samples count most
    rank_w = torch.log(torch.tensor(n_elite + 0.5, dtype=dt)) - torch.log(torch.arange(1, n_elite + 1, dtype=dt))
    rank_w = (rank_w / rank_w.sum()).to(dev)[None, :, None]  # (1, E, 1)
    Vo, S = len(others), n_samples
    cols = torch.tensor(others, device=dev).repeat_interleave(S)  # camera perturbed by each sample
    rows = torch.arange(Vo * S, device=dev)
    it = 0
    for it in range(1, n_iters + 1):  # each iteration is one batched evaluation of all samples
        # block k of S samples perturbs camera others[k] only (the others sit at their means):
        # the search is V-1 five-dimensional problems, not one 5(V-1)-dimensional one
        eps = torch.randn(Vo, S, 3, generator=gen, dtype=dt, device=dev) * sig_R[others, None, None]
        nd = torch.randn(Vo, S, 3, generator=gen, dtype=dt, device=dev) * sig_d[others, None, None]
        eps[:, 0] = 0  # the current mean is always a candidate
        nd[:, 0] = 0
        dm = d_mean[others].unsqueeze(1)  # (Vo, 1, 3)
        nd = nd - (nd * dm).sum(-1, keepdim=True) * dm  # tangent plane at the mean direction
        d_new = (dm + nd) / (dm + nd).norm(dim=-1, keepdim=True).clamp_min(1e-12)
        R_s = R_mean.repeat(Vo * S, 1, 1, 1)  # (Vo*S, V, 3, 3)
        d_s = d_mean.repeat(Vo * S, 1, 1)
        R_s[rows, cols] = axis_angle_to_matrix(eps.reshape(-1, 3)) @ R_mean[cols]
        d_s[rows, cols] = d_new.reshape(-1, 3)
        cost, _ = _score(xs, ws, f, R_s, d_s, reference, anchor, robust_px, rounds=1)
        elite = torch.topk(cost.reshape(Vo, S), n_elite, dim=1, largest=False).indices  # (Vo, E)
        idx = elite + torch.arange(Vo, device=dev)[:, None] * S
        oi = torch.tensor(others, device=dev)[:, None]
        R_e, d_e = R_s[idx, oi], d_s[idx, oi]  # (Vo, E, 3, 3), (Vo, E, 3)
        new_R = project_to_rotation((rank_w[..., None] * R_e).sum(1))  # weighted chordal mean
        new_d = (rank_w * d_e).sum(1)
        new_d = new_d / new_d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        ang_R = matrix_to_axis_angle(R_e @ new_R.unsqueeze(1).transpose(-1, -2)).pow(2).sum(-1)
        ang_d = torch.arccos((d_e * new_d.unsqueeze(1)).sum(-1).clamp(-1, 1)).pow(2)
        spread_R = (rank_w[..., 0] * ang_R).sum(1).div(3).sqrt()  # per-axis std
        spread_d = (rank_w[..., 0] * ang_d).sum(1).div(2).sqrt()
        # elitism: the next mean is the best of (weighted elite mean, per-camera best samples,
        # current mean), scored jointly, so the mean's cost never increases
        cand_R = R_mean.repeat(3, 1, 1, 1)
        cand_d = d_mean.repeat(3, 1, 1)
        cand_R[0, others], cand_d[0, others] = new_R, new_d
        cand_R[1, others], cand_d[1, others] = R_e[:, 0], d_e[:, 0]
        cand_cost, _ = _score(xs, ws, f, cand_R, cand_d, reference, anchor, robust_px, rounds=1)
        pick = int(cand_cost.argmin())
        R_mean, d_mean = cand_R[pick], cand_d[pick]
        sig_R[others] = smoothing * spread_R + (1 - smoothing) * sig_R[others]
        sig_d[others] = smoothing * spread_d + (1 - smoothing) * sig_d[others]
        if float(torch.rad2deg(torch.maximum(sig_R, sig_d)).max()) < tol_deg:
            break

    cost, t = _score(x, w, f, R_mean.unsqueeze(0), d_mean.unsqueeze(0), reference, anchor, robust_px)
    t = t[0]
    if refine_cameras_iters > 0:
        R_mean, t = refine_cameras(x, w, f, R_mean, t, reference, anchor, iters=refine_cameras_iters)
        d_mean = t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        cost, _ = _score(x, w, f, R_mean.unsqueeze(0), d_mean.unsqueeze(0), reference, anchor, robust_px)
    cams = {"K": K, "dist": dist, "R": R_mean, "t": t}
    X = triangulate(points_px, cams, scores, score_threshold=score_threshold,
                    refine=refine).points_3d  # (T, J, 3), reference frame, |t_anchor| units
    h = stature(X)
    h = h[torch.isfinite(h)]
    scale = float(stature_m / h.median()) if h.numel() else float("nan")
    return ProbabilisticResult(R=R_mean, t=t * scale, points_3d=X * scale,
                               sigma_rot_deg=torch.rad2deg(sig_R), sigma_dir_deg=torch.rad2deg(sig_d),
                               iterations=it, cost_px=float(cost[0]), scale=scale)
