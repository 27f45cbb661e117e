"""Procedural human motion: joint angles within anatomical limits, driven through forward kinematics.

Frames and conventions
----------------------
* World: metres, Z up, floor at z = 0. Body frame of the pelvis: X forward, Y left, Z up.
* ``angles`` (T, J, 3) degrees, per joint ``(flex, abd, twist)`` in anatomical terms (flexion
  forward positive, abduction away from the midline / lateral bend to the left positive, twist
  = internal rotation for limbs, turn to the left for the trunk). Joint j's angles rotate the
  bones *below* j: ``L_j = Rx(s_a abd) @ Ry(s_f flex) @ Rz(s_t twist)`` with the per-joint signs
  of ``_SIGNS`` (so twist is about the bone's own axis). Exception: the ``neck_nose`` row holds
  the neck, a rotation about the thorax joint applied to the neck_nose and head_top bones (so a
  head turn moves the nose). The ``pelvis`` row is unused: the root's orientation is ``root_R``.
* FK (``forward_kinematics``): ``x_j = x_p + G_p @ o_j``, ``G_j = G_p @ L_j`` with the rest
  offsets ``o_j`` of :func:`pose3d.data.studio.anthropometry.rest_offsets`: bone lengths are
  exactly those offsets' norms for every frame.

Motion families
---------------
* *standing / sitting* actions: a smooth pelvis trajectory (position and orientation) above two
  fixed footprints; the legs follow by analytic two-link inverse kinematics, so a planted ankle
  does not move at all (zero foot sliding) whatever the upper body does.
* *walking* actions: a gait cycle (hip/knee flexion curves after Winter's normative gait data,
  arm swing in anti-phase); the pelvis is carried by the stance foot (its velocity is minus
  the weighted stance-ankle velocity), so the stance foot is fixed in single support; the
  heading follows a circle of a given radius around the capture-volume centre.

Every curve is a smooth function of time (cubic smoothstep keyframes, sinusoids, soft limits),
so velocities are continuous. Subject style (tempo, amplitude, lean, ...) comes from
:class:`~pose3d.data.studio.anthropometry.Subject`; per-sequence randomness from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from pose3d.data.studio.anthropometry import Subject, rest_offsets
from pose3d.data.studio.seeds import stable_seed
from pose3d.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS, PARENTS

J = JOINT_INDEX

# Anatomical limits in degrees, (lo, hi) for (flex, abd, twist), after the ranges of motion
# of the AAOS (American Academy of Orthopaedic Surgeons, 1965) and the ASF limits used by CMU.
LIMITS: dict[str, tuple[tuple[float, float], ...]] = {
    "spine": ((-20, 45), (-25, 25), (-30, 30)),
    "thorax": ((-20, 40), (-20, 20), (-30, 30)),
    "neck_nose": ((-40, 55), (-35, 35), (-70, 70)),
    "r_hip": ((-25, 120), (-25, 45), (-40, 40)),
    "l_hip": ((-25, 120), (-25, 45), (-40, 40)),
    "r_knee": ((0, 150), (0, 0), (0, 0)),
    "l_knee": ((0, 150), (0, 0), (0, 0)),
    "r_shoulder": ((-50, 170), (-20, 170), (-80, 80)),
    "l_shoulder": ((-50, 170), (-20, 170), (-80, 80)),
    "r_elbow": ((0, 150), (0, 0), (0, 0)),
    "l_elbow": ((0, 150), (0, 0), (0, 0)),
}

# (s_flex, s_abd, s_twist): sign of each anatomical angle in the rotation about Y, X, Z.
_SIGNS: dict[str, tuple[float, float, float]] = {
    "spine": (1, -1, 1), "thorax": (1, -1, 1), "neck_nose": (1, -1, 1),
    "r_hip": (-1, -1, 1), "l_hip": (-1, 1, -1), "r_knee": (1, 0, 0), "l_knee": (1, 0, 0),
    "r_shoulder": (-1, -1, 1), "l_shoulder": (-1, 1, -1), "r_elbow": (-1, 0, 0),
    "l_elbow": (-1, 0, 0),
}


# --------------------------------------------------------------------------- rotations (numpy)
def rot_x(a: np.ndarray) -> np.ndarray:
    """Rotation about X by ``a`` (*) radians -> (*, 3, 3)."""
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(np.shape(a) + (3, 3))


def rot_y(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(np.shape(a) + (3, 3))


def rot_z(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(np.shape(a) + (3, 3))


def local_rotation(joint: str, angles_deg: np.ndarray) -> np.ndarray:
    """Anatomical angles (*, 3) degrees of ``joint`` -> its local rotation (*, 3, 3)."""
    sf, sa, st = _SIGNS[joint]
    a = np.deg2rad(angles_deg)
    return rot_x(sa * a[..., 1]) @ rot_y(sf * a[..., 0]) @ rot_z(st * a[..., 2])


def forward_kinematics(offsets: np.ndarray, angles: np.ndarray, root_pos: np.ndarray,
                       root_R: np.ndarray) -> np.ndarray:
    """Joint positions (T, J, 3) from rest ``offsets`` (J, 3), ``angles`` (T, J, 3) degrees,
    pelvis positions ``root_pos`` (T, 3) and orientations ``root_R`` (T, 3, 3) (body -> world)."""
    T = angles.shape[0]
    pos = np.zeros((T, NUM_JOINTS, 3))
    G = np.zeros((T, NUM_JOINTS, 3, 3))
    pos[:, 0] = root_pos
    G[:, 0] = root_R
    for j in range(1, NUM_JOINTS):
        name, p = JOINT_NAMES[j], PARENTS[j]
        Gp = G[:, p]
        if name == "neck_nose":  # the neck rotates the nose and head bones about the thorax
            Gp = Gp @ local_rotation(name, angles[:, j])
        pos[:, j] = pos[:, p] + Gp @ offsets[j]
        G[:, j] = Gp @ local_rotation(name, angles[:, j]) if name in _SIGNS and name != "neck_nose" else Gp
    return pos


# --------------------------------------------------------------------------- smooth curves
def smoothstep(x: np.ndarray) -> np.ndarray:
    """C1 ramp 0 -> 1 on [0, 1] (3x^2 - 2x^3), clamped outside."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def keyframes(t: np.ndarray, times, values) -> np.ndarray:
    """Smooth (C1) interpolation through keys: holds before the first and after the last.

    ``times`` (K,) increasing seconds, ``values`` (K, *D) -> (T, *D). Between two keys the value
    follows a smoothstep, so velocity is continuous (zero at each key, like a person who pauses).
    """
    times = np.asarray(times, float)
    values = np.asarray(values, float)
    idx = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 1)
    nxt = np.minimum(idx + 1, len(times) - 1)
    span = np.where(nxt > idx, times[nxt] - times[idx], 1.0)
    u = smoothstep((t - times[idx]) / span)
    u = u.reshape(u.shape + (1,) * (values.ndim - 1))
    return values[idx] * (1 - u) + values[nxt] * u


