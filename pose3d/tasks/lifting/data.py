"""Lifting data: 2D inputs, 3D targets, augmentation, batches.

One :class:`FrameSet` holds every frame of a set of (subject, action, camera) sequences,
concatenated: world and camera-frame 3D (metres), the GT 2D (the camera model's distorted
projection, pixels) and the model input 2D (GT + Gaussian noise, or the detections).

Augmentation works on the 3D and re-projects through the sequence's own camera (K and
distortion), so augmented 2D is exactly what that camera would see:
  * virtual cameras: rotate the pose (a window: all its frames alike) about the world's
    vertical axis through its (centre-frame) root, by a uniform angle in +-virtual_max_deg;
  * flip: mirror in camera space (x -> -x) and swap left/right joints by name.
The input's error w.r.t. the GT projection (noise or detector error) is carried over as a
residual (mirrored with the pose) so augmented inputs keep the input's error statistics;
for ``input_2d = gt`` with noise, fresh noise is drawn per batch instead.

Model inputs are screen-normalised (:func:`pose3d.geometry.camera.normalize_screen`):
x in [-1, 1] across the image width. Targets: root-relative camera-frame 3D, metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pose3d.data.contracts import read_detections
from pose3d.data.io import DataError, read_mocap
from pose3d.data.views import GroundTruth
from pose3d.geometry.camera import normalize_screen, project_camera
from pose3d.geometry.rotations import rotation_about_axis
from pose3d.skeleton import FLIP_PERM, JOINT_INDEX, NUM_JOINTS, ROOT, flip_poses

J = NUM_JOINTS


@dataclass
class FrameSet:
    """All frames of some sequences, concatenated along N. Sequence s spans
    ``starts[s]:starts[s] + lengths[s]``; camera arrays are per sequence."""

    subject: list[str]
    action: list[str]
    camera: list[str]
    starts: np.ndarray       # (S,) int64
    lengths: np.ndarray      # (S,) int64
    pos_world: np.ndarray    # (N, J, 3) float32 metres
    pos_cam: np.ndarray      # (N, J, 3) float32 metres, camera frame
    uv_gt: np.ndarray        # (N, J, 2) float32 pixels (distorted projection)
    uv: np.ndarray           # (N, J, 2) float32 pixels, the model input
    K: np.ndarray            # (S, 3, 3)
    dist: np.ndarray         # (S, 5)
    R: np.ndarray            # (S, 3, 3)
    t: np.ndarray            # (S, 3)
    wh: np.ndarray           # (S, 2) image width, height
    seq_of_frame: np.ndarray  # (N,) int64
    up: np.ndarray           # (3,) world vertical axis (unit)

    @property
    def num_frames(self) -> int:
        return len(self.pos_world)

    def __len__(self) -> int:
        return len(self.subject)

    def select(self, keep) -> "FrameSet":
        """The sub-set of sequences where ``keep[s]`` is true."""
        idx = np.flatnonzero(np.asarray(keep))
        frames = np.concatenate([np.arange(self.starts[s], self.starts[s] + self.lengths[s])
                                 for s in idx]) if len(idx) else np.zeros(0, np.int64)
        lengths = self.lengths[idx]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return FrameSet([self.subject[s] for s in idx], [self.action[s] for s in idx],
                        [self.camera[s] for s in idx], starts, lengths,
                        self.pos_world[frames], self.pos_cam[frames], self.uv_gt[frames],
                        self.uv[frames], self.K[idx], self.dist[idx], self.R[idx], self.t[idx],
                        self.wh[idx], np.repeat(np.arange(len(idx)), lengths), self.up)

    def row_keys(self) -> dict[str, np.ndarray]:
        """subject, action, camera, frame of every frame row (the tables' key columns)."""
        rep = lambda v: np.repeat(np.asarray(v, dtype=object), self.lengths).astype(str)  # noqa: E731
        return {"subject": rep(self.subject), "action": rep(self.action), "camera": rep(self.camera),
                "frame": self.frame_index()}

    def frame_index(self) -> np.ndarray:
        """(N,) frame number of each row inside its mocap sequence."""
        return np.concatenate([np.arange(n) for n in self.lengths]) if len(self) else np.zeros(0, np.int64)


def vertical_axis(pos_world: np.ndarray) -> np.ndarray:
    """The world axis (+-x, y or z) closest to the mean pelvis->thorax direction."""
    d = (pos_world[:, JOINT_INDEX["thorax"]] - pos_world[:, ROOT]).mean(0)
    k = int(np.argmax(np.abs(d)))
    up = np.zeros(3)
    up[k] = np.sign(d[k]) or 1.0
    return up


def build_frames(mocap_path, cameras_path, *, input_2d: str = "gt", noise_px: float = 0.0,
                 detections_path=None, subjects=None, seed: int = 0) -> FrameSet:
    """Every (subject, action, camera) of ``mocap.h5`` x ``cameras.json`` as a FrameSet.

    ``input_2d = "detections"`` takes the 2D from the detections parquet (every frame must be
    there; errors name the missing sequence); ``"gt"`` uses the projection + N(0, noise_px).
    """
    gt = GroundTruth.load(mocap_path, cameras_path, subjects=subjects)
    dets = read_detections(detections_path) if input_2d == "detections" else None
    det_rows = dets.sequences() if dets is not None else None
    rng = np.random.default_rng([seed, 7])
    views, uvs = [], []
    for s in gt.sequences:
        for cname in gt.cameras_of(s.subject):
            v = gt.view(s, cname)
            uvg = v.pixels.astype(np.float32)
            if dets is not None:
                key = (s.subject, s.action, cname)
                if key not in det_rows:
                    raise DataError(f"{detections_path}: no detections for {'/'.join(key)}")
                rows = det_rows[key]
                frames = dets.keys["frame"].to_numpy()[rows]
                if len(frames) != len(uvg) or not np.array_equal(frames, np.arange(len(uvg))):
                    raise DataError(f"{detections_path}: {'/'.join(key)} has {len(frames)} frames, "
                                    f"mocap has {len(uvg)}")
                uv = dets.keypoints[rows].astype(np.float32)
            else:
                uv = uvg + (rng.normal(0, noise_px, uvg.shape).astype(np.float32) if noise_px > 0 else 0)
            views.append(v)
            uvs.append(uv)
    lengths = np.asarray([len(v.world) for v in views], np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    pos_world = np.concatenate([v.world for v in views]).astype(np.float32)
    return FrameSet([v.sequence.subject for v in views], [v.sequence.action for v in views],
                    [v.camera_name for v in views], starts, lengths, pos_world,
                    np.concatenate([v.cam for v in views]).astype(np.float32),
                    np.concatenate([v.pixels for v in views]).astype(np.float32),
                    np.concatenate(uvs).astype(np.float32), np.stack([v.camera.K for v in views]),
                    np.stack([v.camera.dist for v in views]), np.stack([v.camera.R for v in views]),
                    np.stack([v.camera.t for v in views]),
                    np.asarray([(v.camera.width, v.camera.height) for v in views], np.float64),
                    np.repeat(np.arange(len(lengths)), lengths), vertical_axis(pos_world))


def split_of(mocap_path, split: str) -> list[str]:
    """Subjects whose sequences carry ``split`` ("train" | "test") in mocap.h5."""
    return sorted({s.subject for s in read_mocap(mocap_path, split=split)})


# --------------------------------------------------------------------------- screen coords
def to_screen(uv: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    """Pixels (*, J, 2) with per-item image size wh (*, 2) -> screen coords (*, J, 2)."""
    return normalize_screen(uv, wh[..., 0], wh[..., 1])


def flip_pixels(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Mirror 2D about the principal point's vertical line and swap left/right joints:
    (*, J, 2) px, K (*, 3, 3). Exact for an undistorted camera (u' = 2 cx - u)."""
    out = flip_poses(uv)
    out[..., 0] += 2 * K[..., None, 0, 2]
    return out


# --------------------------------------------------------------------------- augmentation
@dataclass(frozen=True)
class Augment:
    virtual_cameras: bool = False
    max_deg: float = 180.0
    flip: bool = False
    resample_noise_px: float = 0.0  # > 0: draw fresh input noise instead of the stored residual


def make_batch(fs: FrameSet, idx: np.ndarray, aug: Augment, rng: np.random.Generator,
               centre: int | None = None) -> dict[str, torch.Tensor]:
    """Gather frames ``idx`` (B, L) (windows; L = 1 for single frames) and augment per window.

    Returns float32 tensors: ``x2d`` (B, L, J, 2) screen coords (model input), ``pose``
    (B, L, J, 3) root-relative camera-frame metres, ``root`` (B, L, 3) camera-frame root,
    ``uv`` (B, L, J, 2) input pixels, ``K`` (B, 3, 3), ``dist`` (B, 5), ``wh`` (B, 2).
    ``centre`` is the window column whose root the rotation axis passes through.
    """
    idx = np.asarray(idx)
    B, L = idx.shape
    seq = fs.seq_of_frame[idx[:, 0]]
    K = torch.from_numpy(fs.K[seq]).double()
    dist = torch.from_numpy(fs.dist[seq]).double()
    wh = torch.from_numpy(fs.wh[seq]).double()
    pc = torch.from_numpy(fs.pos_cam[idx]).double()  # (B, L, J, 3)
    if aug.resample_noise_px > 0:
        resid = torch.from_numpy(rng.normal(0, aug.resample_noise_px, (B, L, J, 2)))
    else:
        resid = torch.from_numpy(fs.uv[idx] - fs.uv_gt[idx]).double()
    changed = False
    if aug.virtual_cameras and aug.max_deg > 0:
        ang = torch.from_numpy(rng.uniform(-1, 1, B) * np.deg2rad(aug.max_deg))
        Rw = rotation_about_axis(ang, torch.from_numpy(fs.up).double().expand(B, 3))  # (B, 3, 3)
        Rc = torch.from_numpy(fs.R[seq]).double()
        # rotation about the world vertical through the pivot, expressed in camera frame:
        # x_c' = Rc Rw Rc^T (x_c - p_c) + p_c
        M = Rc @ Rw @ Rc.transpose(-1, -2)
        c = L // 2 if centre is None else centre
        pivot = pc[:, c, ROOT][:, None, None, :]
        pc = (pc - pivot) @ M[:, None].transpose(-1, -2) + pivot
        changed = True
    if aug.flip:
        f = torch.from_numpy(rng.random(B) < 0.5)
        if f.any():
            pc = torch.where(f[:, None, None, None], flip_poses(pc), pc)
            rf = resid[..., list(FLIP_PERM), :].clone()
            rf[..., 0] = -rf[..., 0]
            resid = torch.where(f[:, None, None, None], rf, resid)
            changed = True
    if changed or aug.resample_noise_px > 0:
        uv = project_camera(pc, K[:, None], dist[:, None]) + resid
    else:
        uv = torch.from_numpy(fs.uv[idx]).double()
    root = pc[..., ROOT, :]
    return {
        "x2d": to_screen(uv, wh[:, None]).float(),
        "pose": (pc - pc[..., ROOT:ROOT + 1, :]).float(),
        "root": root.float(),
        "uv": uv.float(),
        "K": K.float(), "dist": dist.float(), "wh": wh.float(),
    }


def window_indices(fs: FrameSet, frames: np.ndarray, before: int, after: int) -> np.ndarray:
    """For frame rows ``frames`` (n,) -> (n, before + 1 + after) row indices of the window
    around each, clamped to its own sequence (edge padding, as at test time)."""
    seq = fs.seq_of_frame[frames]
    lo, hi = fs.starts[seq], fs.starts[seq] + fs.lengths[seq] - 1
    offs = np.arange(-before, after + 1)
    return np.clip(frames[:, None] + offs[None, :], lo[:, None], hi[:, None])
