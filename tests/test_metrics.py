"""Metrics: hand-computed values, invariances, masks/NaN, an independent numpy P-MPJPE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pose3d.geometry import apply_similarity, random_rotation
from pose3d.metrics import (
    actionwise_mean,
    auc_pck3d,
    framewise_mean,
    joint_errors,
    mpjpe,
    mpjve,
    n_mpjpe,
    pa_mpjpe,
    pck3d,
)
from pose3d.skeleton import JOINT_INDEX, ROOT

F64 = torch.float64
J = 17


def _poses(*lead, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(lead + (J, 3), generator=g, dtype=F64) * 0.3


def _numpy_pa_mpjpe(pred: np.ndarray, target: np.ndarray) -> float:
    """Independent reference: orthogonal Procrustes via scipy's SVD-free orthogonal_procrustes
    for the rotation (reflection-corrected), closed-form scale, one pose (J, 3)."""
    from scipy.linalg import orthogonal_procrustes

    p0 = pred - pred.mean(0)
    g0 = target - target.mean(0)
    Rrow, _ = orthogonal_procrustes(p0, g0)  # argmin |p0 @ R - g0|, R orthogonal
    if np.linalg.det(Rrow) < 0:  # orthogonal_procrustes may return a reflection: fix via SVD
        U, _, Vt = np.linalg.svd(p0.T @ g0)
        Rrow = U @ np.diag([1.0, 1.0, -1.0]) @ Vt
    s = np.sum((p0 @ Rrow) * g0) / np.sum(p0**2)
    return float(np.linalg.norm(s * p0 @ Rrow - g0, axis=-1).mean())


def test_mpjpe_hand_value_and_root_alignment():
    target = _poses()
    pred = target.clone()
    pred[JOINT_INDEX["l_wrist"]] += torch.tensor([0.03, 0.04, 0.0], dtype=F64)  # 5 cm
    assert mpjpe(pred, target).item() == pytest.approx(0.05 / J, abs=1e-15)
    # protocol 1 is root-relative: a global shift changes nothing, a root error moves every joint
    assert mpjpe(pred + torch.tensor([1.0, -2.0, 3.0], dtype=F64), target).item() == pytest.approx(0.05 / J, abs=1e-12)
    shifted_root = target.clone()
    shifted_root[ROOT] += torch.tensor([0.0, 0.0, 0.017], dtype=F64)
    assert mpjpe(shifted_root, target).item() == pytest.approx(0.017 * (J - 1) / J, abs=1e-12)
    assert mpjpe(1000 * pred, 1000 * target).item() == pytest.approx(1000 * mpjpe(pred, target).item())
    assert joint_errors(pred, target, "none")[JOINT_INDEX["l_wrist"]].item() == pytest.approx(0.05)


def test_pa_mpjpe_zero_for_similar_copy_but_not_mpjpe():
    g = torch.Generator().manual_seed(1)
    target = _poses(6)
    R = random_rotation(6, g)
    pred = apply_similarity(target, torch.full((6,), 1.7, dtype=F64), R, torch.randn(6, 3, dtype=F64, generator=g))
    assert pa_mpjpe(pred, target).abs().max() < 1e-12
    assert (mpjpe(pred, target) > 0.05).all()
    # a mirrored prediction is not "explained away" by P-MPJPE (no reflections)
    mirrored = target * torch.tensor([-1.0, 1.0, 1.0], dtype=F64)
    assert (pa_mpjpe(mirrored, target) > 0.01).all()


def test_pa_mpjpe_matches_independent_numpy():
    target = _poses(10, seed=2)
    g = torch.Generator().manual_seed(3)
    pred = apply_similarity(target, torch.full((10,), 0.8, dtype=F64), random_rotation(10, g),
                            torch.zeros(10, 3, dtype=F64))
    pred = pred + 0.05 * torch.randn(pred.shape, generator=g, dtype=F64)
    ours = pa_mpjpe(pred, target).numpy()
    ref = np.array([_numpy_pa_mpjpe(p, t) for p, t in zip(pred.numpy(), target.numpy())])
    assert np.allclose(ours, ref, atol=1e-12)
    assert (ours > 0.01).all()


def test_n_mpjpe_scale_invariance_and_formula():
    target = _poses(5, seed=4)
    assert n_mpjpe(2.5 * target + 1.0, target).abs().max() < 1e-12  # scale + shift: 0
    noisy = target + 0.03 * torch.randn(target.shape, generator=torch.Generator().manual_seed(5), dtype=F64)
    assert torch.allclose(n_mpjpe(3.0 * noisy, target), n_mpjpe(noisy, target), atol=1e-12)
    # hand formula on root-relative poses: s = <p, g> / <p, p>
    p = (noisy - noisy[..., :1, :]).numpy()
    q = (target - target[..., :1, :]).numpy()
    s = (p * q).sum((1, 2)) / (p * p).sum((1, 2))
    ref = np.linalg.norm(s[:, None, None] * p - q, axis=-1).mean(-1)
    assert np.allclose(n_mpjpe(noisy, target).numpy(), ref, atol=1e-12)


def test_mpjve_hand_value():
    T = 5
    target = _poses(seed=6).expand(T, J, 3).clone()
    target = target + torch.arange(T, dtype=F64)[:, None, None] * 0.1  # whole body walks
    pred = target + torch.tensor([0.2, 0.0, 0.0], dtype=F64)  # constant offset: no velocity error
    assert mpjve(pred, target).abs().max() < 1e-12
    pred = target.clone()
    pred[2, JOINT_INDEX["head_top"]] += torch.tensor([0.0, 0.034, 0.0], dtype=F64)  # a one-frame glitch
    out = mpjve(pred, target)
    assert out.shape == (T - 1,)
    assert torch.allclose(out, torch.tensor([0.0, 0.034 / J, 0.034 / J, 0.0], dtype=F64), atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 frames"):
        mpjve(pred[:1], target[:1])


def test_pck3d_and_auc_hand_values():
    target = torch.zeros(J, 3, dtype=F64)
    pred = target.clone()
    # non-root joints at errors 0.01, 0.02, ..., 0.16 m; the root (error 0 after alignment) is exact
    pred[1:, 0] = torch.arange(1, J, dtype=F64) * 0.01
    assert pck3d(pred, target).item() == pytest.approx(16 / J)  # 0 .. 0.15 inclusive: 16 joints
    assert pck3d(pred, target, threshold=0.05).item() == pytest.approx(6 / J)
    # all joints at the same error e: AUC = share of the 31 thresholds (0, 5, ..., 150 mm) >= e
    same = torch.zeros(J, 3, dtype=F64)
    same[1:, 1] = 0.0725
    # root joint error is 0 -> always counted; others count for thresholds 75..150 mm (16 of 31)
    assert auc_pck3d(same, target).item() == pytest.approx((1 + 16 * 16 / 31) / J)
    mask = torch.ones(J, dtype=torch.bool)
    mask[ROOT] = False
    assert auc_pck3d(same, target, joint_mask=mask).item() == pytest.approx(16 / 31)
    assert auc_pck3d(target, target).item() == 1.0
    with pytest.raises(ValueError, match="steps must be >= 2"):
        auc_pck3d(same, target, steps=1)


def test_masks_exclude_nan_joints_and_unmasked_nan_is_loud():
    target = _poses(3, seed=7)
    pred = target + 0.01
    pred[:, JOINT_INDEX["r_wrist"], 0] += 0.1
    target_nan = target.clone()
    target_nan[:, JOINT_INDEX["head_top"]] = float("nan")
    mask = torch.ones(J, dtype=torch.bool)
    mask[JOINT_INDEX["head_top"]] = False
    for metric in (mpjpe, pa_mpjpe, n_mpjpe, pck3d, auc_pck3d):
        out = metric(pred, target_nan, joint_mask=mask)
        assert torch.isfinite(out).all(), metric.__name__
        # equals the metric computed on the 16 remaining joints
        keep = [j for j in range(J) if mask[j]]
        assert torch.allclose(out, metric(pred[:, keep], target[:, keep]), atol=1e-12), metric.__name__
        assert torch.isnan(metric(pred, target_nan)).all(), metric.__name__
    # mpjve with a NaN joint
    seq_p, seq_t = pred[None].expand(2, 3, J, 3), target_nan[None].expand(2, 3, J, 3)
    assert torch.isfinite(mpjve(seq_p, seq_t, joint_mask=mask)).all()
    # one bad pose in a batch spoils only its own value
    one_bad = target.clone()
    one_bad[1, JOINT_INDEX["l_knee"]] = float("nan")
    for metric in (mpjpe, pa_mpjpe, n_mpjpe, pck3d, auc_pck3d):
        assert torch.isnan(metric(pred, one_bad)).tolist() == [False, True, False], metric.__name__
    with pytest.raises(ValueError, match=r"joint_mask: expected last dim 17"):
        mpjpe(pred, target, joint_mask=torch.ones(16, dtype=torch.bool))


@pytest.mark.parametrize("lead", [(), (5,), (2, 3)])
def test_batch_shapes(lead):
    pred, target = _poses(*lead, seed=8), _poses(*lead, seed=9)
    for metric in (mpjpe, pa_mpjpe, n_mpjpe, pck3d, auc_pck3d):
        assert metric(pred, target).shape == lead, metric.__name__
    assert joint_errors(pred, target, "procrustes").shape == lead + (J,)
    seq = _poses(*lead, 4, seed=10)
    assert mpjve(seq, seq + 0.1).shape == lead + (3,)
    with pytest.raises(ValueError, match="alignment must be one of"):
        joint_errors(pred, target, "rigid")
    with pytest.raises(ValueError, match=r"pred: expected shape \(\*, J, 3\)"):
        mpjpe(pred[..., :2], target)


def test_framewise_and_actionwise_means():
    vals = torch.tensor([1.0, 2.0, 3.0, 10.0])
    assert framewise_mean(vals) == 4.0
    mean, per = actionwise_mean(vals, ["walk", "walk", "walk", "sit"])
    assert per == {"sit": 10.0, "walk": 2.0}
    assert mean == 6.0  # (2 + 10) / 2: each action weighs the same, unlike framewise (4.0)
    with pytest.raises(ValueError, match="4 values but 3 action labels"):
        actionwise_mean(vals, ["a", "b", "c"])
    with pytest.raises(ValueError, match="1 NaN values"):
        framewise_mean(torch.tensor([1.0, math.nan]))


def test_real_mocap_invariances(real_mocap_npz):
    """Real poses (mm -> m): P-MPJPE of a similar copy is 0 on real skeletons, and the 13
    reliable joints of the dataset work as a joint mask."""
    data = np.load(real_mocap_npz, allow_pickle=False)
    poses = torch.tensor(data["positions"][::500], dtype=F64) / 1000.0  # (N, 17, 3)
    reliable = torch.tensor(data["reliable_joint_mask"])
    assert poses.shape[1:] == (17, 3) and int(reliable.sum()) == 13
    g = torch.Generator().manual_seed(11)
    n = poses.shape[0]
    pred = apply_similarity(poses, torch.full((n,), 1.1, dtype=F64), random_rotation(n, g),
                            torch.randn(n, 3, generator=g, dtype=F64))
    assert pa_mpjpe(pred, poses).abs().max() < 1e-9
    assert pa_mpjpe(pred, poses, joint_mask=reliable).abs().max() < 1e-9
    assert (mpjpe(pred, poses) > 0.01).all()


def test_float32_inputs_and_gradients():
    target = _poses(4, seed=12)
    g = torch.Generator().manual_seed(13)
    pred = apply_similarity(target, torch.full((4,), 0.9, dtype=F64), random_rotation(4, g),
                            torch.randn(4, 3, generator=g, dtype=F64))
    out32 = pa_mpjpe(pred.float(), target.float())
    assert out32.dtype == torch.float32 and out32.abs().max() < 1e-5  # 10 micrometres
    p = (target[:2] + 0.02 * torch.randn(target[:2].shape, generator=g, dtype=F64)).requires_grad_()
    for metric in (mpjpe, pa_mpjpe, n_mpjpe):
        assert torch.autograd.gradcheck(lambda x: metric(x, target[:2]), (p,), fast_mode=True), metric.__name__
