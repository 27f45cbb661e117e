"""3D pose metrics with one signature: ``metric(pred, target, joint_mask=None) -> (*)``.

Inputs are poses ``(*, J, 3)`` in H36M-17 order (:mod:`pose3d.skeleton`), in metres; outputs
are in the input units (callers multiply by 1000 and name keys ``*_mm``). Every metric is a
per-pose value; average with :func:`framewise_mean` / :func:`actionwise_mean`.

``joint_mask`` (J,) or (*, J), bool: joints that count. Masked-out joints may hold NaN (missing
detections, head_top absent in a dataset); they are excluded and never propagate. NaN in an
*unmasked* joint propagates to the result on purpose (a loud failure). The root (pelvis) is
used for alignment in protocols 1, N, PCK and MPJVE and must be valid in both poses.

Protocols (names as in the Human3.6M literature):
* MPJPE, protocol 1: root-aligned mean per-joint position error (Ionescu et al. PAMI 2014;
  Martinez et al. ICCV 2017; Pavllo et al. CVPR 2019).
* P-MPJPE, protocol 2: error after similarity Procrustes alignment (Umeyama 1991).
* N-MPJPE: error after root alignment and an optimal scale (Rhodin et al. CVPR 2018).
* MPJVE: velocity error of root-aligned sequences (Pavllo et al. CVPR 2019).
* PCK3D / AUC: fraction of joints within a threshold, and its mean over thresholds
  0 .. 150 mm (Mehta et al., MPI-INF-3DHP, 3DV 2017).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from pose3d.geometry.procrustes import align_similarity
from pose3d.geometry.shapes import check_shape
from pose3d.skeleton import ROOT

__all__ = [
    "joint_errors", "mpjpe", "pa_mpjpe", "n_mpjpe", "mpjve", "pck3d", "auc_pck3d",
    "framewise_mean", "actionwise_mean",
]


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    check_shape(pred, "* J 3", "pred")
    check_shape(target, "* J 3", "target")
    if pred.shape[-2] != target.shape[-2]:
        raise ValueError(f"pred has {pred.shape[-2]} joints, target has {target.shape[-2]}")


def _mask(joint_mask: torch.Tensor | None, err: torch.Tensor) -> torch.Tensor:
    """(J,) or (*, J) mask -> bool (*, J) broadcast like ``err``."""
    if joint_mask is None:
        return torch.ones_like(err, dtype=torch.bool)
    m = torch.as_tensor(joint_mask, device=err.device)
    if m.shape[-1] != err.shape[-1]:
        raise ValueError(f"joint_mask: expected last dim {err.shape[-1]} (joints), got {tuple(m.shape)}")
    return m.to(torch.bool).expand(err.shape)


def _masked_mean(values: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean over the last dim of ``values`` where ``m``; masked NaNs are ignored."""
    v = torch.where(m, values, torch.zeros_like(values))
    return v.sum(-1) / m.sum(-1).to(values.dtype)


def _hits(err: torch.Tensor, threshold) -> torch.Tensor:
    """1.0 where ``err <= threshold``, 0.0 above, NaN where err is NaN (so it stays loud)."""
    hits = (err <= threshold).to(err.dtype)
    return torch.where(torch.isnan(err), err, hits)


def _root_align(x: torch.Tensor, root: int = ROOT) -> torch.Tensor:
    return x - x[..., root:root + 1, :]


