"""Heatmap targets and decoding for 2D pose networks, as batched torch functions.

Coordinates. Pixel centres sit at integers in every image (the OpenCV convention). A heatmap
pixel covers ``stride`` x ``stride`` input pixels, so a crop coordinate ``x`` maps to the
heatmap coordinate ``h = (x + 0.5) / stride - 0.5`` and back with ``x = (h + 0.5) * stride - 0.5``.
With this convention a horizontal flip ``x -> S - 1 - x`` of the crop is exactly the flip
``h -> W - 1 - h`` of the heatmap, so the flip test needs no one-pixel shift.

Targets: unnormalised Gaussians (peak 1) centred at the *unquantised* joint position (Zhang et
al. 2020, DARK, Sec. 3.2 "unbiased coordinate encoding"), with per-joint weights 0 for joints
outside the heatmap.

Decoding: arg-max, then sub-pixel refinement by either the classic quarter offset towards the
higher neighbour (Newell et al. 2016, Xiao et al. 2018) or DARK's second-order Taylor
expansion of the log of the Gaussian-smoothed heatmap at the maximum (Zhang et al. 2020,
Sec. 3.1): ``mu = m - H(m)^-1 g(m)``. Confidence is the heatmap value at the integer maximum.

Glossary: B batch, J joints, H/W heatmap size, S crop size.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from pose3d.geometry.shapes import check_shape
from pose3d.skeleton import FLIP_PERM

Method = Literal["argmax", "quarter", "dark"]


def crop_to_heatmap(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Crop pixel coords (*, 2) -> heatmap coords: ``h = (x + 0.5) / stride - 0.5``."""
    return (x + 0.5) / stride - 0.5


def heatmap_to_crop(h: torch.Tensor, stride: int) -> torch.Tensor:
    """Inverse of :func:`crop_to_heatmap`: ``x = (h + 0.5) * stride - 0.5``."""
    return (h + 0.5) * stride - 0.5