def soft_clip(x: np.ndarray, lo: float, hi: float, margin: float = 8.0) -> np.ndarray:
    """Identity inside [lo + m, hi - m], saturating smoothly (C1, tanh) to never pass lo / hi."""
    if hi <= lo:
        return np.full_like(x, lo)
    m = min(margin, (hi - lo) / 4)
    y = np.asarray(x, float).copy()
    up, dn = y > hi - m, y < lo + m
    y[up] = hi - m + m * np.tanh((y[up] - (hi - m)) / m)
    y[dn] = lo + m + m * np.tanh((y[dn] - (lo + m)) / m)
    return y


def _periodic_bump(phase: np.ndarray, centre: float, width: float) -> np.ndarray:
    d = (phase - centre + 0.5) % 1.0 - 0.5
    return np.exp(-0.5 * (d / width) ** 2)


# --------------------------------------------------------------------------- leg IK
def leg_ik(d_local: np.ndarray, thigh: float, shank: float, side: str,
           twist_deg: np.ndarray | float = 0.0) -> np.ndarray:
    """Analytic two-link IK: hip->ankle vector ``d_local`` (T, 3) in the pelvis frame ->
    hip (flex, abd, twist) and knee flex angles, degrees, as (T, 2, 3) [hip, knee].

    The knee angle follows the law of cosines, |d|^2 = a^2 + b^2 + 2 a b cos(knee); the hip
    rotation Rx(abd) Ry(flex) then maps the twisted leg vector onto ``d_local`` exactly.
    ``|d|`` is clamped to the reachable range (knee 0..150 deg).
    """
    a, b = thigh, shank
    d = np.asarray(d_local, float)
    n = np.linalg.norm(d, axis=-1)
    n_min = np.sqrt(a * a + b * b + 2 * a * b * np.cos(np.deg2rad(150.0)))
    n_c = np.clip(n, n_min, a + b - 1e-9)
    d = d * (n_c / n)[..., None]
    knee = np.arccos(np.clip((n_c ** 2 - a * a - b * b) / (2 * a * b), -1, 1))
    sf, sa, st = _SIGNS[f"{side}_hip"]
    tw = np.deg2rad(np.broadcast_to(np.asarray(twist_deg, float), knee.shape))
    v = np.stack([-b * np.sin(knee), np.zeros_like(knee), -a - b * np.cos(knee)], -1)
    u = (rot_z(st * tw) @ v[..., None])[..., 0]
    # Rx(theta) Ry(beta) u = d: the y of Ry(beta) u is u_y, so (Rx(-theta) d)_y = u_y
    R = np.hypot(d[..., 1], d[..., 2])
    phi = np.arctan2(d[..., 2], d[..., 1])
    theta = phi + np.arccos(np.clip(u[..., 1] / R, -1, 1))
    theta = (theta + np.pi) % (2 * np.pi) - np.pi
    w = (rot_x(-theta) @ d[..., None])[..., 0]
    beta = np.arctan2(w[..., 0], w[..., 2]) - np.arctan2(u[..., 0], u[..., 2])
    beta = (beta + np.pi) % (2 * np.pi) - np.pi
    hip = np.stack([np.rad2deg(beta) / sf, np.rad2deg(theta) / sa, np.rad2deg(tw)], -1)
    kn = np.stack([np.rad2deg(knee), np.zeros_like(knee), np.zeros_like(knee)], -1)
    return np.stack([hip, kn], -2)


