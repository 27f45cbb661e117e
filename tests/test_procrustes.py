"""Similarity Procrustes: exact recovery, no reflections, masks, an independent numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pose3d.geometry import align_similarity, apply_similarity, random_rotation, similarity_procrustes

F64 = torch.float64


def _numpy_umeyama(X: np.ndarray, Y: np.ndarray):
    """Independent reference (Umeyama 1991) for one pair (J, 3), written with numpy only.

    Uses the other common formulation: the rotation from the SVD of X0^T Y0 (Horn/Kabsch form,
    rotation applied on the right), scale = trace / |X0|^2, in row-vector convention.
    """
    mx, my = X.mean(0), Y.mean(0)
    X0, Y0 = X - mx, Y - my
    U, S, Vt = np.linalg.svd(X0.T @ Y0)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    Rrow = U @ D @ Vt  # X0 @ Rrow ~ Y0 / s
    s = np.trace(np.diag(S) @ D) / (X0**2).sum()
    aligned = s * X0 @ Rrow + my
    return s, Rrow.T, aligned


def _similar_copy(X, gen):
    lead = X.shape[:-2]
    R = random_rotation(int(np.prod(lead)) if lead else 1, gen).reshape(lead + (3, 3))
    s = torch.rand(lead, generator=gen, dtype=F64) * 2 + 0.5
    t = torch.randn(lead + (3,), generator=gen, dtype=F64)
    return s, R, t, apply_similarity(X, s, R, t)


def test_exact_recovery_of_a_similarity():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(8, 17, 3, generator=g, dtype=F64)
    s, R, t, Y = _similar_copy(X, g)
    s2, R2, t2 = similarity_procrustes(X, Y)
    assert torch.allclose(s2, s, atol=1e-12)
    assert torch.allclose(R2, R, atol=1e-12)
    assert torch.allclose(t2, t, atol=1e-12)
    assert torch.allclose(align_similarity(X, Y), Y, atol=1e-12)


def test_matches_independent_numpy_reference_on_noisy_poses():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(20, 17, 3, generator=g, dtype=F64)
    _, _, _, Y = _similar_copy(X, g)
    Y = Y + 0.1 * torch.randn(Y.shape, generator=g, dtype=F64)
    s, R, _ = similarity_procrustes(X, Y)
    aligned = align_similarity(X, Y).numpy()
    for i in range(20):
        s_ref, R_ref, al_ref = _numpy_umeyama(X[i].numpy(), Y[i].numpy())
        assert s[i].item() == pytest.approx(s_ref, abs=1e-12)
        assert np.allclose(R[i].numpy(), R_ref, atol=1e-10)
        assert np.allclose(aligned[i], al_ref, atol=1e-10)


def test_never_a_reflection_for_a_mirrored_target():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(6, 17, 3, generator=g, dtype=F64)
    Y = X * torch.tensor([-1.0, 1.0, 1.0], dtype=F64)  # a mirror image
    s, R, _ = similarity_procrustes(X, Y)
    assert torch.allclose(torch.linalg.det(R), torch.ones(6, dtype=F64), atol=1e-12)
    assert (s > 0).all()
    # the best proper rotation cannot reach a mirrored, non-planar target
    assert ((align_similarity(X, Y) - Y).norm(dim=-1).mean(-1) > 0.1).all()
    # and an unconstrained orthogonal fit (det -1) would: the sign fix is what prevents it
    U, _, Vh = torch.linalg.svd((Y - Y.mean(-2, keepdim=True)).mT @ (X - X.mean(-2, keepdim=True)))
    assert (torch.linalg.det(U @ Vh) < 0).all()


def test_mask_ignores_outliers_and_nan():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(4, 17, 3, generator=g, dtype=F64)
    s, R, t, Y = _similar_copy(X, g)
    mask = torch.ones(17, dtype=torch.bool)
    mask[[3, 10]] = False
    Y_bad = Y.clone()
    Y_bad[:, 3] += 5.0  # gross outlier
    Y_bad[:, 10] = float("nan")  # missing joint
    s2, R2, t2 = similarity_procrustes(X, Y_bad, mask)
    assert torch.allclose(s2, s, atol=1e-12) and torch.allclose(R2, R, atol=1e-12)
    assert torch.allclose(t2, t, atol=1e-12)
    # float weights: zero weight = masked; a per-pose (*, J) mask broadcasts too
    w = mask.to(F64).expand(4, 17)
    assert torch.allclose(similarity_procrustes(X, Y_bad, w)[1], R, atol=1e-12)
    # an unmasked NaN spoils only its own batch element (no SVD error for the batch)
    s3, R3, t3 = similarity_procrustes(X, Y_bad)
    assert torch.isnan(s3).all() and torch.isnan(R3).all()
    Y_one = Y.clone()
    Y_one[2, 0] = float("nan")
    s4, R4, _ = similarity_procrustes(X, Y_one)
    assert torch.isnan(s4).tolist() == [False, False, True, False]
    assert torch.allclose(R4[[0, 1, 3]], R[[0, 1, 3]], atol=1e-12)
    with pytest.raises(ValueError, match=r"mask: expected last dim 17 \(joints\), got shape \(16,\)"):
        similarity_procrustes(X, Y, torch.ones(16, dtype=torch.bool))


def test_weighted_fit_equals_repeated_points():
    """Integer weights are equivalent to repeating points (definition of the weighted fit)."""
    g = torch.Generator().manual_seed(4)
    X = torch.randn(10, 3, generator=g, dtype=F64)
    Y = torch.randn(10, 3, generator=g, dtype=F64)
    w = torch.tensor([1, 2, 3, 1, 1, 2, 1, 4, 1, 1])
    rep = torch.repeat_interleave(torch.arange(10), w)
    a = similarity_procrustes(X, Y, w.to(F64))
    b = similarity_procrustes(X[rep], Y[rep])
    for u, v in zip(a, b):
        assert torch.allclose(u, v, atol=1e-12)


@pytest.mark.parametrize("lead", [(), (5,), (2, 3)])
def test_batch_shapes(lead):
    X = torch.randn(lead + (17, 3), dtype=F64)
    Y = torch.randn(lead + (17, 3), dtype=F64)
    s, R, t = similarity_procrustes(X, Y)
    assert s.shape == lead and R.shape == lead + (3, 3) and t.shape == lead + (3,)
    assert align_similarity(X, Y).shape == lead + (17, 3)


def test_gradcheck_similarity_procrustes():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(2, 6, 3, generator=g, dtype=F64, requires_grad=True)
    Y = torch.randn(2, 6, 3, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(similarity_procrustes, (X, Y))
    assert torch.autograd.gradcheck(align_similarity, (X, Y))
