"""Image -> 3D in the pose-hg-3d style (Zhou et al., "Towards 3D Human Pose Estimation in the
Wild: a Weakly-supervised Approach", ICCV 2017): geometry, losses, training phases, prediction.

Depth convention (used by targets, the geometric loss and back-projection alike)
-------------------------------------------------------------------------------
The network predicts, per joint, a root-relative depth ``d_j`` in *heatmap pixels at the root's
depth*: with ``Z_j`` the camera-frame depth (metres), ``f`` the focal length in pixels and ``s``
the image pixels per heatmap pixel of that crop,

    d_j = (Z_j / Z_root - 1) / k,     k = s / f,     i.e.  Z_j = Z_root (1 + k d_j).

Under weak perspective this is exactly the unit of the heatmap's x and y (the seed's choice:
2D and depth share one scale), so the network never needs to know the person's distance. The
network outputs ``d_j / W`` (W = heatmap width) to keep its regression targets near [-1, 1].

Back-projection (the seed's "3D from 2D argmax + depth", made exact with known intrinsics):
undistort the 2D joint (image pixels) to normalised coordinates ``(x_j, y_j)`` and set
``X_j = Z_j (x_j, y_j, 1)``. With the true ``Z_root`` this is the exact inverse of projection
(:func:`backproject`). A monocular image does not give ``Z_root``; it only fixes the overall
scale of the root-relative pose, so :func:`reconstruct` takes ``Z_root = 1`` and rescales the
root-relative shape to the canonical skeleton (training-set mean bone lengths, least squares).
This is the seed's "rescale to millimetres with the Human3.6M skeleton" step; outputs here are
metres (the project's unit).

Glossary: N samples, J joints, E bones, H/W heatmap size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from pose3d.geometry.camera import pixels_to_normalized, undistort_points
from pose3d.geometry.shapes import check_shape
from pose3d.skeleton import BONES, JOINT_NAMES, ROOT, bone_group, bone_lengths

GeoGroups = Literal["side", "all"]


# --------------------------------------------------------------------------- bone groups
def bone_groups(kind: GeoGroups = "side") -> dict[str, list[int]]:
    """Bone index groups (into ``skeleton.BONES``) whose length ratios should agree.

    ``side``: left / right / torso from :func:`pose3d.skeleton.bone_group` (by joint name).
    ``all``: one group with every bone (the whole skeleton keeps canonical proportions).
    """
    if kind == "all":
        return {"all": list(range(len(BONES)))}
    if kind != "side":
        raise ValueError(f"bone_groups: kind = {kind!r}, expected 'side' or 'all'")
    groups: dict[str, list[int]] = {}
    for e, b in enumerate(BONES):
        groups.setdefault(bone_group(b), []).append(e)
    return groups


def canonical_bone_lengths(poses: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Mean bone lengths over poses (N, J, 3) -> (E,) in the poses' unit (the canonical skeleton)."""
    x = torch.as_tensor(np.asarray(poses) if not isinstance(poses, torch.Tensor) else poses,
                        dtype=torch.float64)
    check_shape(x, "* J 3", "poses")
    return bone_lengths(x.reshape(-1, x.shape[-2], 3)).mean(0)


# --------------------------------------------------------------------------- geometric loss
def geometric_loss(pose: torch.Tensor, ref_lengths: torch.Tensor,
                   groups: GeoGroups | dict[str, list[int]] = "side") -> torch.Tensor:
    """Bone-length-ratio constraint (Zhou et al. 2017, Eq. 5), per sample.

    For each group R_i of bones, with ``r_e = l_e / lbar_e`` the ratio of the predicted bone
    length to its canonical length,

        L_geo = sum_i 1/|R_i| sum_{e in R_i} (r_e - rbar_i)^2,    rbar_i = mean_{e in R_i} r_e.

    The ratios are first divided by their mean over all bones, so the loss is invariant to the
    pose's overall scale (the back-projected shape has an arbitrary scale): it is zero for any
    skeleton with canonical proportions at any scale, positive once proportions within a group
    differ from the canonical ones.

    pose (*, J, 3), ref_lengths (E,) -> (*,).
    """
    check_shape(pose, "* J 3", "pose")
    groups = bone_groups(groups) if isinstance(groups, str) else groups
    ref = ref_lengths.to(pose)
    r = bone_lengths(pose) / ref  # (*, E)
    r = r / r.mean(-1, keepdim=True).clamp_min(1e-8)
    loss = torch.zeros(pose.shape[:-2], dtype=pose.dtype, device=pose.device)
    for idx in groups.values():
        g = r[..., idx]
        loss = loss + ((g - g.mean(-1, keepdim=True)) ** 2).mean(-1)
    return loss


