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

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from pose3d.data.contracts import write_predictions
from pose3d.data.crops import (CropStore, apply_affine, invert_affine, normalize_images, read_crop_index,
                               read_crops, resize_crops)
from pose3d.data.io import DataError, file_digest, write_metrics
from pose3d.data.views import GroundTruth
from pose3d.geometry.camera import pixels_to_normalized, undistort_points, world_to_camera
from pose3d.geometry.shapes import check_shape
from pose3d.heatmaps import crop_to_heatmap, decode, gaussian_targets, heatmap_to_crop, weighted_mse
from pose3d.metrics import mpjpe, pa_mpjpe
from pose3d.models.hg3d import HG3D, HG3DConfig, read_depth
from pose3d.runtime import distributed, params
from pose3d.runtime.train import LazyBatches, Trainer, TrainConfig, adam, load_state, save_model
from pose3d.skeleton import BONES, FLIP_PERM, JOINT_NAMES, ROOT, bone_group, bone_lengths

log = logging.getLogger(__name__)

GeoGroups = Literal["side", "limbs", "pairs", "all"]

#: joints whose bone from the pelvis/thorax ("girdle" bones: hips, shoulders) the ``limbs`` groups
#: leave out: short, so a small depth error changes their length ratio most (they dominate the
#: ``side`` loss of a noisy depth prediction; see reports/benchmarks/hg3d.md)
GIRDLE_JOINTS = ("l_hip", "r_hip", "l_shoulder", "r_shoulder")

#: ``pairs`` groups (Zhou et al. 2017, Sec. 3.3: left/right legs, arms, hip bones, shoulder bones),
#: keyed by a bone's child joint without its side prefix
_PAIR_GROUPS = {"hip": "hips", "knee": "legs", "ankle": "legs",
                "shoulder": "shoulders", "elbow": "arms", "wrist": "arms"}