# --------------------------------------------------------------------------- action context
@dataclass
class Motion:
    """A generated sequence: positions (T, J, 3) m world, plus the state that produced it."""

    positions: np.ndarray
    angles: np.ndarray        # (T, J, 3) degrees
    root_pos: np.ndarray      # (T, 3) m
    root_R: np.ndarray        # (T, 3, 3)
    stance: np.ndarray        # (T, 2) weight of (left, right) foot as support, 0..1
    fps: float


class _Ctx:
    """What an action function gets: time, randomness, subject, and curves to fill in."""

    def __init__(self, subject: Subject, T: int, fps: float, rng: np.random.Generator):
        self.s = subject
        self.T, self.fps, self.rng = T, fps, rng
        st = subject.style
        self.t = np.arange(T) / fps * st["tempo"]  # style-warped time, seconds
        self.amp = st["amplitude"]
        self.angles = np.zeros((T, NUM_JOINTS, 3))
        # pelvis, relative to the stance frame: offset (fwd, left, up) m and (pitch, roll, yaw) deg
        self.pelvis_off = np.zeros((T, 3))
        self.pelvis_rot = np.zeros((T, 3))
        self.mode = "stand"
        self.foot_fwd = 0.0           # footprint x in the stance frame (sitting: ahead)
        self.walk: dict = {}
        #: footsteps of standing actions: (foot 0=l 1=r, start s, duration s, (dx, dy) m)
        self.steps: list[tuple[int, float, float, np.ndarray]] = []
        self._rest_posture()

    def add_steps(self, n: int, reach: float = 0.22, forward_bias: float = 0.0) -> None:
        """n footsteps at random, non-overlapping times, alternating feet; feet never cross
        (left stays >= 0.14 m left of right) and stay within 0.5 m of each other."""
        if n <= 0:
            return
        dur_total = self.t[-1]
        slots = np.sort(self.rng.uniform(0.05, 0.95, n)) * dur_total
        foot = int(self.rng.integers(2))
        pos = np.array([[0.0, 0.1], [0.0, -0.1]])  # relative positions, only for the constraints
        last_end = -1.0
        for t0 in slots:
            dur = float(self.rng.uniform(0.45, 0.7))
            t0 = max(t0, last_end + 0.15)
            if t0 + dur > dur_total:
                break
            for _ in range(20):
                ang = self.rng.uniform(0, 2 * np.pi)
                d = self.rng.uniform(0.3, 1.0) * reach * np.array([np.cos(ang), np.sin(ang)])
                d[0] += forward_bias
                new = pos[foot] + d
                other = pos[1 - foot]
                lat = new[1] - other[1] if foot == 0 else other[1] - new[1]
                if lat >= 0.14 and np.linalg.norm(new - other) <= 0.5:
                    break
            else:
                continue
            pos[foot] = new
            self.steps.append((foot, float(t0), dur, d))
            last_end = t0 + dur
            foot = 1 - foot

    # ---- building blocks
    def noise(self, amp: float, fmin: float = 0.08, fmax: float = 0.45, n: int = 3) -> np.ndarray:
        """Smooth random curve (T,): a sum of n sinusoids, peak about ``amp``."""
        f = self.rng.uniform(fmin, fmax, n)
        ph = self.rng.uniform(0, 2 * np.pi, n)
        return amp / np.sqrt(n) * np.sin(2 * np.pi * f[:, None] * self.t[None] + ph[:, None]).sum(0)

    def add(self, joint: str, dof: int, curve) -> None:
        self.angles[:, J[joint], dof] += curve

    def keys(self, n: int, duration: float | None = None, jitter: float = 0.25) -> np.ndarray:
        """n key times spread over the sequence, jittered (seconds of warped time)."""
        dur = duration if duration is not None else max(self.t[-1], 1e-3)
        base = np.linspace(0, dur, n)
        step = dur / max(n - 1, 1)
        return np.sort(base + self.rng.uniform(-jitter, jitter, n) * step * (np.arange(n) > 0)
                       * (np.arange(n) < n - 1))

    def pose_track(self, poses: list[dict], times=None) -> None:
        """Add a keyframed sequence of partial poses {joint: (flex, abd, twist)} (degrees)."""
        times = self.keys(len(poses)) if times is None else np.asarray(times, float)
        joints = sorted({j for p in poses for j in p})
        for jn in joints:
            vals = np.array([p.get(jn, (0.0, 0.0, 0.0)) for p in poses], float)
            self.angles[:, J[jn]] += self.amp * keyframes(self.t, times, vals) if jn != "_" else 0

    def _rest_posture(self) -> None:
        st = self.s.style
        self.add("spine", 0, st["lean"] * 0.5)
        self.add("thorax", 0, st["lean"] * 0.5)
        self.add("neck_nose", 0, st["head_tilt"])
        for side, sgn in (("l", 1), ("r", -1)):
            self.add(f"{side}_shoulder", 1, st["arm_abduction"])
            self.add(f"{side}_elbow", 0, 12.0)
            self.add(f"{side}_shoulder", 0, 4.0)
        # idle sway of the trunk and head (always alive)
        for jn, dof, a in (("spine", 0, 2.0), ("spine", 1, 2.0), ("spine", 2, 3.0), ("thorax", 2, 2.0),
                           ("neck_nose", 0, 5.0), ("neck_nose", 2, 10.0), ("neck_nose", 1, 3.0)):
            self.add(jn, dof, self.noise(a))
        for jn in ("l_shoulder", "r_shoulder"):
            self.add(jn, 0, self.noise(3.0))
            self.add(jn, 1, self.noise(2.0))
        for jn in ("l_elbow", "r_elbow"):
            self.add(jn, 0, np.abs(self.noise(6.0)))
        self.pelvis_off[:, 1] += self.noise(0.025, 0.05, 0.25)  # weight shifts
        self.pelvis_off[:, 2] += -np.abs(self.noise(0.015))
        self.pelvis_rot[:, 2] += self.noise(6.0, 0.03, 0.15)


