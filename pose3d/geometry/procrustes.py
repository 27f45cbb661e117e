"""Similarity Procrustes (Umeyama 1991): batched, reflection-safe, differentiable torch.

Glossary: J joints (points), leading ``*`` dims are batch dims. Units are whatever the inputs
use (metres in pose3d); the scale ``s`` is unitless.
"""

from __future__ import annotations

import torch

from pose3d.geometry.shapes import check_shape

__all__ = ["similarity_procrustes", "align_similarity", "apply_similarity"]


def _weights(mask: torch.Tensor | None, X: torch.Tensor) -> torch.Tensor:
    """Mask (J,) or (*, J), bool or non-negative float -> weights (*, J, 1) in X's dtype."""
    if mask is None:
        return torch.ones(X.shape[:-1] + (1,), dtype=X.dtype, device=X.device)
    w = mask.to(device=X.device, dtype=X.dtype)
    if w.shape[-1] != X.shape[-2]:
        raise ValueError(f"mask: expected last dim {X.shape[-2]} (joints), got shape {tuple(mask.shape)}")
    return w.expand(X.shape[:-1]).unsqueeze(-1)


def similarity_procrustes(X: torch.Tensor, Y: torch.Tensor, mask: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The similarity ``(s, R, t)`` minimising ``sum_j w_j |s R x_j + t - y_j|^2``.

    X, Y (*, J, 3); mask (J,) or (*, J) (bool, or non-negative weights; masked-out joints may
    hold NaN, they are zeroed before use; a NaN in an unmasked joint makes that element's
    (s, R, t) NaN). Returns s (*), R (*, 3, 3) with det R = +1, t (*, 3).

    Umeyama, "Least-squares estimation of transformation parameters between two point patterns",
    PAMI 1991, eqs. 34-42, with weights: ``mu_x = sum w x / sum w``; ``Sigma = sum w (y - mu_y)
    (x - mu_x)^T / sum w = U D V^T``; ``S = diag(1, 1, sign(det U det V))`` (never a reflection);
    ``R = U S V^T``; ``s = tr(D S) / sigma_x^2``; ``t = mu_y - s R mu_x``.
    Differentiable where the singular values of Sigma are distinct (generic poses).
    Needs at least 3 non-collinear weighted points for a unique R.
    """
    check_shape(X, "* J 3", "X")
    check_shape(Y, "* J 3", "Y")
    X, Y = torch.broadcast_tensors(X, Y)
    w = _weights(mask, X)  # (*, J, 1)
    keep = w > 0
    X = torch.where(keep, X, torch.zeros_like(X))  # masked NaNs must not leak through 0 * NaN
    Y = torch.where(keep, Y, torch.zeros_like(Y))
    wsum = w.sum(-2, keepdim=True)  # (*, 1, 1)
    mu_x = (w * X).sum(-2, keepdim=True) / wsum  # (*, 1, 3)
    mu_y = (w * Y).sum(-2, keepdim=True) / wsum
    Xc, Yc = X - mu_x, Y - mu_y
    var_x = (w * Xc * Xc).sum((-2, -1)) / wsum[..., 0, 0]  # (*)
    sigma = (w * Yc).transpose(-1, -2) @ Xc / wsum  # (*, 3, 3)
    # a NaN in an unmasked joint gives NaN (s, R, t) for that element only, not an SVD error
    bad = ~torch.isfinite(sigma).all(-1).all(-1) | ~torch.isfinite(var_x)
    if bool(bad.any()):
        eye = torch.eye(3, dtype=sigma.dtype, device=sigma.device)
        sigma = torch.where(bad[..., None, None], eye, sigma)
    U, D, Vh = torch.linalg.svd(sigma)
    d = torch.sign(torch.linalg.det(U) * torch.linalg.det(Vh)).detach()
    d = torch.where(d == 0, torch.ones_like(d), d)
    S = torch.ones_like(D)
    S = torch.cat([S[..., :2], d[..., None]], dim=-1)  # diag(1, 1, d)
    R = (U * S.unsqueeze(-2)) @ Vh
    s = (D * S).sum(-1) / var_x
    t = mu_y[..., 0, :] - s[..., None] * (R @ mu_x[..., 0, :, None])[..., 0]
    if bool(bad.any()):
        nan = torch.tensor(float("nan"), dtype=s.dtype, device=s.device)
        s = torch.where(bad, nan, s)
        R = torch.where(bad[..., None, None], nan, R)
        t = torch.where(bad[..., None], nan, t)
    return s, R, t


def apply_similarity(X: torch.Tensor, s: torch.Tensor, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``s R x + t`` for points X (*, J, 3) with s (*), R (*, 3, 3), t (*, 3)."""
    check_shape(X, "* J 3", "X")
    return s[..., None, None] * (X @ R.transpose(-1, -2)) + t.unsqueeze(-2)


def align_similarity(X: torch.Tensor, Y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """X (*, J, 3) moved onto Y (*, J, 3) by the best similarity (:func:`similarity_procrustes`).

    All joints of X are transformed (masked ones too); the fit uses only the unmasked ones.
    """
    s, R, t = similarity_procrustes(X, Y, mask)
    return apply_similarity(X, s, R, t)
