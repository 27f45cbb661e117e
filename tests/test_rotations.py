"""Rotation helpers against scipy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pose3d.geometry import (
    axis_angle_to_matrix,
    look_at,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    project,
    quaternion_to_matrix,
    random_rotation,
    rotation_about_axis,
    rotation_angle_deg,
    skew,
)

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_axis_angle_to_matrix_matches_scipy():
    v = torch.randn(50, 3, generator=_gen(), dtype=F64) * 1.5
    ref = Rotation.from_rotvec(v.numpy()).as_matrix()
    assert np.allclose(axis_angle_to_matrix(v).numpy(), ref, atol=1e-12)


def test_axis_angle_small_and_zero_angles():
    v = torch.tensor([[0.0, 0.0, 0.0], [1e-6, -2e-6, 3e-7], [1e-12, 0.0, 0.0]], dtype=F64)
    ref = Rotation.from_rotvec(v.numpy()).as_matrix()
    assert np.allclose(axis_angle_to_matrix(v).numpy(), ref, atol=1e-15)
    # gradient at exactly zero is d(I + [v]x)/dv: finite
    z = torch.zeros(3, dtype=F64, requires_grad=True)
    axis_angle_to_matrix(z)[0, 1].backward()
    assert torch.allclose(z.grad, torch.tensor([0.0, 0.0, -1.0], dtype=F64))


def test_hand_values():
    # 90 deg about z maps e_x -> e_y (right-hand rule)
    Rz = rotation_about_axis(math.pi / 2, "z")
    assert torch.allclose(Rz @ torch.tensor([1.0, 0, 0], dtype=F64), torch.tensor([0.0, 1, 0], dtype=F64), atol=1e-15)
    Ry = rotation_about_axis(torch.tensor(math.pi / 2, dtype=F64), "y")
    assert torch.allclose(Ry @ torch.tensor([0.0, 0, 1], dtype=F64), torch.tensor([1.0, 0, 0], dtype=F64), atol=1e-15)
    Rmx = rotation_about_axis(math.pi / 2, "-x")
    assert torch.allclose(Rmx @ torch.tensor([0.0, 1, 0], dtype=F64), torch.tensor([0.0, 0, -1], dtype=F64), atol=1e-15)
    # a vector axis and a batch of angles
    ang = torch.tensor([0.1, 0.2, 0.3], dtype=F64)
    Rv = rotation_about_axis(ang, torch.tensor([0.0, 0.0, 2.0], dtype=F64))
    assert Rv.shape == (3, 3, 3)
    assert torch.allclose(Rv, rotation_about_axis(ang, "z"), atol=1e-15)
    with pytest.raises(ValueError, match="axis must be x, y, z or a vector, got 'w'"):
        rotation_about_axis(1.0, "w")
    # skew is the cross product
    a, b = torch.randn(2, 5, 3, dtype=F64)
    assert torch.allclose(skew(a) @ b[..., None], torch.linalg.cross(a, b)[..., None], atol=1e-14)


def test_matrix_to_quaternion_matches_scipy_both_orders():
    R = random_rotation(200, _gen(1))
    q_xyzw = Rotation.from_matrix(R.numpy()).as_quat()
    q_xyzw *= np.sign(q_xyzw[:, 3:])  # canonical w >= 0
    assert np.allclose(matrix_to_quaternion(R, scalar_first=False).numpy(), q_xyzw, atol=1e-12)
    q_wxyz = matrix_to_quaternion(R, scalar_first=True)
    assert np.allclose(q_wxyz.numpy(), q_xyzw[:, [3, 0, 1, 2]], atol=1e-12)
    assert torch.allclose(quaternion_to_matrix(q_wxyz, scalar_first=True), R, atol=1e-12)


def test_near_pi_rotations_round_trip():
    """Shepperd's branch choice: w ~ 0 (180 deg) is where the naive formula fails."""
    axes = torch.randn(20, 3, generator=_gen(2), dtype=F64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    for angle in (math.pi, math.pi - 1e-7, 1e-9):
        R = axis_angle_to_matrix(axes * angle)
        assert torch.allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-10)
        assert torch.allclose(axis_angle_to_matrix(matrix_to_axis_angle(R)), R, atol=1e-10)
        assert torch.allclose(matrix_to_axis_angle(R).norm(dim=-1), torch.full((20,), angle, dtype=F64), atol=1e-7)


def test_matrix_to_axis_angle_inverts_rodrigues():
    v = torch.randn(100, 3, generator=_gen(3), dtype=F64)
    v = v / v.norm(dim=-1, keepdim=True) * torch.rand(100, 1, generator=_gen(4), dtype=F64) * 3.1
    assert torch.allclose(matrix_to_axis_angle(axis_angle_to_matrix(v)), v, atol=1e-10)


