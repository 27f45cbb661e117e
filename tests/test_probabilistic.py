"""Uncalibrated probabilistic triangulation: recovers a known rig from 2D keypoints alone."""

from __future__ import annotations

import pytest
import torch

from pose3d.geometry.probabilistic import probabilistic_triangulate, relative_pose_8point, stature
from pose3d.geometry.rotations import rotation_angle_deg
from test_triangulation import make_points, make_rig, observe

D = torch.float64


def relative_truth(cams, ref):
    Rr, tr = cams["R"][ref], cams["t"][ref]
    R = cams["R"] @ Rr.T
    return R, cams["t"] - (R @ tr.unsqueeze(-1)).squeeze(-1)


def direction_error_deg(t_est, t_true):
    c = torch.nn.functional.cosine_similarity(t_est, t_true, dim=-1).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(c))


@pytest.mark.parametrize("noise_px, tol_deg", [(0.0, 0.01), (1.0, 3.0)])
def test_recovers_known_rig(noise_px, tol_deg):
    cams, ref = make_rig(V=4), 1
    X = make_points((16, 17), seed=7)  # 16 frames x 17 joints: small enough for a fast test
    g = torch.Generator().manual_seed(8)
    uv = observe(X, cams) + noise_px * torch.randn(16, 4, 17, 2, generator=g, dtype=D)
    R_true, t_true = relative_truth(cams, ref)
    X_ref = X @ cams["R"][ref].T + cams["t"][ref]
    res = probabilistic_triangulate(uv, cams["K"], cams["dist"], reference=ref,
                                    stature_m=float(stature(X_ref).median()), score_frames=8,
                                    n_samples=32, n_iters=25)
    others = [0, 2, 3]
    assert torch.allclose(res.R[ref], torch.eye(3, dtype=D)) and res.t[ref].abs().max() == 0
    assert rotation_angle_deg(res.R[others], R_true[others]).max() < tol_deg
    assert direction_error_deg(res.t[others], t_true[others]).max() < tol_deg
    err_mm = (res.points_3d - X_ref).norm(dim=-1).mean() * 1000
    assert err_mm < (1e-3 if noise_px == 0 else 40.0)
    assert res.points_3d.shape == (16, 17, 3) and res.iterations >= 1


def test_eight_point_exact_noise_free():
    cams, ref = make_rig(V=3, distort=False), 0
    X = make_points((5, 17), seed=9)
    uv = observe(X, cams)
    x = (uv - cams["K"][None, :, None, :2, 2]) / torch.stack(
        [cams["K"][:, 0, 0], cams["K"][:, 1, 1]], -1)[None, :, None]
    xr = x[:, 0].reshape(1, -1, 2).expand(2, -1, -1)
    xv = x[:, 1:].transpose(0, 1).reshape(2, -1, 2)
    R, t = relative_pose_8point(xr, xv, torch.ones(2, xr.shape[1], dtype=D))
    R_true, t_true = relative_truth(cams, ref)
    assert rotation_angle_deg(R, R_true[1:]).max() < 1e-6
    assert direction_error_deg(t, t_true[1:]).max() < 1e-6


def test_bad_input():
    cams = make_rig(V=3)
    uv = observe(make_points((4, 17)), cams)
    with pytest.raises(ValueError, match="at least 2 views"):
        probabilistic_triangulate(uv[:, :1], cams["K"][:1], cams["dist"][:1])
    with pytest.raises(ValueError, match="3 views but K/dist describe 2"):
        probabilistic_triangulate(uv, cams["K"][:2], cams["dist"][:2])
    with pytest.raises(ValueError, match="no keypoint"):
        probabilistic_triangulate(torch.full_like(uv, float("nan")), cams["K"], cams["dist"])
    with pytest.raises(ValueError, match="reference"):
        probabilistic_triangulate(uv, cams["K"], cams["dist"], reference=5)
