"""The Human3.6M 17-joint skeleton, defined once.

Everything here derives from ``_JOINTS``: a list of ``(name, parent_name)`` in the
VideoPose3D / Martinez order. Parents, left/right pairs, the flip permutation, bones,
the KCS incidence matrix and the maps to other layouts (COCO-17, MPII-16, pose-hg-3d)
are computed from names, never typed as index lists.

Glossary: J joints, B bones (= J - 1), poses are ``(..., J, C)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

# (name, parent) in the VideoPose3D / Martinez order of Human3.6M-17.
_JOINTS: tuple[tuple[str, str | None], ...] = (
    ("pelvis", None),
    ("r_hip", "pelvis"),
    ("r_knee", "r_hip"),
    ("r_ankle", "r_knee"),
    ("l_hip", "pelvis"),
    ("l_knee", "l_hip"),
    ("l_ankle", "l_knee"),
    ("spine", "pelvis"),
    ("thorax", "spine"),
    ("neck_nose", "thorax"),
    ("head_top", "neck_nose"),
    ("l_shoulder", "thorax"),
    ("l_elbow", "l_shoulder"),
    ("l_wrist", "l_elbow"),
    ("r_shoulder", "thorax"),
    ("r_elbow", "r_shoulder"),
    ("r_wrist", "r_elbow"),
)

JOINT_NAMES: tuple[str, ...] = tuple(n for n, _ in _JOINTS)
NUM_JOINTS: int = len(JOINT_NAMES)
JOINT_INDEX: dict[str, int] = {n: i for i, n in enumerate(JOINT_NAMES)}
ROOT: int = JOINT_INDEX["pelvis"]
PARENTS: tuple[int, ...] = tuple(-1 if p is None else JOINT_INDEX[p] for _, p in _JOINTS)


def _side(name: str) -> str:
    return name[:2] if name[:2] in ("l_", "r_") else ""


def _mirror(name: str) -> str:
    s = _side(name)
    if not s:
        return name
    return ("r_" if s == "l_" else "l_") + name[2:]


LEFT_JOINTS: tuple[int, ...] = tuple(i for i, n in enumerate(JOINT_NAMES) if _side(n) == "l_")
RIGHT_JOINTS: tuple[int, ...] = tuple(JOINT_INDEX[_mirror(JOINT_NAMES[i])] for i in LEFT_JOINTS)
#: FLIP_PERM[j] = index of the mirror joint of j (an involution).
FLIP_PERM: tuple[int, ...] = tuple(JOINT_INDEX[_mirror(n)] for n in JOINT_NAMES)

#: bones as (parent, child) index pairs, one per non-root joint, in joint order.
BONES: tuple[tuple[int, int], ...] = tuple((p, c) for c, p in enumerate(PARENTS) if p >= 0)
BONE_NAMES: tuple[str, ...] = tuple(f"{JOINT_NAMES[p]}-{JOINT_NAMES[c]}" for p, c in BONES)


def bone_group(bone: tuple[int, int]) -> str:
    """'left', 'right' or 'torso', from the child's name (used by the hg3d geometric loss)."""
    s = _side(JOINT_NAMES[bone[1]])
    return {"l_": "left", "r_": "right"}.get(s, "torso")


def incidence_matrix() -> np.ndarray:
    """KCS incidence matrix C (J, B): column b is +1 at the child, -1 at the parent.

    With poses as ``X (..., J, 3)``, the bone vectors are ``B = C^T X`` (shape (..., B, 3)),
    so ``bone_b = X[child] - X[parent]`` (Wandt et al. 2018, Kinematic Chain Space).
    """
    c = np.zeros((NUM_JOINTS, len(BONES)), dtype=np.float32)
    for b, (p, ch) in enumerate(BONES):
        c[ch, b] = 1.0
        c[p, b] = -1.0
    return c


def bone_vectors(x: torch.Tensor) -> torch.Tensor:
    """(..., J, C) -> (..., B, C): child minus parent, one per bone in BONES order."""
    parents = torch.tensor([p for p, _ in BONES], device=x.device)
    children = torch.tensor([c for _, c in BONES], device=x.device)
    return x[..., children, :] - x[..., parents, :]