def test_rotation_angle_deg():
    R1 = random_rotation(30, _gen(5))
    ang = torch.linspace(0, math.pi, 30, dtype=F64)
    axis = torch.randn(30, 3, generator=_gen(6), dtype=F64)
    R2 = R1 @ rotation_about_axis(ang, axis)
    assert torch.allclose(rotation_angle_deg(R1, R2), torch.rad2deg(ang), atol=1e-6)
    assert torch.allclose(rotation_angle_deg(R2, R1), torch.rad2deg(ang), atol=1e-6)  # symmetric
    assert rotation_angle_deg(R1[0], R1[0]).item() == pytest.approx(0.0, abs=1e-6)


def test_random_rotation_is_a_rotation_and_uniform():
    R = random_rotation(4000, _gen(7))
    assert R.shape == (4000, 3, 3) and random_rotation(generator=_gen(7)).shape == (3, 3)
    eye = torch.eye(3, dtype=F64)
    assert torch.allclose(R @ R.transpose(-1, -2), eye.expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(4000, dtype=F64), atol=1e-12)
    # Haar measure: E[R] = 0, and the rotation angle has density (1 - cos th) / pi,
    # so E[th] = pi/2 + 2/pi (about 126.5 deg)
    assert R.mean(0).abs().max() < 0.05
    th = rotation_angle_deg(eye, R).mean().item()
    assert th == pytest.approx(math.degrees(math.pi / 2 + 2 / math.pi), abs=1.5)
    # reproducible with a seeded generator
    assert torch.equal(random_rotation(3, _gen(9)), random_rotation(3, _gen(9)))


def test_look_at_opencv_convention():
    eye = torch.tensor([0.0, -5.0, 1.5], dtype=F64)
    target = torch.tensor([0.0, 0.0, 1.5], dtype=F64)
    R, t = look_at(eye, target)  # Z up by default
    # looking along +Y with Z up: x_cam = +X (right), y_cam = -Z (down), z_cam = +Y (forward)
    assert torch.allclose(R, torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=F64), atol=1e-15)
    assert torch.allclose(R @ eye + t, torch.zeros(3, dtype=F64), atol=1e-15)
    # the target projects to the principal point; a point above it appears higher (smaller v)
    K = torch.tensor([[1000.0, 0, 640], [0, 1000, 360], [0, 0, 1]], dtype=F64)
    pts = torch.stack([target, target + torch.tensor([0.0, 0, 0.5], dtype=F64),
                       target + torch.tensor([0.5, 0, 0], dtype=F64)])
    uv = project(pts, K, None, R, t)
    assert torch.allclose(uv[0], torch.tensor([640.0, 360.0], dtype=F64))
    assert uv[1, 1] < 360 and uv[2, 0] > 640


def test_look_at_batched_and_degenerate():
    eye = torch.randn(2, 3, 3, generator=_gen(8), dtype=F64) * 4
    target = torch.zeros(3, dtype=F64)
    R, t = look_at(eye, target, torch.tensor([0.0, 0, 1], dtype=F64))
    assert R.shape == (2, 3, 3, 3) and t.shape == (2, 3, 3)
    assert torch.allclose(torch.linalg.det(R), torch.ones(2, 3, dtype=F64), atol=1e-12)
    depth = (R @ target + t)[..., 2]
    assert torch.allclose(depth, eye.norm(dim=-1), atol=1e-12)
    with pytest.raises(ValueError, match="parallel"):
        look_at(torch.tensor([0.0, 0, 5], dtype=F64), target)


@pytest.mark.parametrize("lead", [(), (5,), (2, 3)])
def test_batch_shapes(lead):
    v = torch.randn(lead + (3,), dtype=F64)
    R = axis_angle_to_matrix(v)
    assert R.shape == lead + (3, 3)
    assert matrix_to_axis_angle(R).shape == lead + (3,)
    assert matrix_to_quaternion(R).shape == lead + (4,)
    assert rotation_angle_deg(R, R).shape == lead
    assert rotation_about_axis(torch.zeros(lead, dtype=F64), "x").shape == lead + (3, 3)


def test_gradcheck_rotations():
    v = torch.randn(4, 3, generator=_gen(10), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (v,))
    R = axis_angle_to_matrix(v.detach() * 0.7).requires_grad_()
    assert torch.autograd.gradcheck(lambda r: matrix_to_quaternion(r), (R,))