# --------------------------------------------------------------------------- actions
def _side(c: _Ctx) -> tuple[str, str]:
    """A random (main, other) arm side for one sequence."""
    return ("r", "l") if c.rng.uniform() < 0.6 else ("l", "r")


def _gesture_poses(c: _Ctx, n: int, arms=("l", "r"), flex=(10, 70), abd=(5, 40), elbow=(30, 110),
                   twist=(-10, 50)) -> list[dict]:
    out = []
    for _ in range(n):
        p = {}
        for a in arms:
            p[f"{a}_shoulder"] = (c.rng.uniform(*flex), c.rng.uniform(*abd), c.rng.uniform(*twist))
            p[f"{a}_elbow"] = (c.rng.uniform(*elbow), 0, 0)
        out.append(p)
    return out


def act_directions(c: _Ctx) -> None:
    """Standing, pointing in changing directions with one arm, trunk and head turning along."""
    c.add_steps(int(c.rng.integers(2, 4)))
    m, o = _side(c)
    n = 5
    poses = []
    for k in range(n):
        turn = c.rng.uniform(-25, 25)
        point = k % 2 == 1
        poses.append({f"{m}_shoulder": (c.rng.uniform(60, 100) if point else 5, c.rng.uniform(5, 45) if point else 8,
                                        c.rng.uniform(-20, 20)),
                      f"{m}_elbow": (c.rng.uniform(0, 20) if point else 15, 0, 0),
                      "thorax": (0, 0, turn * 0.6), "neck_nose": (c.rng.uniform(-5, 10), 0, turn)})
    c.pose_track(poses)
    c.pose_track(_gesture_poses(c, 4, arms=(o,), flex=(-5, 25), abd=(0, 15), elbow=(10, 60)))


def act_discussion(c: _Ctx) -> None:
    """Standing, both arms gesturing in front of the body, weight shifting, nodding."""
    c.add_steps(int(c.rng.integers(1, 3)), reach=0.15)
    c.pose_track(_gesture_poses(c, 8, flex=(15, 60), abd=(5, 35), elbow=(50, 110), twist=(10, 50)))
    c.add("neck_nose", 0, c.noise(8.0, 0.3, 0.8))
    c.pelvis_off[:, 1] += c.noise(0.03, 0.1, 0.3)
    c.pelvis_rot[:, 2] += c.noise(10.0, 0.05, 0.2)


def act_eating(c: _Ctx) -> None:
    """Sitting at an (invisible) table, bringing one hand to the mouth repeatedly."""
    _sit(c)
    m, o = _side(c)
    rate = c.rng.uniform(0.25, 0.4)
    cyc = 0.5 - 0.5 * np.cos(2 * np.pi * rate * c.t)
    c.add(f"{m}_shoulder", 0, 25 + 30 * cyc)
    c.add(f"{m}_shoulder", 1, 15 + 5 * cyc)
    c.add(f"{m}_shoulder", 2, 35 + 10 * cyc)
    c.add(f"{m}_elbow", 0, 70 + 70 * cyc)
    c.add(f"{o}_shoulder", 0, 30)
    c.add(f"{o}_elbow", 0, 65)
    c.add(f"{o}_shoulder", 2, 30)
    c.add("neck_nose", 0, 10 * cyc)
    c.add("thorax", 0, 8 * cyc)


def act_greeting(c: _Ctx) -> None:
    """Standing, waving with a raised hand, then a handshake reach."""
    c.add_steps(2, reach=0.2, forward_bias=0.08)
    m, o = _side(c)
    T = c.t[-1]
    raise_ = keyframes(c.t, [0, 0.25 * T, 0.55 * T, 0.7 * T, T], [0, 1, 1, 0, 0])
    shake = keyframes(c.t, [0, 0.65 * T, 0.8 * T, T], [0, 0, 1, 1])
    wave = np.sin(2 * np.pi * c.rng.uniform(1.2, 2.0) * c.t)
    c.add(f"{m}_shoulder", 1, raise_ * (95 + 15 * wave * 0.3))
    c.add(f"{m}_shoulder", 0, raise_ * 30 + shake * 50)
    c.add(f"{m}_shoulder", 2, -raise_ * 50)
    c.add(f"{m}_elbow", 0, raise_ * (60 + 25 * wave) + shake * 30)
    c.add("spine", 0, shake * 10)
    c.add("neck_nose", 0, -raise_ * 5 + shake * 10)
    c.pose_track(_gesture_poses(c, 3, arms=(o,), flex=(-5, 20), abd=(0, 15), elbow=(10, 40)))


