"""Gaussian targets, decoding (argmax / quarter / DARK), flip with joint swap."""

from __future__ import annotations

import numpy as np
import pytest
import torch


pytestmark = pytest.mark.usefixtures("one_thread")

from pose3d import heatmaps as hmod
from pose3d.skeleton import FLIP_PERM, JOINT_INDEX, flip_poses


def _random_joints(B=4, J=17, H=32, W=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, J, 2, generator=g, dtype=torch.float64) * torch.tensor([W - 7.0, H - 7.0]) + 3.0


def test_target_peak_and_weights():
    t, w = hmod.gaussian_targets(torch.tensor([[[5.0, 2.0], [40.0, 3.0], [-0.6, 1.0]]]), 8, 32, 1.5)
    assert t.shape == (1, 3, 8, 32)
    assert t[0, 0, 2, 5] == pytest.approx(1.0) and t[0, 0].argmax() == 2 * 32 + 5
    assert t[0, 0, 2, 6] == pytest.approx(np.exp(-1 / (2 * 1.5**2)))
    assert w.tolist() == [[1.0, 0.0, 0.0]]  # out of the heatmap -> weight 0


@pytest.mark.parametrize("sigma", [1.0, 1.5, 2.0])
def test_encode_decode_recovers_subpixel(sigma):
    mu = _random_joints()
    t, _ = hmod.gaussian_targets(mu, 32, 32, sigma)
    dark, scores = hmod.decode(t, "dark", sigma=sigma)
    # exact for Gaussians away from the border (the blur's replicate padding biases it there)
    away = ((mu > 3 * sigma) & (mu < 31 - 3 * sigma)).all(-1)
    assert away.sum() > 20
    assert (dark - mu)[away].abs().max() < 1e-3
    assert (dark - mu).abs().max() < 0.2
    am, _ = hmod.decode(t, "argmax")
    qt, _ = hmod.decode(t, "quarter")
    e_am, e_qt = (am - mu).norm(dim=-1).mean(), (qt - mu).norm(dim=-1).mean()
    assert e_qt < e_am  # the quarter offset helps on average
    assert (am - mu).abs().max() <= 0.5 + 1e-6
    assert torch.all(scores > 0.6) and torch.all(scores <= 1.0)


def test_dark_robust_to_noise_and_flat_maps():
    mu = _random_joints(seed=2)
    t, _ = hmod.gaussian_targets(mu, 32, 32, 1.5)
    noisy = t.float() + 0.02 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0))
    dark, _ = hmod.decode(noisy, "dark", sigma=1.5)
    am, _ = hmod.decode(noisy, "argmax")
    assert (dark - mu).norm(dim=-1).mean() < 0.5 * (am - mu).norm(dim=-1).mean()
    flat, s = hmod.decode(torch.zeros(1, 2, 8, 8), "dark")
    assert torch.isfinite(flat).all() and (s == 0).all()


def test_crop_heatmap_coordinate_maps():
    x = torch.tensor([0.0, 1.5, 127.0])
    h = hmod.crop_to_heatmap(x, 4)
    assert torch.allclose(hmod.heatmap_to_crop(h, 4), x)
    # pixels 0..3 of the crop -> heatmap pixel 0 (its centre at crop 1.5)
    assert hmod.crop_to_heatmap(torch.tensor(1.5), 4) == 0.0


def test_flip_is_involution_and_matches_coordinates():
    hm = torch.randn(2, 17, 8, 12)
    assert torch.equal(hmod.flip_heatmaps(hmod.flip_heatmaps(hm)), hm)
    j = torch.rand(3, 17, 2, generator=torch.Generator().manual_seed(0)) * 100
    # float32 at |x| ~ 127 rounds to ~8e-6: 127 - (127 - x) is x only to that absolute tolerance
    assert torch.allclose(hmod.flip_joints(hmod.flip_joints(j, 128), 128), j, rtol=0, atol=3e-5)
    # the left wrist of the flipped crop is the right wrist of the original, mirrored
    f = hmod.flip_joints(j, 128)
    lw, rw = JOINT_INDEX["l_wrist"], JOINT_INDEX["r_wrist"]
    assert torch.allclose(f[:, lw], torch.stack([127 - j[:, rw, 0], j[:, rw, 1]], -1))
    # agrees with skeleton.flip_poses shifted by the width
    g = flip_poses(j)
    g[..., 0] += 127
    assert torch.allclose(f, g)
    # heatmap flip and coordinate flip commute with encode/decode (no one-pixel shift)
    mu = torch.rand(2, 17, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 8 + 8
    t, _ = hmod.gaussian_targets(mu, 24, 24, 1.0)
    dec, _ = hmod.decode(hmod.flip_heatmaps(t), "dark", sigma=1.0)
    assert torch.allclose(dec, hmod.flip_joints(mu, 24).to(dec.dtype), atol=1e-3)
    assert sorted(FLIP_PERM) == list(range(17))


def test_weighted_mse_ignores_zero_weight_joints():
    pred = torch.zeros(2, 3, 4, 4)
    tgt = torch.ones(2, 3, 4, 4)
    w = torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])
    assert hmod.weighted_mse(pred, tgt, w).item() == pytest.approx(0.5 / 3)