def _scale_align(pred: torch.Tensor, target: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``s * pred`` with ``s = <pred, target> / <pred, pred>`` over the unmasked joints."""
    keep = m[..., None]
    p = torch.where(keep, pred, torch.zeros_like(pred))
    g = torch.where(keep, target, torch.zeros_like(target))
    s = (p * g).sum((-2, -1)) / (p * p).sum((-2, -1))
    return s[..., None, None] * pred


def joint_errors(pred: torch.Tensor, target: torch.Tensor, alignment: str = "root",
                 joint_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-joint Euclidean errors (*, J) after an alignment of ``pred`` (*, J, 3) to ``target``.

    ``alignment``: ``"root"`` (protocol 1: subtract each pose's pelvis), ``"procrustes"``
    (protocol 2: similarity fitted on the unmasked joints), ``"scale"`` (root, then the
    least-squares scale of N-MPJPE) or ``"none"`` (absolute positions). Masked joints hold
    whatever the alignment gives (possibly NaN); reduce with the same mask.
    """
    _check(pred, target)
    pred, target = torch.broadcast_tensors(pred, target)
    if alignment == "none":
        pass
    elif alignment == "root":
        pred, target = _root_align(pred), _root_align(target)
    elif alignment == "procrustes":
        m = _mask(joint_mask, pred[..., 0])
        pred = align_similarity(pred, target, m)
    elif alignment == "scale":
        pred, target = _root_align(pred), _root_align(target)
        pred = _scale_align(pred, target, _mask(joint_mask, pred[..., 0]))
    else:
        raise ValueError(f"alignment must be one of root, procrustes, scale, none; got {alignment!r}")
    return (pred - target).norm(dim=-1)


def mpjpe(pred: torch.Tensor, target: torch.Tensor, joint_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MPJPE, protocol 1: ``mean_j |(p_j - p_root) - (g_j - g_root)|`` per pose.

    pred, target (*, J, 3) metres; joint_mask (J,) or (*, J) -> (*) metres.
    """
    err = joint_errors(pred, target, "root")
    return _masked_mean(err, _mask(joint_mask, err))


def pa_mpjpe(pred: torch.Tensor, target: torch.Tensor, joint_mask: torch.Tensor | None = None) -> torch.Tensor:
    """P-MPJPE, protocol 2: ``mean_j |s R p_j + t - g_j|`` with the Umeyama similarity fitted
    on the unmasked joints (no reflections). pred, target (*, J, 3) -> (*)."""
    err = joint_errors(pred, target, "procrustes", joint_mask)
    return _masked_mean(err, _mask(joint_mask, err))


def n_mpjpe(pred: torch.Tensor, target: torch.Tensor, joint_mask: torch.Tensor | None = None) -> torch.Tensor:
    """N-MPJPE (Rhodin et al. 2018): root-align both, scale pred by
    ``s = <p, g> / <p, p>`` (least squares over unmasked joints), then MPJPE. (*, J, 3) -> (*)."""
    err = joint_errors(pred, target, "scale", joint_mask)
    return _masked_mean(err, _mask(joint_mask, err))


def mpjve(pred_seq: torch.Tensor, target_seq: torch.Tensor,
          joint_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MPJVE: ``mean_j |v^p_j - v^g_j|`` with ``v_t = x_{t+1} - x_t`` of root-aligned poses.

    pred_seq, target_seq (*, T, J, 3) metres -> (*, T-1) metres per frame (multiply by fps for
    m/s). joint_mask (J,) or broadcastable to (*, T-1, J); a joint counts where it is unmasked.
    """
    check_shape(pred_seq, "* T J 3", "pred_seq")
    check_shape(target_seq, "* T J 3", "target_seq")
    _check(pred_seq, target_seq)
    if pred_seq.shape[-3] < 2:
        raise ValueError(f"mpjve: need at least 2 frames, got shape {tuple(pred_seq.shape)}")
    vp = torch.diff(_root_align(pred_seq), dim=-3)
    vg = torch.diff(_root_align(target_seq), dim=-3)
    err = (vp - vg).norm(dim=-1)  # (*, T-1, J)
    return _masked_mean(err, _mask(joint_mask, err))


def pck3d(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.150,
          joint_mask: torch.Tensor | None = None) -> torch.Tensor:
    """PCK3D: fraction of unmasked joints whose root-aligned error is <= ``threshold`` (metres;
    150 mm as in MPI-INF-3DHP). pred, target (*, J, 3) -> (*) in [0, 1]."""
    err = joint_errors(pred, target, "root")
    return _masked_mean(_hits(err, threshold), _mask(joint_mask, err))


def auc_pck3d(pred: torch.Tensor, target: torch.Tensor, max_threshold: float = 0.150,
              steps: int = 31, joint_mask: torch.Tensor | None = None) -> torch.Tensor:
    """AUC of PCK3D: mean of :func:`pck3d` over ``steps`` thresholds ``linspace(0, max, steps)``
    (0..150 mm in 5 mm steps, Mehta et al. 2017). pred, target (*, J, 3) -> (*) in [0, 1]."""
    if steps < 2:
        raise ValueError(f"auc_pck3d: steps must be >= 2, got {steps}")
    err = joint_errors(pred, target, "root")
    m = _mask(joint_mask, err)
    thr = torch.linspace(0, max_threshold, steps, dtype=err.dtype, device=err.device)
    hits = _hits(err[..., None, :], thr[:, None])  # (*, steps, J)
    return _masked_mean(hits, m[..., None, :].expand(hits.shape)).mean(-1)


def framewise_mean(values: torch.Tensor) -> float:
    """Mean over all poses/frames (every leading dim) of per-pose values; NaNs raise."""
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.numel() == 0:
        raise ValueError("framewise_mean: no values")
    if torch.isnan(v).any():
        raise ValueError(f"framewise_mean: {int(torch.isnan(v).sum())} NaN values (mask them first)")
    return float(v.mean())


def actionwise_mean(values: torch.Tensor, actions: Sequence[str]) -> tuple[float, dict[str, float]]:
    """Human3.6M-style average: the mean over actions of each action's frame mean.

    values (N,) per-frame metric; actions: N action names (one per frame). Returns
    ``(mean of per-action means, {action: mean})`` with actions in sorted order.
    """
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    names = np.asarray(list(actions), dtype=str)
    if names.shape[0] != v.shape[0]:
        raise ValueError(f"actionwise_mean: {v.shape[0]} values but {names.shape[0]} action labels")
    uniq, inv = np.unique(names, return_inverse=True)
    inv_t = torch.as_tensor(inv, dtype=torch.long)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv_t, v)
    counts = torch.bincount(inv_t, minlength=len(uniq)).to(torch.float64)
    means = sums / counts
    per_action = {str(a): float(m) for a, m in zip(uniq, means)}
    return framewise_mean(means), per_action
