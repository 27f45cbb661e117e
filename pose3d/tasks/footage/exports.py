"""Exports of footage predictions: BVH, TRC, C3D, VideoPose3D-style npz (the tidy Parquet goes
through :func:`pose3d.data.contracts.write_predictions`).

Frames. Predictions come in the camera frame (one camera: x right, y down, z forward) or the
world frame of cameras.json. BVH, TRC and C3D are written in a **Y-up** frame (what OpenSim,
Pose2Sim and BVH readers expect): :func:`y_up_rotation` turns the axis closest to the mean
pelvis -> head_top direction into +Y (a proper rotation, so left stays left). The npz and the
Parquet keep the predictions' own frame, named in their metadata.

Units: TRC metres (``Units m``), C3D millimetres (``POINT:UNITS mm``), BVH centimetres, npz metres.

BVH skeleton (H36M-17 hierarchy, every joint 3 rotation channels ``Zrotation Xrotation
Yrotation`` = R_z R_x R_y, the root also ``Xposition Yposition Zposition``; leaves end in a 5 cm
End Site). Rest offsets have the **median bone lengths** over the frames; their directions:
legs down, spine and head up, arms out to the sides (a T-pose facing +Z, the character's left at
+X), except at the two joints with three children (pelvis: hips + spine; thorax: neck +
shoulders), whose rest triangle is the median of the triangle's shape in its own frame, so a
rigid pelvis or shoulder girdle is reproduced exactly. Rotations are solved per frame, top
down: a joint with three children takes the rotation that best maps its rest children onto
the frame's (Kabsch, Umeyama 1991), a joint with one child the smallest rotation that turns
the bone onto the frame's direction (twist carried over from the parent). Forward kinematics
of the file reproduces the joints exactly when the bone lengths are constant and the two
triangles rigid; otherwise it is the closest such skeleton (docs/footage.md gives the error).

Glossary: T frames, J joints (H36M-17).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import c3d
import numpy as np
from scipy.spatial.transform import Rotation

from pose3d.data.io import atomic_path
from pose3d.geometry.shapes import check_shape
from pose3d.skeleton import JOINT_INDEX, JOINT_NAMES, LEFT_JOINTS, PARENTS, RIGHT_JOINTS

J = len(JOINT_NAMES)
CHILDREN: dict[int, list[int]] = {j: [c for c, p in enumerate(PARENTS) if p == j] for j in range(J)}
#: (x axis from, x axis to, y axis child) of the joints with three children
_TRIADS = {JOINT_INDEX["pelvis"]: ("r_hip", "l_hip", "spine"),
           JOINT_INDEX["thorax"]: ("r_shoulder", "l_shoulder", "neck_nose")}
#: rest direction of the bone to each single-child joint (Y up, facing +Z, left at +X)
_REST_DIR = {"r_knee": (0, -1, 0), "r_ankle": (0, -1, 0), "l_knee": (0, -1, 0), "l_ankle": (0, -1, 0),
             "thorax": (0, 1, 0), "head_top": (0, 1, 0), "l_elbow": (1, 0, 0), "l_wrist": (1, 0, 0),
             "r_elbow": (-1, 0, 0), "r_wrist": (-1, 0, 0)}


# --------------------------------------------------------------------------- frames
def y_up_rotation(joints: np.ndarray) -> np.ndarray:
    """(3, 3) proper rotation taking the axis (+-x, y or z) closest to the mean pelvis -> head_top
    direction of joints (T, J, 3) onto +Y. Apply as ``joints @ R.T``."""
    d = np.nanmean(joints[:, JOINT_INDEX["head_top"]] - joints[:, JOINT_INDEX["pelvis"]], 0)
    k = int(np.nanargmax(np.abs(d)))
    up = np.zeros(3)
    up[k] = np.sign(d[k]) or 1.0
    return _min_rotation(up[None], np.array([[0.0, 1.0, 0.0]]))[0]


def _min_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotations (N, 3, 3) turning unit vectors a (N, 3) onto b (N, 3) (Rodrigues);
    opposite vectors turn by 180 degrees about an axis perpendicular to a."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    v = np.cross(a, b)
    c = (a * b).sum(-1)
    s = np.linalg.norm(v, axis=-1)
    axis = np.where(s[:, None] > 1e-9, v / np.maximum(s, 1e-12)[:, None], 0.0)
    opposite = (s <= 1e-9) & (c < 0)
    if opposite.any():  # any axis perpendicular to a
        e = np.where(np.abs(a[opposite, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
        p = np.cross(a[opposite], e)
        axis[opposite] = p / np.linalg.norm(p, axis=-1, keepdims=True)
    angle = np.arctan2(s, c)
    return Rotation.from_rotvec(axis * angle[:, None]).as_matrix()


def _kabsch(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """Rotations (T, 3, 3) minimising sum_i |R p_i - q_i|^2 for P (K, 3) and Q (T, K, 3)."""
    H = np.einsum("ki,tkj->tij", P, Q)  # (T, 3, 3) = P^T Q
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(Vt.transpose(0, 2, 1) @ U.transpose(0, 2, 1)))
    D = np.zeros_like(H)
    D[:, 0, 0] = D[:, 1, 1] = 1
    D[:, 2, 2] = d
    return Vt.transpose(0, 2, 1) @ D @ U.transpose(0, 2, 1)


def _triad_frame(x: np.ndarray, j: int) -> np.ndarray:
    """(T, 3, 3) rotation whose columns are the triad's axes: x from the right to the left
    child, y the third child's direction made orthogonal to x."""
    a, b, c = (JOINT_INDEX[n] for n in _TRIADS[j])
    ex = x[:, b] - x[:, a]
    ex /= np.linalg.norm(ex, axis=-1, keepdims=True)
    ey = x[:, c] - x[:, j]
    ey = ey - (ey * ex).sum(-1, keepdims=True) * ex
    ey /= np.linalg.norm(ey, axis=-1, keepdims=True)
    return np.stack([ex, ey, np.cross(ex, ey)], -1)