def bone_lengths(x: torch.Tensor) -> torch.Tensor:
    """(..., J, C) -> (..., B) Euclidean bone lengths."""
    return bone_vectors(x).norm(dim=-1)


def flip_poses(x: torch.Tensor | np.ndarray, axis: int = 0) -> torch.Tensor | np.ndarray:
    """Mirror poses (..., J, C) by negating coordinate ``axis`` and swapping left/right joints.

    For 2D in pixels flip about x=0 first (callers shift by the image width). Involution.
    """
    y = x[..., list(FLIP_PERM), :]
    y = y.clone() if isinstance(y, torch.Tensor) else y.copy()
    y[..., axis] = -y[..., axis]
    return y


# ---------------------------------------------------------------------------------------
# Other layouts, by name. ``None`` marks a joint with no H36M-17 counterpart.
COCO17_NAMES: tuple[str, ...] = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow",
    "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)
#: COCO joint name -> H36M joint name (only the ones that correspond).
_COCO_TO_H36M = {
    "nose": "neck_nose", "l_shoulder": "l_shoulder", "r_shoulder": "r_shoulder",
    "l_elbow": "l_elbow", "r_elbow": "r_elbow", "l_wrist": "l_wrist", "r_wrist": "r_wrist",
    "l_hip": "l_hip", "r_hip": "r_hip", "l_knee": "l_knee", "r_knee": "r_knee",
    "l_ankle": "l_ankle", "r_ankle": "r_ankle",
}
#: MPII-16 in its official index order.
MPII16_NAMES: tuple[str, ...] = (
    "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow",
    "l_wrist",
)
_MPII_TO_H36M = {
    "r_ankle": "r_ankle", "r_knee": "r_knee", "r_hip": "r_hip", "l_hip": "l_hip",
    "l_knee": "l_knee", "l_ankle": "l_ankle", "pelvis": "pelvis", "thorax": "thorax",
    "upper_neck": "neck_nose", "head_top": "head_top", "r_wrist": "r_wrist",
    "r_elbow": "r_elbow", "r_shoulder": "r_shoulder", "l_shoulder": "l_shoulder",
    "l_elbow": "l_elbow", "l_wrist": "l_wrist",
}
#: pose-hg-3d's documented output order: slot k of its MPII-16-shaped output holds H36M-17
#: joint HG3D_ORDER_H36M_INDICES[k]. Note the seed puts H36M's spine in MPII's "thorax" slot
#: and H36M's thorax in "upper_neck"; neck_nose is not output.
HG3D_ORDER_H36M_INDICES: tuple[int, ...] = (3, 2, 1, 4, 5, 6, 0, 7, 8, 10, 16, 15, 14, 11, 12, 13)

# Human3.6M's original 32-joint layout (names from the dataset's metadata), and the 17 kept.
H36M32_NAMES: tuple[str, ...] = (
    "Hips", "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase", "Site_rtoe", "LeftUpLeg",
    "LeftLeg", "LeftFoot", "LeftToeBase", "Site_ltoe", "Spine", "Spine1", "Neck", "Head",
    "Site_head", "LeftShoulder", "LeftArm", "LeftForeArm", "LeftHand", "LeftHandThumb",
    "Site_lthumb", "L_Wrist_End", "Site_lwrist", "RightShoulder", "RightArm", "RightForeArm",
    "RightHand", "RightHandThumb", "Site_rthumb", "R_Wrist_End", "Site_rwrist",
)
_H36M32_TO_17 = {
    "Hips": "pelvis", "RightUpLeg": "r_hip", "RightLeg": "r_knee", "RightFoot": "r_ankle",
    "LeftUpLeg": "l_hip", "LeftLeg": "l_knee", "LeftFoot": "l_ankle", "Spine1": "spine",
    "Neck": "thorax", "Head": "neck_nose", "Site_head": "head_top", "LeftArm": "l_shoulder",
    "LeftForeArm": "l_elbow", "LeftHand": "l_wrist", "RightArm": "r_shoulder",
    "RightForeArm": "r_elbow", "RightHand": "r_wrist",
}


HG3D_NAMES: tuple[str, ...] = tuple(JOINT_NAMES[i] for i in HG3D_ORDER_H36M_INDICES)


