"""RepNet parts: KCS layer, camera and reprojection losses, critic, gradient penalty."""

import pytest
import torch

from pose3d.geometry.rotations import random_rotation
from pose3d.models.repnet import (KCSCritic, KCSLayer, RepNetLifter, camera_loss, critic_loss,
                                  gradient_penalty, reprojection_loss)
from pose3d.skeleton import BONES, bone_vectors


def test_kcs_matrix_is_bone_dot_products():
    X = torch.randn(4, 17, 3, dtype=torch.float64)
    psi = KCSLayer().double()(X)
    B = bone_vectors(X)  # (4, 16, 3): child - parent
    assert psi.shape == (4, len(BONES), len(BONES))
    for b1 in (0, 5, 15):
        for b2 in (0, 7, 15):
            torch.testing.assert_close(psi[:, b1, b2], (B[:, b1] * B[:, b2]).sum(-1))
    # diagonal = squared bone lengths; invariant to rotation of the pose
    torch.testing.assert_close(psi.diagonal(dim1=1, dim2=2), B.pow(2).sum(-1))
    R = random_rotation(4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(KCSLayer().double()(X @ R.transpose(-1, -2)), psi)


def test_camera_loss_zero_for_scaled_orthographic():
    R = random_rotation(3, generator=torch.Generator().manual_seed(0)).float()
    K = 2.5 * R[:, :2, :]
    assert camera_loss(K).item() < 1e-3
    K_bad = K.clone()
    K_bad[:, 0] *= 2
    assert camera_loss(K_bad).item() > 0.1


def test_reprojection_loss_zero_when_consistent():
    X = torch.randn(2, 17, 3)
    K = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    w = X[..., :2].clone()
    assert reprojection_loss(w, X, K).item() < 1e-4
    assert reprojection_loss(w + 0.1, X, K).item() > 0.1


def test_lifter_shapes_and_camera_init():
    m = RepNetLifter(hidden=32, camera_hidden=32).eval()
    y = m(torch.randn(2, 3, 17, 2))
    assert y.shape == (2, 3, 17, 3)
    assert torch.all(y[..., 0, :] == 0)
    _, K = m.generate(torch.randn(4, 17, 2))
    # the camera branch starts near [I | 0]
    assert torch.allclose(K, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(4, 2, 3), atol=0.2)


def test_critic_and_gradient_penalty():
    c = KCSCritic(hidden=16, kcs_hidden=32)
    real, fake = torch.randn(8, 17, 3), torch.randn(8, 17, 3)
    assert c(real).shape == (8,)
    gp = gradient_penalty(c, real, fake)
    assert gp.ndim == 0
    gp.backward()
    assert any(p.grad is not None for p in c.parameters())
    # a linear critic <w, X> has gradient w at every interpolate: the penalty is (|w| - 1)^2
    for norm, expected in ((3.0, 4.0), (1.0, 0.0), (0.5, 0.25)):
        w = torch.randn(17 * 3, dtype=torch.float64)
        w = w / w.norm() * norm
        gp = gradient_penalty(lambda X: X.reshape(len(X), -1) @ w, real.double(), fake.double())
        assert gp.item() == pytest.approx(expected, abs=1e-9)


def test_lazy_gradient_penalty_equals_the_exact_one_on_the_steps_it_runs():
    c = KCSCritic(hidden=16, kcs_hidden=32).double()
    real, fake = torch.randn(8, 17, 3).double(), torch.randn(8, 17, 3).double()
    wasserstein = (c(fake).mean() - c(real).mean()).item()
    for step in range(7):
        torch.manual_seed(step)
        exact_gp = gradient_penalty(c, real, fake).item()
        torch.manual_seed(step)
        lazy = critic_loss(c, real, fake, gp_weight=10.0, gp_every=3, step=step).item()
        torch.manual_seed(step)
        every = critic_loss(c, real, fake, gp_weight=10.0, gp_every=1, step=step).item()
        assert every == pytest.approx(wasserstein + 10.0 * exact_gp, rel=1e-12)
        if step % 3 == 0:  # the penalty runs, weighted x3
            assert lazy == pytest.approx(wasserstein + 30.0 * exact_gp, rel=1e-12)
        else:
            assert lazy == pytest.approx(wasserstein, rel=1e-12)


def test_per_sample_2d_normalisation_hides_the_size_of_the_pose():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 17, 2) * 50 + 200
    root = x[..., :1, :]
    bigger = root + 1.7 * (x - root)  # the same pose nearer the camera
    m = RepNetLifter(hidden=32, camera_hidden=32, per_sample_2d=True).eval()
    torch.testing.assert_close(m(bigger), m(x), rtol=1e-5, atol=1e-6)
    y3d = torch.randn(50, 17, 3) * torch.tensor([1.0, 1.0, 3.0])
    y3d = y3d - y3d[:, :1]
    m.set_normalization(x.reshape(-1, 17, 2), y3d)
    w = m.normalize_2d(x.reshape(-1, 17, 2))
    # each pose's 2D gets the mean projected (x, y) radius of the normalised 3D poses
    target = (y3d[..., :2] / y3d.pow(2).mean().sqrt()).pow(2).mean((-1, -2)).sqrt().mean()
    torch.testing.assert_close(w.pow(2).mean((-1, -2)).sqrt(), target.expand(6))
    g = RepNetLifter(hidden=32, camera_hidden=32).eval()  # the global scale keeps the size
    assert (g(bigger) - g(x)).abs().max() > 1e-3