def act_phoning(c: _Ctx) -> None:
    """Standing with a phone at the ear, the other hand gesturing or on the hip."""
    c.add_steps(int(c.rng.integers(2, 4)))
    m, o = _side(c)
    c.add(f"{m}_shoulder", 0, 35 + c.noise(5))
    c.add(f"{m}_shoulder", 1, 35 + c.noise(5))
    c.add(f"{m}_shoulder", 2, 45)
    c.add(f"{m}_elbow", 0, 140 + c.noise(4))
    c.add("neck_nose", 1, 12 if m == "r" else -12)
    c.pose_track(_gesture_poses(c, 5, arms=(o,), flex=(-10, 45), abd=(10, 45), elbow=(20, 100),
                                twist=(0, 60)))
    c.pelvis_rot[:, 2] += c.noise(15.0, 0.04, 0.12)


def act_photo(c: _Ctx) -> None:
    """Holding a camera in front of the face with both hands, crouching and turning."""
    c.add_steps(int(c.rng.integers(1, 3)), reach=0.18)
    k = c.keys(4)
    up = keyframes(c.t, k, c.rng.uniform(0.6, 1.0, 4))
    for s in ("l", "r"):
        c.add(f"{s}_shoulder", 0, 55 * up)
        c.add(f"{s}_shoulder", 1, 25 * up)
        c.add(f"{s}_shoulder", 2, 55 * up)
        c.add(f"{s}_elbow", 0, 120 * up)
    c.add("neck_nose", 0, 8 * up)
    c.pelvis_off[:, 2] += -keyframes(c.t, k, c.rng.uniform(0.0, 0.18, 4))
    c.pelvis_rot[:, 2] += keyframes(c.t, k, c.rng.uniform(-25, 25, 4))
    c.add("spine", 0, keyframes(c.t, k, c.rng.uniform(0, 20, 4)))


def act_posing(c: _Ctx) -> None:
    """A sequence of held poses: arms wide, hands on hips, one arm up, a lunge."""
    c.add_steps(int(c.rng.integers(1, 3)), reach=0.3)
    lib = [
        {"l_shoulder": (0, 90, 0), "r_shoulder": (0, 90, 0), "l_elbow": (5, 0, 0), "r_elbow": (5, 0, 0)},
        {"l_shoulder": (-20, 40, -30), "r_shoulder": (-20, 40, -30), "l_elbow": (100, 0, 0),
         "r_elbow": (100, 0, 0)},
        {"r_shoulder": (10, 150, 0), "l_shoulder": (-10, 20, 0), "r_elbow": (10, 0, 0), "spine": (0, 10, 0)},
        {"l_shoulder": (10, 150, 0), "r_shoulder": (-10, 20, 0), "l_elbow": (10, 0, 0), "spine": (0, -10, 0)},
        {"l_shoulder": (80, 10, 0), "r_shoulder": (80, 10, 0), "l_elbow": (90, 0, 0), "r_elbow": (90, 0, 0),
         "thorax": (0, 0, 20)},
        {"l_shoulder": (150, 20, 0), "r_shoulder": (150, 20, 0), "l_elbow": (20, 0, 0), "r_elbow": (20, 0, 0)},
    ]
    order = c.rng.permutation(len(lib))[:4]
    poses = [{}] + [lib[i] for i in order]
    times = np.cumsum(np.r_[0, c.rng.uniform(0.6, 1.1, len(poses) - 1)])
    c.pose_track(poses, times * c.t[-1] / max(times[-1], 1e-3))
    c.pelvis_off[:, 2] += -keyframes(c.t, c.keys(4), c.rng.uniform(0, 0.12, 4))


def act_purchases(c: _Ctx) -> None:
    """Bending forward to reach for something low, picking it up, looking at it."""
    k = c.keys(5)
    bend = keyframes(c.t, k, [0, 1, 0.3, 0.9, 0.1] * c.rng.uniform(0.7, 1.0, 5))
    c.pelvis_rot[:, 0] += 35 * bend
    c.add("spine", 0, 25 * bend)
    c.add("thorax", 0, 15 * bend)
    c.pelvis_off[:, 0] += -0.12 * bend
    c.pelvis_off[:, 2] += -0.10 * bend
    m, o = _side(c)
    c.add(f"{m}_shoulder", 0, 60 * bend + 20)
    c.add(f"{m}_elbow", 0, 20 + 40 * (1 - bend))
    c.add(f"{o}_shoulder", 0, 30 * bend)
    c.add(f"{o}_elbow", 0, 30)
    c.add("neck_nose", 0, -20 * bend)