def to_hg3d_order(x):
    """H36M-17 (..., 17, C) -> pose-hg-3d's output order (..., 16, C), by name."""
    return reorder(x, JOINT_NAMES, HG3D_NAMES)


def from_hg3d_order(x):
    """pose-hg-3d order (..., 16, C) -> H36M-17; neck_nose is absent there (NaN)."""
    return reorder(x, HG3D_NAMES, JOINT_NAMES)


def reorder_indices(src_names: Sequence[str], dst_names: Sequence[str]) -> list[int]:
    """Indices idx with ``dst[j] = src[idx[j]]`` matching by name; -1 where src lacks it."""
    pos = {n: i for i, n in enumerate(src_names)}
    return [pos.get(n, -1) for n in dst_names]


def reorder(x, src_names: Sequence[str], dst_names: Sequence[str], fill: float = float("nan")):
    """Reorder poses (..., Js, C) from ``src_names`` to ``dst_names`` by name.

    Joints missing in the source are filled with ``fill`` (NaN by default).
    Works for numpy arrays and torch tensors.
    """
    idx = reorder_indices(src_names, dst_names)
    if len(src_names) != x.shape[-2]:
        raise ValueError(f"reorder: poses have {x.shape[-2]} joints but {len(src_names)} names")
    safe = [max(i, 0) for i in idx]
    y = x[..., safe, :]
    missing = [j for j, i in enumerate(idx) if i < 0]
    if missing:
        y = y.clone() if isinstance(y, torch.Tensor) else y.astype(np.result_type(y, np.float32), copy=True)
        y[..., missing, :] = fill
    return y


def _names_in_h36m(mapping: dict[str, str], names: Sequence[str]) -> tuple[str, ...]:
    return tuple(mapping.get(n, f"_{n}") for n in names)


def from_coco17(x):
    """COCO-17 poses (..., 17, C) -> H36M-17 (..., 17, C); pelvis = mid-hip, thorax = mid-shoulder,
    spine = mid(pelvis, thorax); head_top has no COCO counterpart (NaN)."""
    y = reorder(x, _names_in_h36m(_COCO_TO_H36M, COCO17_NAMES), JOINT_NAMES)
    li, ri = COCO17_NAMES.index("l_hip"), COCO17_NAMES.index("r_hip")
    ls, rs = COCO17_NAMES.index("l_shoulder"), COCO17_NAMES.index("r_shoulder")
    pelvis = (x[..., li, :] + x[..., ri, :]) / 2
    thorax = (x[..., ls, :] + x[..., rs, :]) / 2
    y[..., JOINT_INDEX["pelvis"], :] = pelvis
    y[..., JOINT_INDEX["thorax"], :] = thorax
    y[..., JOINT_INDEX["spine"], :] = (pelvis + thorax) / 2
    return y


def to_coco17(x):
    """H36M-17 (..., 17, C) -> COCO-17; eyes and ears have no counterpart (NaN)."""
    return reorder(x, JOINT_NAMES, _names_in_h36m(_COCO_TO_H36M, COCO17_NAMES))


def from_mpii16(x):
    """MPII-16 (..., 16, C) -> H36M-17; spine = mid(pelvis, thorax)."""
    y = reorder(x, _names_in_h36m(_MPII_TO_H36M, MPII16_NAMES), JOINT_NAMES)
    s = JOINT_INDEX["spine"]
    y[..., s, :] = (y[..., JOINT_INDEX["pelvis"], :] + y[..., JOINT_INDEX["thorax"], :]) / 2
    return y


def to_mpii16(x):
    """H36M-17 (..., 17, C) -> MPII-16 (spine dropped)."""
    return reorder(x, JOINT_NAMES, _names_in_h36m(_MPII_TO_H36M, MPII16_NAMES))


def h36m32_to_17(x):
    """Human3.6M's 32-joint poses (..., 32, C) -> H36M-17 by name."""
    return reorder(x, _names_in_h36m(_H36M32_TO_17, H36M32_NAMES), JOINT_NAMES)


def h36m32_indices_of_17() -> list[int]:
    """Indices into the 32 joints of the 17 kept (0-based), in H36M-17 order."""
    return reorder_indices(_names_in_h36m(_H36M32_TO_17, H36M32_NAMES), JOINT_NAMES)