# --------------------------------------------------------------------------- depth units
def depth_unit(crop_to_image: torch.Tensor, K: torch.Tensor, stride: float) -> torch.Tensor:
    """``k = s / f`` per sample: s = image px per heatmap px, f = (fx + fy) / 2.

    crop_to_image (*, 2, 3) affine (crop px -> image px), K (*, 3, 3), stride = crop px per
    heatmap px -> (*,).
    """
    A = crop_to_image[..., :2, :2]
    s = torch.sqrt(torch.abs(torch.linalg.det(A))) * stride
    f = 0.5 * (K[..., 0, 0] + K[..., 1, 1])
    return s / f


def depth_target(x_cam: torch.Tensor, k: torch.Tensor, root: int = ROOT) -> torch.Tensor:
    """Camera-frame joints (*, J, 3) metres, k (*,) -> root-relative depth (*, J) (heatmap px)."""
    check_shape(x_cam, "* J 3", "x_cam")
    z = x_cam[..., 2]
    return (z / z[..., root: root + 1] - 1.0) / k[..., None]


def backproject(uv_px: torch.Tensor, depth: torch.Tensor, k: torch.Tensor, K: torch.Tensor,
                dist: torch.Tensor | None = None, z_root: torch.Tensor | float = 1.0) -> torch.Tensor:
    """2D joints + root-relative depth -> camera-frame 3D (H&Z 6.1 inverted along the ray).

    uv_px (*, J, 2) distorted image pixels, depth (*, J) in the module's depth unit, k (*,),
    K (*, 3, 3), dist (*, 5) or None, z_root (*,) metres or a number -> X (*, J, 3) with
    ``X_j = Z_root (1 + k d_j) (x_j, y_j, 1)`` and (x_j, y_j) the undistorted normalised point.
    Exact inverse of ``project_camera`` when ``z_root`` is the true root depth.
    """
    check_shape(uv_px, "* J 2", "uv_px")
    xy = pixels_to_normalized(uv_px, K) if dist is None else \
        undistort_points(uv_px, K, dist, normalized=True)
    ray = torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)  # (*, J, 3)
    z_root = torch.as_tensor(z_root, dtype=uv_px.dtype, device=uv_px.device)
    z = z_root[..., None] * (1.0 + k[..., None] * depth)  # (*, J)
    return z[..., None] * ray


def root_relative(x: torch.Tensor, root: int = ROOT) -> torch.Tensor:
    """(*, J, 3) -> (*, J, 3) minus the root joint."""
    return x - x[..., root: root + 1, :]


def scale_to_skeleton(x_rel: torch.Tensor, ref_lengths: torch.Tensor) -> torch.Tensor:
    """Rescale root-relative poses (*, J, 3) so their bone lengths best match ``ref_lengths``.

    Least squares over bones: s = sum_e l_e L_e / sum_e l_e^2 (closed form, one scalar per pose).
    """
    lengths = bone_lengths(x_rel)
    ref = ref_lengths.to(x_rel)
    s = (lengths * ref).sum(-1) / (lengths ** 2).sum(-1).clamp_min(1e-12)
    return x_rel * s[..., None, None]


def reconstruct(uv_px: torch.Tensor, depth: torch.Tensor, k: torch.Tensor, K: torch.Tensor,
                dist: torch.Tensor | None, ref_lengths: torch.Tensor) -> torch.Tensor:
    """Predicted 2D (image px) + depth -> root-relative camera-frame 3D (*, J, 3) in the unit of
    ``ref_lengths`` (metres): back-project with Z_root = 1, subtract the root, rescale to the
    canonical skeleton."""
    return scale_to_skeleton(root_relative(backproject(uv_px, depth, k, K, dist)), ref_lengths)
