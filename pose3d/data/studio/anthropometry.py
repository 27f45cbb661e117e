"""Subjects of the studio: bone lengths from stature, body girths and clothing.

Segment lengths are fractions of stature H from Drillis & Contini (1966), as tabulated in
D. A. Winter, *Biomechanics and Motor Control of Human Movement* (4th ed., Fig. 4.1):
upper arm 0.186 H, forearm 0.146 H, hand 0.108 H, thigh 0.245 H, shank 0.246 H, ankle height
0.039 H, hip joint height 0.530 H, shoulder height 0.818 H, chin 0.870 H, foot length 0.152 H,
biacromial (shoulder) breadth 0.259 H, hip breadth 0.191 H. Joint centres sit inside the
breadths: the hip joint centres are ~0.10 H apart and the shoulder joint centres ~0.21 H.
Each subject multiplies every ratio by a small seeded factor (sd 2.5 %, clipped to +-5 %), so
subjects of one stature still differ in proportions.

The rest skeleton is expressed in a *body frame*: X forward, Y left, Z up, metres, with the
pelvis (mid point of the hip joint centres) at the origin and the subject standing upright
with arms hanging. ``rest_offsets`` gives, for every H36M-17 joint, its offset from its parent
in that frame (pose3d.skeleton order), so forward kinematics keeps every bone length exactly.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from pose3d.data.studio.seeds import stable_seed
from pose3d.skeleton import JOINT_NAMES, PARENTS

# Drillis & Contini ratios (fraction of stature), see the module docstring.
RATIOS: dict[str, float] = {
    "upper_arm": 0.186, "forearm": 0.146, "hand": 0.108, "thigh": 0.245, "shank": 0.246,
    "ankle_height": 0.039, "foot_length": 0.152, "hip_half_width": 0.052,
    "shoulder_half_width": 0.105, "spine_height": 0.125, "thorax_height": 0.165,
    "nose_height": 0.088, "nose_forward": 0.035, "head_top_height": 0.088,
    "head_top_back": 0.030, "shoulder_drop": 0.015,
}


@dataclass(frozen=True)
class Subject:
    """One synthetic person: body dimensions (metres), clothing (RGB in [0, 1]) and style.

    ``ratios`` are the per-subject segment ratios (fractions of ``stature``); ``girth`` scales
    all limb radii (slim 0.85 .. broad 1.2); ``style`` holds motion-style factors used by
    :mod:`pose3d.data.studio.motion` (tempo, amplitude, lean, ...).
    """
    name: str
    stature: float
    ratios: dict
    girth: float
    colors: dict
    sleeves: str  # "short" | "long"
    style: dict

    @property
    def ankle_height(self) -> float:
        return self.ratios["ankle_height"] * self.stature

    def length(self, key: str) -> float:
        return self.ratios[key] * self.stature


def make_subject(name: str, seed: int, stature: float | None = None,
                 stature_range: tuple[float, float] = (1.50, 1.95)) -> Subject:
    """A reproducible subject for ``name``: same (seed, name) -> same person.

    ``stature`` (m) is drawn uniformly from ``stature_range`` unless given.
    """
    rng = np.random.default_rng(stable_seed(seed, name))
    if stature is None:
        stature = float(rng.uniform(*stature_range))
    ratios = {k: v * float(np.clip(1 + 0.025 * rng.standard_normal(), 0.95, 1.05))
              for k, v in RATIOS.items()}
    girth = float(rng.uniform(0.85, 1.2))

    def hsv(h, s, v):
        return tuple(float(c) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))

    skin_tones = [(0.96, 0.80, 0.69), (0.90, 0.72, 0.58), (0.78, 0.57, 0.42), (0.58, 0.40, 0.28),
                  (0.42, 0.28, 0.19)]
    skin = skin_tones[int(rng.integers(len(skin_tones)))]
    hair = hsv(rng.uniform(0.02, 0.1), rng.uniform(0.3, 0.8), rng.uniform(0.08, 0.45))
    shirt_hsv = (rng.uniform(0, 1), rng.uniform(0.25, 0.85), rng.uniform(0.35, 0.95))
    shirt = hsv(*shirt_hsv)
    trousers = hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.6), rng.uniform(0.15, 0.6))
    shoes = hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.4), rng.uniform(0.05, 0.5))
    # a print on the shirt's front and a belt buckle, in a colour that contrasts with the shirt
    # (no extra random draw, so every other attribute of a subject stays as it was)
    front = hsv(shirt_hsv[0] + 0.5, 0.7, 0.95 if shirt_hsv[2] < 0.65 else 0.2)
    colors = {"skin": skin, "hair": hair, "shirt": shirt, "trousers": trousers, "shoes": shoes,
              "front": front}
    style = {
        "tempo": float(rng.uniform(0.85, 1.15)),       # speed of every action's timing
        "amplitude": float(rng.uniform(0.8, 1.2)),      # size of gestures
        "lean": float(rng.uniform(-4.0, 8.0)),          # trunk forward lean, degrees
        "head_tilt": float(rng.uniform(-6.0, 8.0)),     # neck flexion, degrees
        "arm_abduction": float(rng.uniform(4.0, 12.0)),  # resting arm abduction, degrees
        "stance_width": float(rng.uniform(2.0, 7.0)),   # resting hip abduction, degrees
        "phase": float(rng.uniform(0, 2 * np.pi)),      # phase of idle sway
    }
    return Subject(name=name, stature=float(stature), ratios=ratios, girth=girth, colors=colors,
                   sleeves="short" if rng.uniform() < 0.5 else "long", style=style)


def rest_offsets(subject: Subject) -> np.ndarray:
    """Offsets (J, 3) of each joint from its parent in the body frame (X fwd, Y left, Z up), m.

    Row of the root (pelvis) is zero. Bone lengths are the norms of these rows.
    """
    L = subject.length
    off = {
        "pelvis": (0.0, 0.0, 0.0),
        "r_hip": (0.0, -L("hip_half_width"), 0.0),
        "l_hip": (0.0, L("hip_half_width"), 0.0),
        "r_knee": (0.0, 0.0, -L("thigh")),
        "l_knee": (0.0, 0.0, -L("thigh")),
        "r_ankle": (0.0, 0.0, -L("shank")),
        "l_ankle": (0.0, 0.0, -L("shank")),
        "spine": (0.0, 0.0, L("spine_height")),
        "thorax": (0.0, 0.0, L("thorax_height")),
        "neck_nose": (L("nose_forward"), 0.0, L("nose_height")),
        "head_top": (-L("head_top_back"), 0.0, L("head_top_height")),
        "l_shoulder": (0.0, L("shoulder_half_width"), -L("shoulder_drop")),
        "r_shoulder": (0.0, -L("shoulder_half_width"), -L("shoulder_drop")),
        "l_elbow": (0.0, 0.0, -L("upper_arm")),
        "r_elbow": (0.0, 0.0, -L("upper_arm")),
        "l_wrist": (0.0, 0.0, -L("forearm")),
        "r_wrist": (0.0, 0.0, -L("forearm")),
    }
    return np.array([off[n] for n in JOINT_NAMES], dtype=np.float64)


def bone_lengths_of(subject: Subject) -> np.ndarray:
    """(J,) length of the bone ending at each joint (0 for the root), metres."""
    return np.linalg.norm(rest_offsets(subject), axis=-1)


def subject_from_bone_lengths(name: str, positions: np.ndarray, seed: int) -> Subject:
    """A subject whose body dimensions follow mocap ``positions`` (T, J, 3) metres.

    Used to dress real mocap: stature is estimated from the median leg + trunk + head chain
    (ankle height added), clothing/style are drawn as for :func:`make_subject`.
    """
    bones = np.linalg.norm(positions[:, 1:] - positions[:, [p for p in PARENTS[1:]]], axis=-1)
    med = np.nanmedian(bones, axis=0)
    b = {JOINT_NAMES[j + 1]: med[j] for j in range(len(med))}
    leg = (b["r_knee"] + b["l_knee"] + b["r_ankle"] + b["l_ankle"]) / 2
    trunk = b["spine"] + b["thorax"] + b["neck_nose"] + b["head_top"]
    stature = float(np.clip(leg / (RATIOS["thigh"] + RATIOS["shank"]) * 0.5
                            + (leg + trunk) / (1 - RATIOS["ankle_height"]) * 0.5, 1.3, 2.1))
    return make_subject(name, seed, stature=stature)