# --------------------------------------------------------------------------- BVH
def rest_offsets(joints: np.ndarray) -> np.ndarray:
    """(J, 3) rest offsets (child - parent, the root's = 0) of joints (T, J, 3): median bone
    lengths in the rest directions of the module docstring."""
    off = np.zeros((J, 3))
    bone = np.linalg.norm(joints - joints[:, [max(p, 0) for p in PARENTS]], axis=-1)  # (T, J)
    length = np.nanmedian(bone, 0)
    for j, triad in _TRIADS.items():
        F = _triad_frame(joints, j)
        for n in triad:
            c = JOINT_INDEX[n]
            local = np.einsum("tji,tj->ti", F, joints[:, c] - joints[:, j])  # F^T d
            m = np.nanmedian(local, 0)
            off[c] = m / np.linalg.norm(m) * length[c]
    for n, d in _REST_DIR.items():
        off[JOINT_INDEX[n]] = np.asarray(d, float) * length[JOINT_INDEX[n]]
    return off


def solve_rotations(joints: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Global rotations (T, J, 3, 3) of every joint for joints (T, J, 3) and rest offsets (J, 3)."""
    T = len(joints)
    G = np.zeros((T, J, 3, 3))
    for j in range(J):  # parents come before children in H36M-17 order
        p = PARENTS[j]
        Gp = G[:, p] if p >= 0 else np.broadcast_to(np.eye(3), (T, 3, 3))
        ch = CHILDREN[j]
        if len(ch) > 1:
            G[:, j] = _kabsch(offsets[ch], joints[:, ch] - joints[:, j:j + 1])
        elif len(ch) == 1:
            c = ch[0]
            rest = np.einsum("tij,j->ti", Gp, offsets[c])
            G[:, j] = _min_rotation(rest, joints[:, c] - joints[:, j]) @ Gp
        else:
            G[:, j] = Gp
    return G


def write_bvh(path: str | Path, joints: np.ndarray, fps: float) -> None:
    """BVH of joints (T, J, 3) metres, Y up (see the module docstring); units centimetres."""
    check_shape(joints, "T 17 3", "joints")
    x = np.asarray(joints, np.float64) * 100.0
    off = rest_offsets(x)
    G = solve_rotations(x, off)
    parents = np.array([max(p, 0) for p in PARENTS])
    L = np.einsum("tjki,tjkl->tjil", G[:, parents], G)  # local = G_parent^T G
    L[:, 0] = G[:, 0]
    euler = Rotation.from_matrix(L.reshape(-1, 3, 3)).as_euler("ZXY", degrees=True).reshape(len(x), J, 3)
    out = io.StringIO()
    out.write("HIERARCHY\n")

    def emit(j, depth):
        ind = "  " * depth
        kind = "ROOT" if PARENTS[j] < 0 else "JOINT"
        out.write(f"{ind}{kind} {JOINT_NAMES[j]}\n{ind}{{\n")
        out.write(f"{ind}  OFFSET {off[j, 0]:.6f} {off[j, 1]:.6f} {off[j, 2]:.6f}\n")
        ch = "6 Xposition Yposition Zposition Zrotation Xrotation Yrotation" if PARENTS[j] < 0 else \
            "3 Zrotation Xrotation Yrotation"
        out.write(f"{ind}  CHANNELS {ch}\n")
        for c in CHILDREN[j]:
            emit(c, depth + 1)
        if not CHILDREN[j]:
            tip = off[j] / max(np.linalg.norm(off[j]), 1e-9) * 5.0
            out.write(f"{ind}  End Site\n{ind}  {{\n{ind}    OFFSET {tip[0]:.6f} {tip[1]:.6f} {tip[2]:.6f}\n{ind}  }}\n")
        out.write(f"{ind}}}\n")

    emit(0, 0)
    out.write(f"MOTION\nFrames: {len(x)}\nFrame Time: {1.0 / fps:.8f}\n")
    order = []
    stack = [0]
    while stack:  # the channel order is the hierarchy's depth-first order
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(CHILDREN[j]))
    for t in range(len(x)):
        vals = list(x[t, 0])
        for j in order:
            vals += list(euler[t, j])
        out.write(" ".join(f"{v:.6f}" for v in vals) + "\n")
    _write_text(path, out.getvalue())


# --------------------------------------------------------------------------- TRC / C3D / npz
def write_trc(path: str | Path, joints: np.ndarray, fps: float) -> None:
    """OpenSim / Pose2Sim marker file: tab-separated, metres, one marker per H36M-17 joint."""
    check_shape(joints, "T 17 3", "joints")
    T = len(joints)
    lines = [f"PathFileType\t4\t(X/Y/Z)\t{Path(path).name}",
             "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
             f"{fps:.6g}\t{fps:.6g}\t{T}\t{J}\tm\t{fps:.6g}\t1\t{T}",
             "Frame#\tTime\t" + "\t\t\t".join(JOINT_NAMES) + "\t\t",
             "\t\t" + "\t".join(f"X{k + 1}\tY{k + 1}\tZ{k + 1}" for k in range(J)),
             ""]
    for t in range(T):
        xyz = "\t".join("" if not np.isfinite(v) else f"{v:.6f}" for v in joints[t].reshape(-1))
        lines.append(f"{t + 1}\t{t / fps:.6f}\t{xyz}")
    _write_text(path, "\n".join(lines) + "\n")


def write_c3d(path: str | Path, joints: np.ndarray, fps: float) -> None:
    """C3D through the ``c3d`` library: float points in millimetres, labels = H36M-17 names;
    a missing joint (NaN) gets residual -1 (the C3D mark of an invalid point)."""
    check_shape(joints, "T 17 3", "joints")
    w = c3d.Writer(point_rate=float(fps), analog_rate=0.0, point_units="mm  ")
    w.set_point_labels(list(JOINT_NAMES))
    frames = []
    for t in range(len(joints)):
        p = np.zeros((J, 5), np.float32)
        ok = np.isfinite(joints[t]).all(-1)
        p[:, :3] = np.where(ok[:, None], joints[t] * 1000.0, 0.0)
        p[:, 3] = np.where(ok, 0.0, -1.0)
        frames.append((p, np.zeros((0, 0), np.float32)))
    w.add_frames(frames)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "No analog data", UserWarning)  # points only, on purpose
        w.write(fh)


def write_vp3d_npz(path: str | Path, joints: np.ndarray, points_2d: np.ndarray, fps: float,
                   coord_frame: str, image_size: list[tuple[int, int]], views: list[str]) -> None:
    """VideoPose3D-style npz, no pickles (``np.load(allow_pickle=False)`` reads it):
    ``positions_3d`` (T, 17, 3) metres in the H36M-17 order VideoPose3D uses (its ``--viz-export``
    writes this array), ``positions_2d`` (V, T, 17, 2) input pixels, ``keypoints_symmetry`` (2, 6)
    left / right joint indices, ``joint_names``, ``views``, ``image_size`` (V, 2), ``fps``, ``coord_frame``."""
    arrays = {"positions_3d": np.asarray(joints, np.float32), "positions_2d": np.asarray(points_2d, np.float32),
              "keypoints_symmetry": np.array([LEFT_JOINTS, RIGHT_JOINTS], np.int64),
              "joint_names": np.array(JOINT_NAMES), "views": np.array(views), "image_size": np.array(image_size),
              "fps": np.float64(fps), "coord_frame": np.array(coord_frame)}
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def _write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)