# --------------------------------------------------------------------------- bone groups
def bone_groups(kind: GeoGroups = "side") -> dict[str, list[int]]:
    """Bone index groups (into ``skeleton.BONES``) whose length ratios should agree.

    ``side``: left / right / torso from :func:`pose3d.skeleton.bone_group` (by joint name).
    ``limbs``: the same without the girdle bones (pelvis -> hips, thorax -> shoulders).
    ``pairs``: the paper's four groups, each a left/right pair of limbs: legs (both thighs and
    shins), arms (both upper arms and forearms), hip bones, shoulder bones; the unpaired spine,
    neck and head bones are left out. Each group compares a bone with its mirror image and
    with the other segment of the same limb, never an arm with a leg.
    ``all``: one group with every bone (the whole skeleton keeps canonical proportions).
    """
    if kind == "all":
        return {"all": list(range(len(BONES)))}
    if kind == "pairs":
        pairs: dict[str, list[int]] = {}
        for e, b in enumerate(BONES):
            name = JOINT_NAMES[b[1]]
            if name[:2] in ("l_", "r_") and name[2:] in _PAIR_GROUPS:
                pairs.setdefault(_PAIR_GROUPS[name[2:]], []).append(e)
        return pairs
    if kind not in ("side", "limbs"):
        raise ValueError(f"bone_groups: kind = {kind!r}, expected 'side', 'limbs', 'pairs' or 'all'")
    groups: dict[str, list[int]] = {}
    for e, b in enumerate(BONES):
        if kind == "limbs" and JOINT_NAMES[b[1]] in GIRDLE_JOINTS:
            continue
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

    The ratios are first divided by their mean over the grouped bones, so the loss is invariant to the
    pose's overall scale (the back-projected shape has an arbitrary scale): it is zero for any
    skeleton with canonical proportions at any scale, positive once proportions within a group
    differ from the canonical ones.

    pose (*, J, 3), ref_lengths (E,) -> (*,).
    """
    check_shape(pose, "* J 3", "pose")
    groups = bone_groups(groups) if isinstance(groups, str) else groups
    ref = ref_lengths.to(pose)
    r = bone_lengths(pose) / ref  # (*, E)
    used = sorted(set().union(*groups.values()))
    r = r / r[..., used].mean(-1, keepdim=True).clamp_min(1e-8)
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


# =====================================================================================
# Data: crops + mocap + cameras -> in-memory training/evaluation arrays
# =====================================================================================
@dataclass
class HG3DData:
    """Crops with everything the three phases need, at the network's input size.

    images (N, S, S, 3) uint8 RGB (an array, or a :class:`~pose3d.data.crops.CropStore` reading
    crops.h5 on demand); keys (DataFrame: subject, action, camera, frame, split);
    joints_hm (N, J, 2) GT 2D in heatmap coords; rays (N, J, 3) undistorted normalised rays of
    the GT 2D, (x, y, 1); k (N,) depth unit; depth (N, J) GT depth (module unit, heatmap px);
    x_cam (N, J, 3) GT camera-frame joints (m); crop_to_image (N, 2, 3) input px -> image px;
    K (N, 3, 3), dist (N, 5).
    """
    images: np.ndarray
    keys: pd.DataFrame
    joints_hm: np.ndarray
    rays: np.ndarray
    k: np.ndarray
    depth: np.ndarray
    x_cam: np.ndarray
    crop_to_image: np.ndarray
    K: np.ndarray
    dist: np.ndarray
    input_size: int
    stride: int

    def __len__(self) -> int:
        return len(self.images)

    def rows(self, mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(np.asarray(mask))


def _resize_affine(size_from: int, size_to: int) -> np.ndarray:
    """input px (size_to) -> crop px (size_from), pixel centres at integers."""
    r = size_from / size_to
    return np.array([[r, 0.0, 0.5 * r - 0.5], [0.0, r, 0.5 * r - 0.5]])


def load_data(crops_h5, crops_parquet, mocap_h5, cameras_json, input_size: int, stride: int,
              subjects: list[str] | None = None, frame_stride: int = 1,
              include_test: bool = True, stream: bool = True) -> HG3DData:
    """Read the extract stage's crops and the studio's mocap/cameras for ``subjects`` (None =
    all; with ``include_test`` every test-split crop too), keeping every ``frame_stride``-th
    training crop; resize crops to ``input_size``. ``stream``: ``images`` reads them from
    crops.h5 when a batch asks (:class:`~pose3d.data.crops.CropStore`), else they are read
    into memory here (same pixels)."""
    index = read_crop_index(crops_parquet)
    test = (index.keys["split"] == "test").to_numpy()
    keep = np.ones(len(index), bool)
    if subjects is not None:
        keep &= index.keys["subject"].isin(list(subjects)).to_numpy()
    keep &= ((np.arange(len(index)) % max(frame_stride, 1)) == 0) | test
    if include_test:
        keep |= test
    index = index.select(keep)
    if len(index) == 0:
        raise DataError(f"{crops_parquet}: no crops for subjects {subjects}")
    S = index.crop_size
    rows = index.keys["index"].to_numpy()
    if stream:
        crops = CropStore(crops_h5, rows, input_size)
    else:
        crops = resize_crops(read_crops(crops_h5, rows), input_size)
    M = _resize_affine(S, input_size)
    A = index.crop_to_image.astype(np.float64)  # (N, 2, 3) crop px -> image px
    c2i = np.concatenate([A[..., :2] @ M[:, :2], A[..., :2] @ M[:, 2:] + A[..., 2:]], -1)
    joints_in = apply_affine(invert_affine(c2i), index.gt_2d.astype(np.float64))
    joints_hm = crop_to_heatmap(torch.from_numpy(joints_in), stride).numpy()

    keys = index.keys
    gt = GroundTruth.load(mocap_h5, cameras_json, subjects=sorted(set(keys["subject"])))
    x_world = gt.world(keys, crops_parquet)
    cams = gt.camera_arrays(keys["subject"], keys["camera"])
    K, R, t, dist = cams["K"], cams["R"], cams["t"], cams["dist"]
    x_cam = world_to_camera(torch.from_numpy(x_world), torch.from_numpy(R), torch.from_numpy(t))
    Kt, dt = torch.from_numpy(K), torch.from_numpy(dist)
    k = depth_unit(torch.from_numpy(c2i), Kt, stride)
    xy = undistort_points(torch.from_numpy(index.gt_2d.astype(np.float64)), Kt, dt, normalized=True)
    rays = torch.cat([xy, torch.ones_like(xy[..., :1])], -1)
    return HG3DData(
        images=crops, keys=keys[["subject", "action", "camera", "frame", "split"]].reset_index(drop=True),
        joints_hm=joints_hm.astype(np.float32), rays=rays.numpy().astype(np.float32),
        k=k.numpy().astype(np.float32), depth=depth_target(x_cam, k).numpy().astype(np.float32),
        x_cam=x_cam.numpy().astype(np.float32), crop_to_image=c2i.astype(np.float32),
        K=K.astype(np.float32), dist=dist.astype(np.float32), input_size=input_size, stride=stride)


# =====================================================================================
# Training: three phases through the one training loop
# =====================================================================================
PHASES = ("2d", "3d", "joint")


@dataclass(frozen=True)
class PhaseSchedule:
    """Epochs per phase: (1) ``2d``: heatmaps on every training image; (2) ``3d``: heatmaps +
    depth regression on the 3D-labelled images; (3) ``joint``: all images, depth regression on
    3D-labelled ones and the geometric constraint on 2D-only ones (Zhou et al. 2017, Sec. 3.3)."""

    epochs_2d: int
    epochs_3d: int
    epochs_joint: int

    @property
    def total(self) -> int:
        return self.epochs_2d + self.epochs_3d + self.epochs_joint

    def phase(self, epoch: int) -> str:
        if epoch < self.epochs_2d:
            return "2d"
        return "3d" if epoch < self.epochs_2d + self.epochs_3d else "joint"

    def last_epochs(self) -> dict[int, str]:
        """{last epoch index of each non-empty phase: phase name}."""
        out, end = {}, 0
        for name, n in zip(PHASES, (self.epochs_2d, self.epochs_3d, self.epochs_joint)):
            end += n
            if n > 0:
                out[end - 1] = name
        return out


def _flip_batch(batch: dict, W: int) -> dict:
    """Horizontally flip the images (B, 3, S, S) and the labels where ``batch["flip"]`` (B,) is
    set. Joints are swapped left/right by name so index j keeps meaning joint j: the GT heatmap
    coords (B, J, 2) are mirrored and permuted; the per-joint depth (B, J) and rays (B, J, 3) are
    permuted alike (a mirror image has the same depths, but joint j of the flipped image is the
    mirror joint of the original; without the permutation the left and right depths swap).
    The rays stay those of the original image: relabelled, they describe the original 3D pose,
    whose bone lengths are those of its mirror image up to the left/right swap, so the
    geometric loss of a flipped sample is that of the unflipped pose (left/right groups swapped).
    """
    mask = batch["flip"]
    perm = list(FLIP_PERM)
    out = dict(batch)
    fj = batch["joints_hm"][:, perm].clone()
    fj[..., 0] = (W - 1) - fj[..., 0]
    out["images"] = torch.where(mask[:, None, None, None], batch["images"].flip(-1), batch["images"])
    out["joints_hm"] = torch.where(mask[:, None, None], fj, batch["joints_hm"])
    for key in ("depth", "rays"):
        if key in batch:
            x = batch[key]
            m = mask.view(-1, *([1] * (x.ndim - 1)))
            out[key] = torch.where(m, x[:, perm], x)
    return out


def hg3d_losses(model, batch: dict, *, sigma: float, depth_weight: float, geo_weight: float,
                ref_lengths: torch.Tensor, groups: GeoGroups, use_depth: bool, use_geo: bool,
                every_parameter: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One step's loss. ``batch``: images (B, 3, S, S), joints_hm (B, J, 2), depth (B, J)
    (module unit; see :func:`_flip_batch` for flipped samples), rays (B, J, 3),
    k (B,), has_3d (B,) bool. Returns (total loss, parts for the curves).

    ``every_parameter`` (DDP): add the depth maps x 0, so that the depth branch takes part in
    every backward pass even where no depth term does (the 2D phase, a rank whose slice has no
    3D label): DistributedDataParallel waits for a gradient of every parameter."""

    heatmaps, depth_maps = model(batch["images"])
    B, J, H, W = heatmaps.shape
    targets, weights = gaussian_targets(batch["joints_hm"], H, W, sigma)
    loss_2d = weighted_mse(heatmaps, targets, weights)
    loss = loss_2d
    if every_parameter:
        loss = loss + 0.0 * depth_maps.float().mean()
    parts = {"loss_2d": loss_2d.detach()}
    if not (use_depth or use_geo):
        return loss, parts
    # depth read at the GT 2D location, in heatmap px (the module outputs depth / W)
    d = read_depth(depth_maps.float(), batch["joints_hm"]) * W  # (B, J)
    d = d - d[:, ROOT:ROOT + 1]
    has_3d = batch["has_3d"]
    if use_depth and bool(has_3d.any()):
        err = ((d[has_3d] - batch["depth"][has_3d]) / W) ** 2
        loss_depth = err.mean()
        loss = loss + depth_weight * loss_depth
        parts["loss_depth"] = loss_depth.detach()
    if use_geo and bool((~has_3d).any()):
        two_d = ~has_3d
        # the pose from GT 2D (rays) and predicted depth, at Z_root = 1 (the loss is scale-free)
        pose = (1.0 + batch["k"][two_d, None] * d[two_d])[..., None] * batch["rays"][two_d]
        loss_geo = geometric_loss(pose, ref_lengths, groups).mean()
        loss = loss + geo_weight * loss_geo
        parts["loss_geo"] = loss_geo.detach()
    return loss, parts