def gaussian_targets(joints_hm: torch.Tensor, height: int, width: int, sigma: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian heatmaps at sub-pixel joint positions.

    joints_hm (*, J, 2) heatmap coords (x, y) -> (targets (*, J, H, W) with
    ``exp(-|p - mu|^2 / (2 sigma^2))``, weights (*, J): 1 where the joint lies in the heatmap).

    >>> t, w = gaussian_targets(torch.tensor([[[3.0, 1.0]]]), 4, 8, 1.0)
    >>> t[0, 0, 1, 3].item(), w.tolist()
    (1.0, [[1.0]])
    """
    check_shape(joints_hm, "* J 2", "joints_hm")
    dt = joints_hm.dtype if joints_hm.is_floating_point() else torch.float32
    xs = torch.arange(width, dtype=dt, device=joints_hm.device)
    ys = torch.arange(height, dtype=dt, device=joints_hm.device)
    mx = joints_hm[..., 0:1]  # (*, J, 1)
    my = joints_hm[..., 1:2]
    gx = torch.exp(-((xs - mx) ** 2) / (2 * sigma**2))  # (*, J, W)
    gy = torch.exp(-((ys - my) ** 2) / (2 * sigma**2))  # (*, J, H)
    targets = gy.unsqueeze(-1) * gx.unsqueeze(-2)  # separable: (*, J, H, W)
    inside = ((mx >= -0.5) & (mx < width - 0.5) & (my >= -0.5) & (my < height - 0.5)).squeeze(-1)
    finite = torch.isfinite(joints_hm).all(-1)
    weights = (inside & finite).to(dt)
    targets = torch.where(finite[..., None, None], targets, torch.zeros((), dtype=dt, device=targets.device))
    return targets, weights


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean over B, J, H, W of ``w_j (pred - target)^2`` (Xiao et al.'s target-weighted MSE, x0.5)."""
    check_shape(pred, "B J H W", "pred")
    diff = (pred.float() - target.float()) ** 2 * weights.float()[..., None, None]
    return 0.5 * diff.mean()


def flip_heatmaps(hm: torch.Tensor) -> torch.Tensor:
    """Mirror heatmaps (*, J, H, W) left-right and swap left/right joints by name. Involution."""
    check_shape(hm, "* J H W", "heatmaps")
    return hm.flip(-1)[..., list(FLIP_PERM), :, :]


def flip_joints(x: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror crop coords (*, J, 2) of an image ``width`` pixels wide (x -> width-1-x) and swap
    left/right joints by name. Involution; matches :func:`flip_heatmaps` for heatmap coords."""
    check_shape(x, "* J 2", "joints")
    y = x[..., list(FLIP_PERM), :].clone()
    y[..., 0] = (width - 1) - y[..., 0]
    return y


def _gaussian_blur(hm: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, H, W) with replicate padding."""
    r = max(1, int(round(3 * sigma)))
    k = torch.arange(-r, r + 1, dtype=hm.dtype, device=hm.device)
    k = torch.exp(-k**2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.pad(hm, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))


def decode(heatmaps: torch.Tensor, method: Method = "dark", sigma: float = 1.0
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Heatmaps (B, J, H, W) -> (coords (B, J, 2) heatmap coords (x, y), scores (B, J)).

    ``method``: "argmax" (integer), "quarter" (+0.25 px towards the higher neighbour) or "dark"
    (Taylor refinement of the log of the heatmap smoothed by a Gaussian of ``sigma``, the
    target's sigma; offsets are clamped to +-1 px).
    """
    check_shape(heatmaps, "B J H W", "heatmaps")
    hm = heatmaps.float()
    B, J, H, W = hm.shape
    flat = hm.reshape(B, J, H * W)
    scores, idx = flat.max(-1)  # (B, J)
    px = (idx % W).long()
    py = (idx // W).long()
    coords = torch.stack([px, py], -1).float()
    if method == "argmax":
        return coords, scores

    def at(m: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
        # m (B, J, H, W): value at (py+dy, px+dx), clamped to the border
        yy = (py + dy).clamp(0, H - 1)
        xx = (px + dx).clamp(0, W - 1)
        return m.reshape(B, J, H * W).gather(-1, (yy * W + xx).unsqueeze(-1)).squeeze(-1)

    interior_x = (px > 0) & (px < W - 1)
    interior_y = (py > 0) & (py < H - 1)
    if method == "quarter":
        dx = torch.sign(at(hm, 0, 1) - at(hm, 0, -1)) * 0.25
        dy = torch.sign(at(hm, 1, 0) - at(hm, -1, 0)) * 0.25
        off = torch.stack([dx * interior_x, dy * interior_y], -1)
        return coords + off, scores
    if method != "dark":
        raise ValueError(f"decode: method = {method!r}: expected argmax, quarter or dark")

    # DARK: blur (the network output is not exactly Gaussian), keep the original peak height,
    # go to log space where a Gaussian is quadratic, then one Newton step from the maximum.
    b = _gaussian_blur(hm.reshape(B * J, 1, H, W), sigma).reshape(B, J, H, W)
    peak_before = flat.amax(-1, keepdim=True)
    peak_after = b.reshape(B, J, -1).amax(-1, keepdim=True).clamp_min(1e-12)
    b = b * (peak_before / peak_after).clamp_min(0).unsqueeze(-1)
    L = torch.log(b.clamp_min(1e-10))
    c = at(L, 0, 0)
    gx = 0.5 * (at(L, 0, 1) - at(L, 0, -1))
    gy = 0.5 * (at(L, 1, 0) - at(L, -1, 0))
    hxx = at(L, 0, 1) - 2 * c + at(L, 0, -1)
    hyy = at(L, 1, 0) - 2 * c + at(L, -1, 0)
    hxy = 0.25 * (at(L, 1, 1) - at(L, 1, -1) - at(L, -1, 1) + at(L, -1, -1))
    det = hxx * hyy - hxy * hxy
    ok = (det > 1e-12) & (hxx < 0) & (hyy < 0) & interior_x & interior_y  # a proper maximum
    safe = torch.where(ok, det, torch.ones_like(det))
    # -H^-1 g with H^-1 = [[hyy, -hxy], [-hxy, hxx]] / det
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(-hxy * gx + hxx * gy) / safe
    off = torch.stack([ox, oy], -1).clamp(-1.0, 1.0) * ok.unsqueeze(-1)
    return coords + off, scores