def _sit(c: _Ctx, amount: np.ndarray | float = 1.0) -> None:
    """Blend the pelvis from standing over the feet (0) to sitting on a seat behind them (1)."""
    s = c.s
    amount = np.broadcast_to(np.asarray(amount, float), (c.T,))
    c.foot_fwd = 0.85 * s.length("thigh")
    seat_drop = (s.length("thigh") + s.length("shank")) - 0.97 * s.length("shank")
    c.pelvis_off[:, 0] += c.foot_fwd * (1 - amount)
    c.pelvis_off[:, 2] += -seat_drop * amount
    c.pelvis_rot[:, 0] += -8 * amount
    c.add("spine", 0, 6 * amount)


def act_sitting(c: _Ctx) -> None:
    """Sitting, leaning, resting the arms on the thighs, occasional gestures."""
    _sit(c)
    c.pose_track(_gesture_poses(c, 5, flex=(20, 55), abd=(0, 25), elbow=(40, 100), twist=(10, 45)))
    c.add("spine", 0, keyframes(c.t, c.keys(4), c.rng.uniform(-5, 25, 4)))
    c.pelvis_rot[:, 2] *= 0.3


def act_sitting_down(c: _Ctx) -> None:
    """Standing, sitting down on a seat (trunk leaning forward during the descent), standing up."""
    T = c.t[-1]
    a, b = c.rng.uniform(0.1, 0.25), c.rng.uniform(0.45, 0.55)
    amount = keyframes(c.t, [a * T, b * T, 0.75 * T, 0.97 * T], [0, 1, 1, 0])
    _sit(c, amount)
    lean = 4 * amount * (1 - amount)  # peaks mid-way through the transition
    c.pelvis_rot[:, 0] += 30 * lean
    c.add("spine", 0, 15 * lean)
    for s in ("l", "r"):
        c.add(f"{s}_shoulder", 0, 35 * lean + 20 * amount)
        c.add(f"{s}_elbow", 0, 40 * amount)
    c.pelvis_rot[:, 2] *= 0.3


def act_smoking(c: _Ctx) -> None:
    """Standing, hand to the mouth now and then, the other arm across the waist."""
    c.add_steps(int(c.rng.integers(0, 2)), reach=0.15)
    m, o = _side(c)
    k = c.keys(6)
    up = keyframes(c.t, k, [0, 1, 0, 0, 1, 0])
    c.add(f"{m}_shoulder", 0, 20 + 30 * up)
    c.add(f"{m}_shoulder", 1, 10 + 10 * up)
    c.add(f"{m}_shoulder", 2, 30 + 15 * up)
    c.add(f"{m}_elbow", 0, 80 + 60 * up)
    c.add(f"{o}_shoulder", 0, 15)
    c.add(f"{o}_shoulder", 2, 55)
    c.add(f"{o}_elbow", 0, 95)
    c.add("neck_nose", 0, -5 * up)


def act_waiting(c: _Ctx) -> None:
    """Standing, arms crossed or hands on the hips, shifting weight, looking around."""
    c.add_steps(int(c.rng.integers(1, 3)), reach=0.15)
    if c.rng.uniform() < 0.5:  # arms crossed
        for s in ("l", "r"):
            c.add(f"{s}_shoulder", 0, 25)
            c.add(f"{s}_shoulder", 2, 65)
            c.add(f"{s}_elbow", 0, 110)
    else:  # hands on the hips
        for s in ("l", "r"):
            c.add(f"{s}_shoulder", 0, -15)
            c.add(f"{s}_shoulder", 1, 35)
            c.add(f"{s}_shoulder", 2, -35)
            c.add(f"{s}_elbow", 0, 95)
    c.add("neck_nose", 2, c.noise(35, 0.05, 0.2))
    c.pelvis_off[:, 1] += c.noise(0.045, 0.05, 0.15)
    c.pelvis_rot[:, 1] += c.noise(4.0, 0.05, 0.15)


def _walk(c: _Ctx, speed_factor: float = 1.0, radius: float = 1.5, arm_swing: float = 25.0) -> None:
    c.mode = "walk"
    cadence = c.rng.uniform(0.85, 1.0) * speed_factor  # gait cycles per second (warped time)
    c.walk = {"cadence": cadence, "radius": radius * c.rng.uniform(0.9, 1.1),
              "direction": 1.0 if c.rng.uniform() < 0.5 else -1.0,
              "phase0": c.rng.uniform(0, 1), "arm_swing": arm_swing}


def act_walking(c: _Ctx) -> None:
    """Walking around a circle about the capture-volume centre, arms swinging."""
    _walk(c, 1.0, 1.15)


def act_walk_dog(c: _Ctx) -> None:
    """Walking slowly with one arm forward holding a leash, looking down now and then."""
    _walk(c, 0.8, 1.05, arm_swing=15.0)
    m, _ = _side(c)
    c.add(f"{m}_shoulder", 0, 30 + c.noise(8, 0.2, 0.6))
    c.add(f"{m}_elbow", 0, 35)
    c.add("neck_nose", 0, 15 + c.noise(10))


def act_walk_together(c: _Ctx) -> None:
    """Walking slowly beside someone: head turned to the side, little arm swing."""
    _walk(c, 0.75, 0.95, arm_swing=10.0)
    side = 1 if c.walk["direction"] > 0 else -1
    c.add("neck_nose", 2, side * 30 + c.noise(10))
    c.add("thorax", 2, side * 8)