@torch.no_grad()
def predict(model, data: HG3DData, rows: np.ndarray, ref_lengths: torch.Tensor, batch_size: int = 64,
            device: torch.device | str = "cpu", decode_method: str = "dark", sigma: float = 1.0,
            channels_last: bool = False, details: bool = False):
    """Root-relative camera-frame 3D (n, J, 3) metres for ``rows`` of ``data``: heatmap maximum
    (sub-pixel) -> image px; depth read there; back-projected with the crop's camera; rescaled
    to the canonical skeleton.

    ``details``: return a dict instead, with ``pose`` (the above), ``hm_xy`` (n, J, 2) the
    decoded heatmap coords and ``pose_gt2d`` (n, J, 3): the GT 2D back-projected with the depth
    read at the GT 2D (the depth branch's own error, free of the 2D error; a diagnostic).
    """
    model.eval()
    out: dict[str, list[np.ndarray]] = {"pose": [], "hm_xy": [], "pose_gt2d": []}

    def lift(hm_xy, depth_maps, r, W):
        d = read_depth(depth_maps.float(), hm_xy.to(depth_maps.device)) * W
        d = (d - d[:, ROOT:ROOT + 1]).double().cpu()
        uv = apply_affine(torch.from_numpy(data.crop_to_image[r]).double(),
                          heatmap_to_crop(hm_xy.double().cpu(), data.stride))
        return reconstruct(uv, d, torch.from_numpy(data.k[r]).double(),
                           torch.from_numpy(data.K[r]).double(), torch.from_numpy(data.dist[r]).double(),
                           ref_lengths.double()).float().numpy()

    for i in range(0, len(rows), batch_size):
        r = rows[i:i + batch_size]
        x = normalize_images(data.images[r]).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        heatmaps, depth_maps = model(x)
        W = heatmaps.shape[-1]
        hm_xy, _ = decode(heatmaps.float(), decode_method, sigma)
        out["pose"].append(lift(hm_xy, depth_maps, r, W))
        if details:
            out["hm_xy"].append(hm_xy.float().cpu().numpy())
            out["pose_gt2d"].append(lift(torch.from_numpy(data.joints_hm[r]), depth_maps, r, W))
    J = NUM_JOINTS_OUT
    empty = {"pose": (0, J, 3), "hm_xy": (0, J, 2), "pose_gt2d": (0, J, 3)}
    res = {k: np.concatenate(v) if v else np.zeros(empty[k], np.float32) for k, v in out.items()}
    return res if details else res["pose"]


NUM_JOINTS_OUT = len(JOINT_NAMES)


def score(pred: np.ndarray, data: HG3DData, rows: np.ndarray) -> dict[str, float]:
    """MPJPE (protocol 1) and P-MPJPE (protocol 2) in mm against the GT camera-frame joints."""

    p = torch.from_numpy(pred).double()
    g = torch.from_numpy(data.x_cam[rows]).double()
    return {"mpjpe_mm": 1000 * float(mpjpe(p, g).mean()), "pa_mpjpe_mm": 1000 * float(pa_mpjpe(p, g).mean())}


def diagnostics(res: dict, data: HG3DData, rows: np.ndarray) -> dict[str, float]:
    """Where a 3D error comes from (``predict(..., details=True)`` output): ``err2d_px`` the
    mean 2D error (network input px); ``gt2d_mpjpe_mm`` / ``gt2d_pa_mpjpe_mm`` the 3D error of
    the GT 2D with the predicted depth (the depth branch alone)."""
    err2d = float(np.linalg.norm(res["hm_xy"] - data.joints_hm[rows], axis=-1).mean()) * data.stride
    g = score(res["pose_gt2d"], data, rows)
    return {"err2d_px": err2d, "gt2d_mpjpe_mm": g["mpjpe_mm"], "gt2d_pa_mpjpe_mm": g["pa_mpjpe_mm"]}