ACTIONS: dict[str, Callable[[_Ctx], None]] = {
    "Directions": act_directions, "Discussion": act_discussion, "Eating": act_eating,
    "Greeting": act_greeting, "Phoning": act_phoning, "Photo": act_photo, "Posing": act_posing,
    "Purchases": act_purchases, "Sitting": act_sitting, "SittingDown": act_sitting_down,
    "Smoking": act_smoking, "Waiting": act_waiting, "WalkDog": act_walk_dog, "Walking": act_walking,
    "WalkTogether": act_walk_together,
}
WALKING_ACTIONS = ("Walking", "WalkDog", "WalkTogether")


# --------------------------------------------------------------------------- generation
def _clip_angles(angles: np.ndarray) -> np.ndarray:
    out = angles.copy()
    for jn, lims in LIMITS.items():
        for dof, (lo, hi) in enumerate(lims):
            out[:, J[jn], dof] = soft_clip(out[:, J[jn], dof], lo, hi)
    return out


def _pelvis_R(rot_deg: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """Pelvis orientation from (pitch forward, roll left, yaw left) degrees + heading (rad)."""
    r = np.deg2rad(rot_deg)
    return rot_z(heading + r[:, 2]) @ rot_x(-r[:, 1]) @ rot_y(r[:, 0])


def _standing(c: _Ctx, off: np.ndarray, centre: np.ndarray, heading: float) -> Motion:
    """Pelvis on a trajectory above fixed footprints; legs by IK (planted feet never slide)."""
    s = c.s
    a, b = s.length("thigh"), s.length("shank")
    hw = s.length("hip_half_width")
    spread = np.sin(np.deg2rad(s.style["stance_width"])) * (a + b)
    Rh = rot_z(np.array(heading))
    foot_local = np.array([[c.foot_fwd, hw + spread, 0.0], [c.foot_fwd, -(hw + spread), 0.0]])
    # footsteps: each foot's footprint moves by smoothstep during its steps, lifted by sin^2
    foot_t = np.repeat(foot_local[None], c.T, 0)  # (T, 2, 3) stance frame
    stance = np.ones((c.T, 2))
    shift = np.zeros((c.T, 2))  # pelvis weight shift towards the supporting foot (stance frame xy)
    for k, t0, dur, d in c.steps:
        u = np.clip((c.t - t0) / dur, 0, 1)
        foot_t[:, k, :2] += smoothstep(u)[:, None] * d
        lift = np.sin(np.pi * u) ** 2
        foot_t[:, k, 2] += 0.07 * lift
        stance[(u > 0) & (u < 1), k] = 0.0
        other = foot_t[:, 1 - k, :2] - 0.5 * (foot_t[:, 0, :2] + foot_t[:, 1, :2])
        shift += 0.5 * lift[:, None] * other
    mid = 0.5 * (foot_t[:, 0, :2] + foot_t[:, 1, :2]) - 0.5 * (foot_local[0, :2] + foot_local[1, :2])
    feet = centre + foot_t @ Rh.T + np.array([0, 0, s.ankle_height])  # (T, 2, 3) world: l, r
    # nominal pelvis height: legs almost straight (|d| = 0.985 (a + b))
    dz = np.sqrt((0.985 * (a + b)) ** 2 - spread ** 2)
    p_local = c.pelvis_off + np.array([0.0, 0.0, s.ankle_height + dz])
    p_local[:, :2] += mid + shift
    root_pos = centre + p_local @ Rh.T
    root_R = _pelvis_R(c.pelvis_rot, np.full(c.T, heading))
    # lower the pelvis (smoothly) where a leg could not reach its footprint otherwise
    reach = 0.985 * (a + b)
    zmax = []
    for k, side in enumerate(("l", "r")):
        off = root_R @ offsets_of(s)[J[f"{side}_hip"]]
        h = feet[:, k, :2] - (root_pos[:, :2] + off[:, :2])
        zmax.append(feet[:, k, 2] - off[:, 2] + np.sqrt(np.maximum(reach ** 2 - (h ** 2).sum(-1), 1e-4)))
    tau = 0.01
    z = np.stack([root_pos[:, 2]] + zmax, -1)
    root_pos[:, 2] = -tau * np.log(np.exp(-(z - z.min(-1, keepdims=True)) / tau).sum(-1)) + z.min(-1)
    angles = _clip_angles(c.angles)
    for k, side in enumerate(("l", "r")):
        hip_world = root_pos + (root_R @ offsets_of(s)[J[f"{side}_hip"]])
        d_world = feet[:, k] - hip_world
        d_local = np.einsum("tji,tj->ti", root_R, d_world)  # R^T d
        # knees point over the toes: counter the pelvis yaw with the hip twist
        sgn = 1.0 if side == "r" else -1.0
        twist = np.clip(sgn * c.pelvis_rot[:, 2], -35, 35)
        ik = leg_ik(d_local, a, b, side, twist)
        angles[:, J[f"{side}_hip"]] = ik[:, 0]
        angles[:, J[f"{side}_knee"]] = ik[:, 1]
    pos = forward_kinematics(offsets_of(s), angles, root_pos, root_R)
    return Motion(pos, angles, root_pos, root_R, stance, c.fps)


def _walking(c: _Ctx, centre: np.ndarray, heading0: float) -> Motion:
    """Gait cycle + stance-foot-carried pelvis along a circle (see module docstring)."""
    s, w = c.s, c.walk
    phase = w["phase0"] + w["cadence"] * c.t  # cycles
    ph_r, ph_l = phase % 1.0, (phase + 0.5) % 1.0
    angles = c.angles.copy()
    amp = 0.85 + 0.15 * c.amp
    for side, ph in (("r", ph_r), ("l", ph_l)):
        # Winter's normative sagittal curves, simplified: hip 25 deg flexion at heel strike,
        # ~12 deg extension at 50 %; knee loading bump at 15 %, swing peak ~60 deg at 72 %.
        hip = 7 + 18 * amp * np.cos(2 * np.pi * ph)
        knee = 4 + 14 * _periodic_bump(ph, 0.15, 0.06) + 56 * amp * _periodic_bump(ph, 0.72, 0.1)
        angles[:, J[f"{side}_hip"], 0] += hip
        angles[:, J[f"{side}_hip"], 1] += 3 + 2 * np.sin(2 * np.pi * ph)
        angles[:, J[f"{side}_knee"], 0] += knee
        other = ph_l if side == "r" else ph_r  # the arm swings with the opposite leg
        angles[:, J[f"{side}_shoulder"], 0] += w["arm_swing"] * amp * np.cos(2 * np.pi * other) * 0.8
        angles[:, J[f"{side}_elbow"], 0] += 15 + 10 * (1 + np.cos(2 * np.pi * other)) * amp
    rot = c.pelvis_rot * 0.3
    rot[:, 2] += 5 * np.sin(2 * np.pi * phase)       # pelvic rotation
    rot[:, 1] += 3 * np.sin(2 * np.pi * phase + 1.0)  # pelvic list
    rot[:, 0] += 4 + s.style["lean"] * 0.3
    angles[:, J["thorax"], 2] += -6 * np.sin(2 * np.pi * phase)  # counter-rotation of the chest
    angles = _clip_angles(angles)
    # support weights: right foot from heel strike (0) to toe off (0.6), left shifted by 0.5
    def stance_w(ph):
        up = smoothstep(ph / 0.1)
        down = 1 - smoothstep((ph - 0.5) / 0.1)
        return np.where(ph < 0.5, up, down)
    wr = stance_w(ph_r)
    wl = 1 - wr
    off = offsets_of(s)

    def carry(heading):
        R = _pelvis_R(rot, heading)
        zero = np.zeros((c.T, 3))
        rel = forward_kinematics(off, angles, zero, R)  # pelvis at the origin
        F = np.stack([rel[:, J["l_ankle"]], rel[:, J["r_ankle"]]], 1)  # (T, 2, 3)
        W = np.stack([wl, wr], 1)
        dF = np.diff(F, axis=0)
        Wm = 0.5 * (W[1:] + W[:-1])
        step = -(Wm[..., None] * dF).sum(1)
        root = np.concatenate([np.zeros((1, 3)), np.cumsum(step, 0)], 0)
        root[:, 2] = s.ankle_height - (W * F[..., 2]).sum(1)
        return root, R, W

    # pass 1: straight line, to get the distance walked; pass 2: along the circle
    root0, R0, _ = carry(np.full(c.T, heading0))
    dist = np.r_[0, np.cumsum(np.linalg.norm(np.diff(root0[:, :2], axis=0), axis=-1))]
    heading = heading0 + w["direction"] * dist / w["radius"]
    root, R, W = carry(heading)
    # the circle's centre is to the walker's left (right for direction -1) at the start
    left0 = np.array([-np.sin(heading0), np.cos(heading0), 0.0]) * w["direction"]
    start = centre - w["radius"] * left0
    root[:, :2] += start[:2]
    pos = forward_kinematics(off, angles, root, R)
    return Motion(pos, angles, root, R, W, c.fps)


def offsets_of(subject: Subject) -> np.ndarray:
    return rest_offsets(subject)


def generate(subject: Subject, action: str, seconds: float, fps: float, seed: int,
             volume_radius: float = 0.6) -> Motion:
    """One procedural sequence of ``action`` for ``subject``: (round(seconds*fps), 17, 3) metres.

    ``volume_radius`` (m) bounds where standing actions are placed around the world origin.
    Same (subject, action, seconds, fps, seed) -> identical arrays.
    """
    if fps <= 0:
        raise ValueError(f"fps = {fps}: must be positive")
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (known: {', '.join(ACTIONS)})")
    T = max(int(round(seconds * fps)), 2)
    rng = np.random.default_rng(stable_seed(seed, subject.name, action))
    c = _Ctx(subject, T, fps, rng)
    ACTIONS[action](c)
    heading = float(rng.uniform(-np.pi, np.pi))
    if c.mode == "walk":
        return _walking(c, np.zeros(3), heading)
    r = volume_radius * np.sqrt(rng.uniform())
    ang = rng.uniform(0, 2 * np.pi)
    centre = np.array([r * np.cos(ang), r * np.sin(ang), 0.0])
    return _standing(c, c.pelvis_off, centre, heading)