@dataclass(frozen=True)
class HG3DTrainOptions:
    """How :func:`train` runs; filled from params ``hg3d`` by :func:`configs_from_params` (the
    defaults live there, once)."""

    subjects_3d: tuple[str, ...]
    subjects_2d_only: tuple[str, ...]
    schedule: PhaseSchedule
    batch_size: int
    lr: float
    sigma: float
    depth_weight: float
    geo_weight: float
    geo_groups: GeoGroups
    samples_per_epoch: int  # 0 = the whole phase pool every epoch
    flip: bool
    eval_max: int = 256  # evenly spaced test crops scored after each epoch (per-phase metrics)


def train(model, data: HG3DData, opts: HG3DTrainOptions, train_config, run=None, fingerprint: str = ""
          ) -> tuple[torch.Tensor, list[dict], dict[str, dict[str, float]]]:
    """Train ``model`` (an :class:`pose3d.models.hg3d.HG3D`) through the three phases with one
    :class:`pose3d.runtime.train.Trainer` whose step function switches by epoch (one checkpoint file,
    so a run resumes inside any phase). ``data`` holds the training and test crops.

    Returns (canonical bone lengths (E,) m, per-epoch history, per-phase test metrics
    ``{phase: {mpjpe_mm, pa_mpjpe_mm}}`` on ``opts.eval_max`` evenly spaced test crops).
    """
    keys = data.keys
    train_mask = (keys["split"] == "train").to_numpy()
    is3d = keys["subject"].isin(list(opts.subjects_3d)).to_numpy() & train_mask
    is2d = keys["subject"].isin(list(opts.subjects_2d_only)).to_numpy() & train_mask
    if not is3d.any():
        raise ValueError(f"hg3d.subjects_3d = {list(opts.subjects_3d)}: no training crops "
                         f"(training subjects: {sorted(set(keys['subject'][train_mask]))})")
    test_rows = np.flatnonzero((keys["split"] == "test").to_numpy())
    if len(test_rows) == 0:
        raise ValueError("hg3d: no test crops to evaluate on")
    ref_lengths = canonical_bone_lengths(data.x_cam[is3d]).float()
    pools = {"2d": np.flatnonzero(is3d | is2d), "3d": np.flatnonzero(is3d),
             "joint": np.flatnonzero(is3d | is2d)}
    eval_rows = test_rows[:: max(1, len(test_rows) // opts.eval_max)][: opts.eval_max]
    sched = opts.schedule
    phase_ends = sched.last_epochs()

    opt = adam(model.parameters(), lr=opts.lr)
    trainer = Trainer({"model": model}, {"model": opt}, config=train_config, run=run)
    device = trainer.device
    ref_dev = ref_lengths.to(device)
    W = data.input_size // data.stride

    def batches(epoch: int):
        pool = pools[sched.phase(epoch)]
        rng = np.random.default_rng([train_config.seed, epoch])
        order = rng.permutation(pool)
        if opts.samples_per_epoch:
            order = order[: opts.samples_per_epoch]
        flips = rng.random(len(order)) < 0.5 if opts.flip else np.zeros(len(order), bool)
        starts = range(0, len(order) - opts.batch_size + 1, opts.batch_size)  # full batches (BN)

        def make(i, rank=0, world=1):  # a DDP rank reads only its slice's crops
            r = distributed.shard_batch(order[i:i + opts.batch_size], rank, world)
            f = distributed.shard_batch(flips[i:i + opts.batch_size], rank, world)
            return {"images": normalize_images(data.images[r]),
                    "joints_hm": torch.from_numpy(data.joints_hm[r]),
                    "depth": torch.from_numpy(data.depth[r]), "rays": torch.from_numpy(data.rays[r]),
                    "k": torch.from_numpy(data.k[r]), "has_3d": torch.from_numpy(is3d[r]),
                    "flip": torch.from_numpy(f)}

        return LazyBatches(len(starts), lambda i: make(starts[i]),
                           make_shard=lambda i, rank, world: make(starts[i], rank, world))

    def step(ctx, batch, epoch):
        phase = sched.phase(epoch)
        if opts.flip:
            batch = _flip_batch(batch, W)
        with ctx.autocast():
            loss, parts = hg3d_losses(
                ctx.modules["model"], batch, sigma=opts.sigma, depth_weight=opts.depth_weight,
                geo_weight=opts.geo_weight, ref_lengths=ref_dev, groups=opts.geo_groups,
                use_depth=phase in ("3d", "joint"), use_geo=phase == "joint" and opts.geo_weight > 0,
                every_parameter=trainer.distributed)
        ctx.backward_step(loss, "model")
        return {"loss": loss.detach(), **parts}

    phase_metrics: dict[str, dict[str, float]] = {}

    def evaluate(ctx, epoch):
        # a fixed subset of the test crops after every epoch (CPU budget: the whole test set is
        # predicted once, after training, by the caller)
        res = predict(model, data, eval_rows, ref_lengths, batch_size=64, device=device,
                      sigma=opts.sigma, channels_last=train_config.channels_last, details=True)
        m = {**score(res["pose"], data, eval_rows), **diagnostics(res, data, eval_rows)}
        if epoch in phase_ends:
            phase_metrics[phase_ends[epoch]] = m
        return {f"test_{k}": v for k, v in m.items()}

    history = trainer.fit(step, batches, evaluate=evaluate, fingerprint=fingerprint)
    # a resumed run skips the evaluations of finished phases: recover them from the history
    for epoch, name in phase_ends.items():
        if name not in phase_metrics and epoch < len(history):
            row = history[epoch]
            phase_metrics[name] = {k[len("test_"):]: v for k, v in row.items() if k.startswith("test_")}
    return ref_lengths, history, phase_metrics


# =====================================================================================
# The whole stage: load, train the three phases, predict the test subjects, save
# =====================================================================================
def configs_from_params(p) -> tuple[HG3DConfig, HG3DTrainOptions]:
    """params section ``hg3d`` -> (model config, training options): the one adapter the stage
    and the benchmark share."""

    cfg = HG3DConfig(resnet_depth=p.resnet_depth, depth_channels=p.depth_channels,
                     depth_blocks=p.depth_blocks)
    opts = HG3DTrainOptions(
        subjects_3d=tuple(p.subjects_3d), subjects_2d_only=tuple(p.subjects_2d_only),
        schedule=PhaseSchedule(p.epochs_2d, p.epochs_3d, p.epochs_joint), batch_size=p.batch_size,
        lr=p.lr, sigma=p.sigma, depth_weight=p.depth_weight, geo_weight=p.geo_weight,
        geo_groups=p.geo_groups, samples_per_epoch=p.samples_per_epoch, flip=p.flip)
    return cfg, opts


def run_hg3d(*, crops_h5, crops_parquet, mocap_h5, cameras_json, model_config, opts: HG3DTrainOptions,
             input_size: int, frame_stride: int = 1, pose2d_dir=None, device: str = "auto",
             cpu_precision: str = "auto", channels_last: bool = True, seed: int = 0,
             model_dir=None, predictions=None, checkpoint=None, curves_csv=None, run=None,
             fingerprint: str = "", progress: bool = True, test_stride: int = 1) -> dict:
    """Train and evaluate one hg3d model; write whichever outputs are given a path.

    Returns the metrics: per phase ``{phase: {mpjpe_mm, pa_mpjpe_mm}}`` on a subset of the test
    crops, the final ``mpjpe_mm`` / ``pa_mpjpe_mm`` on every ``test_stride``-th test crop (the
    stage: all of them), crop counts and seconds (load, train, predict, total).
    """
    t0 = time.time()
    init_digest = None
    if pose2d_dir is not None:
        pose2d_dir = Path(pose2d_dir)
        cfg2d = json.loads((pose2d_dir / "config.json").read_text())
        # the head's width and depth are the 2D model's (params pose2d), not hg3d's own keys
        model_config = dataclasses.replace(model_config, **{
            k: int(cfg2d[k]) for k in ("deconv_channels", "num_deconv") if k in cfg2d})
        mine = model_config.pose_config().to_dict()
        clash = {k: (cfg2d.get(k), v) for k, v in mine.items() if k in cfg2d and cfg2d[k] != v}
        if clash:
            raise DataError(f"{pose2d_dir}/config.json: the 2D model differs from hg3d's 2D module "
                             f"in {clash} (set hg3d.resnet_depth to match, or hg3d.init_from_2d: false)")
    torch.manual_seed(seed)
    model = HG3D(model_config)
    if pose2d_dir is not None:
        model.load_pose2d(load_state(pose2d_dir / "model.pt"))
        init_digest = pose2d_dir / "model.pt"
    stride = model_config.stride
    data = load_data(crops_h5, crops_parquet, mocap_h5, cameras_json, input_size, stride,
                     subjects=list(opts.subjects_3d) + list(opts.subjects_2d_only),
                     frame_stride=frame_stride)
    log.info("hg3d: %d crops loaded in %.1f s", len(data), time.time() - t0)
    fp = f"{fingerprint}:{file_digest(crops_h5, crops_parquet, mocap_h5, cameras_json, init_digest)}"
    t_load = time.time() - t0
    tc = TrainConfig(epochs=opts.schedule.total, device=device, cpu_precision=cpu_precision,
                     channels_last=channels_last, seed=seed,
                     checkpoint=Path(checkpoint) if checkpoint else None,
                     curves_csv=Path(curves_csv) if curves_csv else None, desc="train_hg3d",
                     progress=progress)
    t1 = time.time()
    ref_lengths, history, phases = train(model, data, opts, tc, run=run, fingerprint=fp)
    t_train = time.time() - t1
    dev = next(model.parameters()).device
    test_rows = np.flatnonzero((data.keys["split"] == "test").to_numpy())[:: max(1, test_stride)]
    t1 = time.time()
    res = predict(model, data, test_rows, ref_lengths, device=dev, sigma=opts.sigma,
                  channels_last=channels_last, details=True)
    pred = res["pose"]
    t_predict = time.time() - t1
    final = {**score(pred, data, test_rows), **diagnostics(res, data, test_rows)}
    train_keys = data.keys[data.keys["split"] == "train"]
    metrics = {**final, "phases": phases, "n_eval_phases": int(min(opts.eval_max, len(test_rows))),
               "n_train_3d": int(train_keys["subject"].isin(list(opts.subjects_3d)).sum()),
               "n_train_2d_only": int(train_keys["subject"].isin(list(opts.subjects_2d_only)).sum()),
               "n_test": int(len(test_rows)), "seconds": round(time.time() - t0, 1),
               "seconds_load": round(t_load, 1), "seconds_train": round(t_train, 1),
               "seconds_predict": round(t_predict, 1)}
    if predictions is not None:
        write_predictions(predictions, data.keys.iloc[test_rows], pred, method="hg3d",
                          coord_frame="camera", root_relative=True)
    if model_dir is not None:
        model.to("cpu")
        save_model(model_dir, model, {**model_config.to_dict(), "input_size": input_size,
                                      "stride": stride, "sigma": opts.sigma,
                                      "canonical_bone_lengths_m": ref_lengths.tolist(),
                                      "depth_unit": "heatmap px at the root depth / heatmap width"})
    return metrics


def run_stage(s, paths, tracker) -> str:
    """``train_hg3d``: :func:`run_hg3d` with the stage's files and the hg3d section."""
    p, base = s.params, s.base
    if p.init_from_2d and not paths.pose2d:
        raise DataError("hg3d.init_from_2d is true but no --pose2d folder was given")
    model_config, opts = configs_from_params(p)
    metrics = run_hg3d(
        crops_h5=paths.crops_h5, crops_parquet=paths.crops_index, mocap_h5=paths.mocap,
        cameras_json=paths.cameras, model_config=model_config, opts=opts, input_size=p.input_size,
        frame_stride=p.frame_stride, pose2d_dir=paths.pose2d if p.init_from_2d else None, device=base.device,
        cpu_precision=base.cpu_precision, channels_last=p.channels_last, seed=base.seed,
        model_dir=paths.model_dir, predictions=paths.predictions, checkpoint=paths.checkpoint,
        curves_csv=paths.curves, run=tracker, fingerprint=params.fingerprint(p, base))
    tracker.log_metrics({**{k: metrics[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "err2d_px", "gt2d_mpjpe_mm",
                                                    "gt2d_pa_mpjpe_mm", "seconds")},
                         **{f"{ph}.{k}": v for ph, m in metrics["phases"].items() for k, v in m.items()}})
    # the DVC metrics file: the depth branch's own numbers (MPJPE/P-MPJPE of the predictions are
    # the evaluate stage's; the phases stay in the MLflow run)
    write_metrics(paths.metrics, paths.timings, metrics, keys=("err2d_px", "gt2d_mpjpe_mm", "gt2d_pa_mpjpe_mm"))
    return (f"MPJPE {metrics['mpjpe_mm']:.1f} mm, P-MPJPE {metrics['pa_mpjpe_mm']:.1f} mm on {metrics['n_test']} "
            f"test crops (2D error {metrics['err2d_px']:.1f} px; GT 2D + predicted depth: "
            f"{metrics['gt2d_mpjpe_mm']:.1f} / {metrics['gt2d_pa_mpjpe_mm']:.1f} mm); {metrics['seconds']:.0f} s "
            f"(load {metrics['seconds_load']:.0f}, train {metrics['seconds_train']:.0f}, "
            f"predict {metrics['seconds_predict']:.0f})")
