"""Real motion capture importers: BVH, Acclaim ASF/AMC and the shared H36M-17 npz.

Each reader returns joint positions in the *source* skeleton (all joints, with names), then
:func:`to_h36m17` maps them to Human3.6M-17 **by joint name** and converts to pose3d's world
(metres, Z up). Small, tested readers of our own (from the specs below); no parser library:
the common BVH packages on PyPI are unmaintained or pull in heavy dependencies, and Acclaim
has none worth the name.

Formats
-------
* BVH (Biovision, as specified by M. Meredith and S. Maddock, "Motion capture file formats
  explained", 2001): a HIERARCHY of joints with OFFSETs and CHANNELS, then MOTION with
  ``Frames``, ``Frame Time`` and one line of channel values per frame. A joint's local rotation
  is the product of its rotation channels *in the listed order* (``Zrotation Yrotation
  Xrotation`` -> Rz @ Ry @ Rx); ``x_j = x_parent + G_parent @ offset_j``, ``G_j = G_parent @ R_j``.
  End Sites are named ``<joint>_end``. No unit is stored: ``unit_m`` gives metres per unit.
* Acclaim ASF/AMC (CMU / HDM05): bones with a global rest ``direction`` and ``length``, a local
  frame ``axis`` (Euler angles, degrees, listed order applied first), and per-frame ``dof``
  rotations in that local frame. Global rotation ``W_b = W_parent C_b M_b C_b^T``, bone end
  ``e_b = e_parent + W_b (direction_b * length_b)``. The joint named ``<bone>`` is the bone's
  *start* (= its parent's end), ``<bone>_end`` its end. ``:units length l`` means lengths are in
  1/l inches (0.45 -> 56.444 mm per unit).
* npz (``real_mocap_h36m17.npz``): ``positions`` (N, 17, 3) millimetres, Z up, H36M-17 order,
  with per-frame ``clip_id``, ``subject``, ``activity``; one take per clip.

Mapping to H36M-17 (the approximations, as in the shared data's conversion notes): hips, knees,
ankles, shoulders, elbows, wrists are the named joint centres (BVH ``RightUpLeg`` / Acclaim
``rfemur`` ...); pelvis is the midpoint of the two hip joints (not the source root); spine =
``Spine`` / start of ``upperback``; thorax = ``Neck`` / start of ``lowerneck``; neck_nose = ``Head``
/ start of ``head`` (the base of the skull, not the nose); head_top = the head's end site. Only
legs and pelvis are exact for CMU BVH files (their conversion drops short segments).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pose3d.data.io import DataError
from pose3d.skeleton import JOINT_NAMES

_INCH_M = 0.0254


@dataclass(frozen=True)
class SourceMotion:
    """Joint positions of a source skeleton: ``positions`` (T, N, 3) in file units, its own axes."""

    names: tuple[str, ...]
    positions: np.ndarray
    fps: float
    path: str


@dataclass(frozen=True)
class Take:
    """One real take on H36M-17: positions (T, 17, 3) metres, world Z up."""

    subject: str
    action: str
    positions: np.ndarray
    fps: float


# --------------------------------------------------------------------------- rotations
def _axis_rot(axis: str, deg: np.ndarray) -> np.ndarray:
    a = np.deg2rad(np.asarray(deg, float))
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    m = {"x": (o, z, z, z, c, -s, z, s, c), "y": (c, z, s, z, o, z, -s, z, c),
         "z": (c, -s, z, s, c, z, z, z, o)}[axis.lower()]
    return np.stack(m, -1).reshape(a.shape + (3, 3))


def euler_matrix(order: str, angles_deg: np.ndarray) -> np.ndarray:
    """Rotation (*, 3, 3) for angles (*, k) about the axes in ``order`` (e.g. "zyx"), composed
    in the listed order as a product: "zyx" -> Rz @ Ry @ Rx."""
    angles_deg = np.asarray(angles_deg, float)
    R = np.broadcast_to(np.eye(3), angles_deg.shape[:-1] + (3, 3)).copy()
    for i, ax in enumerate(order):
        R = R @ _axis_rot(ax, angles_deg[..., i])
    return R


# --------------------------------------------------------------------------- BVH
def read_bvh(path: str | os.PathLike) -> SourceMotion:
    """Parse a BVH file and run its forward kinematics -> joint and end-site positions."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    text = path.read_text(errors="replace")
    tokens = text.split()
    if not tokens or tokens[0] != "HIERARCHY":
        raise DataError(f"{path}: not a BVH file (no HIERARCHY header)")
    names, parents, offsets, channels = [], [], [], []
    stack: list[int] = []
    i = 1
    last = -1
    try:
        while i < len(tokens) and tokens[i] != "MOTION":
            tok = tokens[i]
            if tok in ("ROOT", "JOINT"):
                names.append(tokens[i + 1])
                parents.append(stack[-1] if stack else -1)
                offsets.append(None)
                channels.append([])
                last = len(names) - 1
                i += 2
            elif tok == "End":  # End Site
                parent = stack[-1]
                names.append(f"{names[parent]}_end")
                parents.append(parent)
                offsets.append(None)
                channels.append([])
                last = len(names) - 1
                i += 2
            elif tok == "{":
                stack.append(last)
                i += 1
            elif tok == "}":
                stack.pop()
                i += 1
            elif tok == "OFFSET":
                offsets[last] = [float(v) for v in tokens[i + 1:i + 4]]
                i += 4
            elif tok == "CHANNELS":
                n = int(tokens[i + 1])
                channels[last] = tokens[i + 2:i + 2 + n]
                i += 2 + n
            else:
                raise DataError(f"{path}: unexpected token {tok!r} in HIERARCHY")
        if i >= len(tokens):
            raise DataError(f"{path}: truncated: no MOTION section")
        if stack:
            raise DataError(f"{path}: truncated: unbalanced braces in HIERARCHY")
        if tokens[i + 1] != "Frames:" or tokens[i + 3:i + 5] != ["Frame", "Time:"]:
            raise DataError(f"{path}: malformed MOTION header")
        n_frames = int(tokens[i + 2])
        frame_time = float(tokens[i + 5])
        data = tokens[i + 6:]
    except (IndexError, ValueError) as e:
        raise DataError(f"{path}: truncated or malformed BVH ({e})") from e
    if any(o is None for o in offsets):
        raise DataError(f"{path}: a joint has no OFFSET")
    if frame_time <= 0:
        raise DataError(f"{path}: Frame Time = {frame_time}: must be positive")
    n_ch = sum(len(c) for c in channels)
    if len(data) < n_frames * n_ch:
        raise DataError(f"{path}: truncated: header promises {n_frames} frames of {n_ch} values, "
                        f"file holds {len(data)} values ({len(data) // max(n_ch, 1)} whole frames)")
    try:
        values = np.asarray(data[: n_frames * n_ch], dtype=np.float64).reshape(n_frames, n_ch)
    except ValueError as e:
        raise DataError(f"{path}: non-numeric motion data ({e})") from e
    # forward kinematics
    T = n_frames
    pos = np.zeros((T, len(names), 3))
    G = np.zeros((T, len(names), 3, 3))
    col = 0
    for j, (name, p) in enumerate(zip(names, parents)):
        ch = channels[j]
        v = values[:, col:col + len(ch)]
        col += len(ch)
        off = np.asarray(offsets[j], float)
        trans = np.zeros((T, 3))
        rot_order, rot_vals = "", []
        for k, c in enumerate(ch):
            cl = c.lower()
            if cl.endswith("position"):
                trans[:, "xyz".index(cl[0])] = v[:, k]
            elif cl.endswith("rotation"):
                rot_order += cl[0]
                rot_vals.append(v[:, k])
            else:
                raise DataError(f"{path}: unknown channel {c!r} of joint {name}")
        R = euler_matrix(rot_order, np.stack(rot_vals, -1)) if rot_order else np.broadcast_to(np.eye(3), (T, 3, 3))
        if p < 0:
            pos[:, j] = off + trans
            G[:, j] = R
        else:
            pos[:, j] = pos[:, p] + G[:, p] @ off + trans
            G[:, j] = G[:, p] @ R
    return SourceMotion(tuple(names), pos, 1.0 / frame_time, str(path))


# --------------------------------------------------------------------------- ASF / AMC
@dataclass(frozen=True)
class AsfSkeleton:
    path: str
    length_unit: float                  # ":units length" (0.45 -> 1/0.45 inch per unit)
    angle_deg: bool
    root_order: tuple[str, ...]         # e.g. ("tx", "ty", "tz", "rx", "ry", "rz")
    root_axis: str
    root_position: np.ndarray
    root_orientation: np.ndarray
    bones: dict                          # name -> dict(direction, length, axis, axis_order, dof)
    children: dict                       # name -> [child bone names]


def _acclaim_euler(order: str, angles_deg: np.ndarray) -> np.ndarray:
    """Acclaim Euler angles: the first listed axis is applied first ("xyz" -> Rz @ Ry @ Rx)."""
    return euler_matrix(order[::-1], np.asarray(angles_deg, float)[..., ::-1])


def read_asf(path: str | os.PathLike) -> AsfSkeleton:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    lines = [ln.split("#")[0].strip() for ln in path.read_text(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    length_unit, angle_deg = 1.0, True
    root = {"order": ("tx", "ty", "tz", "rx", "ry", "rz"), "axis": "xyz", "position": np.zeros(3),
            "orientation": np.zeros(3)}
    bones: dict[str, dict] = {}
    children: dict[str, list[str]] = {}
    section = None
    cur: dict | None = None
    try:
        for ln in lines:
            if ln.startswith(":"):
                parts = ln.split()
                section = parts[0][1:]
                continue
            parts = ln.split()
            key = parts[0].lower()
            if section == "units":
                if key == "length":
                    length_unit = float(parts[1])
                elif key == "angle":
                    angle_deg = parts[1].lower().startswith("deg")
            elif section == "root":
                if key == "order":
                    root["order"] = tuple(p.lower() for p in parts[1:])
                elif key == "axis":
                    root["axis"] = parts[1].lower()
                elif key == "position":
                    root["position"] = np.array([float(v) for v in parts[1:4]])
                elif key == "orientation":
                    root["orientation"] = np.array([float(v) for v in parts[1:4]])
            elif section == "bonedata":
                if key == "begin":
                    cur = {"dof": (), "axis": np.zeros(3), "axis_order": "xyz"}
                elif key == "end":
                    if cur is None or "name" not in cur:
                        raise DataError(f"{path}: a bone without a name")
                    bones[cur["name"]] = cur
                    cur = None
                elif cur is not None:
                    if key == "name":
                        cur["name"] = parts[1]
                    elif key == "direction":
                        cur["direction"] = np.array([float(v) for v in parts[1:4]])
                    elif key == "length":
                        cur["length"] = float(parts[1])
                    elif key == "axis":
                        cur["axis"] = np.array([float(v) for v in parts[1:4]])
                        cur["axis_order"] = parts[4].lower() if len(parts) > 4 else "xyz"
                    elif key == "dof":
                        cur["dof"] = tuple(p.lower() for p in parts[1:])
            elif section == "hierarchy":
                if key in ("begin", "end"):
                    continue
                children.setdefault(parts[0], []).extend(parts[1:])
    except (IndexError, ValueError) as e:
        raise DataError(f"{path}: malformed ASF ({e})") from e
    if not bones or "root" not in children:
        raise DataError(f"{path}: not an Acclaim ASF skeleton (no bonedata or hierarchy)")
    for b, d in bones.items():
        if "direction" not in d or "length" not in d:
            raise DataError(f"{path}: bone {b} lacks direction or length")
    for kids in children.values():
        for k in kids:
            if k not in bones:
                raise DataError(f"{path}: hierarchy names unknown bone {k!r}")
    return AsfSkeleton(str(path), length_unit, angle_deg, root["order"], root["axis"],
                       root["position"], root["orientation"], bones, children)


def read_amc(path: str | os.PathLike, skeleton: AsfSkeleton, fps: float = 120.0) -> SourceMotion:
    """Parse an AMC motion for ``skeleton`` and run Acclaim FK -> bone start/end positions."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if fps <= 0:
        raise DataError(f"{path}: fps = {fps}: must be positive")
    frames: list[dict[str, list[float]]] = []
    try:
        for ln in path.read_text(errors="replace").splitlines():
            ln = ln.strip()
            if not ln or ln.startswith("#") or ln.startswith(":"):
                continue
            parts = ln.split()
            if len(parts) == 1 and parts[0].isdigit():
                frames.append({})
                continue
            if not frames:
                raise DataError(f"{path}: motion values before the first frame number")
            frames[-1][parts[0]] = [float(v) for v in parts[1:]]
    except ValueError as e:
        raise DataError(f"{path}: malformed AMC ({e})") from e
    if not frames:
        raise DataError(f"{path}: no frames")
    sk = skeleton
    T = len(frames)
    needed = {"root": len(sk.root_order)}
    needed.update({b: len(d["dof"]) for b, d in sk.bones.items() if d["dof"]})
    arrays = {}
    for b, n in needed.items():
        arr = np.zeros((T, n))
        for t, fr in enumerate(frames):
            v = fr.get(b)
            if v is None or len(v) != n:
                raise DataError(f"{path}: frame {t + 1}: bone {b!r} has "
                                f"{'no values' if v is None else f'{len(v)} values'}, expected {n}"
                                f" (truncated file or a different skeleton than {Path(sk.path).name})")
            arr[t] = v
        arrays[b] = arr
    # root
    ro = sk.root_order
    rv = arrays["root"]
    trans = np.stack([rv[:, ro.index(k)] if k in ro else np.zeros(T) for k in ("tx", "ty", "tz")], -1)
    rot_keys = [k for k in ro if k.startswith("r")]
    M_root = _acclaim_euler("".join(k[1] for k in rot_keys), rv[:, [ro.index(k) for k in rot_keys]]) \
        if rot_keys else np.broadcast_to(np.eye(3), (T, 3, 3))
    C_root = _acclaim_euler(sk.root_axis, sk.root_orientation)
    W = {"root": C_root @ M_root @ C_root.T}
    end = {"root": trans + sk.root_position}
    start: dict[str, np.ndarray] = {}
    order = []
    queue = ["root"]
    while queue:
        b = queue.pop(0)
        for c in sk.children.get(b, []):
            order.append((c, b))
            queue.append(c)
    for b, parent in order:
        d = sk.bones[b]
        C = _acclaim_euler(d["axis_order"], d["axis"])
        if d["dof"]:
            M = _acclaim_euler("".join(k[1] for k in d["dof"]), arrays[b])
        else:
            M = np.broadcast_to(np.eye(3), (T, 3, 3))
        W[b] = W[parent] @ C @ M @ C.T
        start[b] = end[parent]
        end[b] = end[parent] + W[b] @ (d["direction"] / np.linalg.norm(d["direction"]) * d["length"])
    names = ["root"] + [b for b, _ in order] + [f"{b}_end" for b, _ in order]
    pos = np.stack([end["root"]] + [start[b] for b, _ in order] + [end[b] for b, _ in order], 1)
    return SourceMotion(tuple(names), pos, float(fps), str(path))


def acclaim_unit_m(skeleton: AsfSkeleton) -> float:
    """Metres per ASF length unit: lengths are in 1/l inches for ``:units length l``."""
    return _INCH_M / skeleton.length_unit


# --------------------------------------------------------------------------- mapping by name
#: H36M-17 joint -> source joint names that mean it (normalised: lower case, alphanumerics only).
ALIASES: dict[str, tuple[str, ...]] = {
    "r_hip": ("rightupleg", "rfemur", "rightthigh", "rthigh", "righthip", "rhip"),
    "r_knee": ("rightleg", "rtibia", "rightshin", "rshin", "rightknee", "rknee"),
    "r_ankle": ("rightfoot", "rfoot", "rightankle", "rankle"),
    "l_hip": ("leftupleg", "lfemur", "leftthigh", "lthigh", "lefthip", "lhip"),
    "l_knee": ("leftleg", "ltibia", "leftshin", "lshin", "leftknee", "lknee"),
    "l_ankle": ("leftfoot", "lfoot", "leftankle", "lankle"),
    "spine": ("spine", "upperback", "chest", "spine1"),
    "thorax": ("lowerneck", "neck", "thorax"),
    "neck_nose": ("head",),
    "head_top": ("headend", "headtop", "siteend", "headsite"),
    "l_shoulder": ("leftarm", "lhumerus", "leftupperarm", "leftshoulder", "lshoulder"),
    "l_elbow": ("leftforearm", "lradius", "leftelbow", "lelbow"),
    "l_wrist": ("lefthand", "lhand", "leftwrist", "lwrist"),
    "r_shoulder": ("rightarm", "rhumerus", "rightupperarm", "rightshoulder", "rshoulder"),
    "r_elbow": ("rightforearm", "rradius", "rightelbow", "relbow"),
    "r_wrist": ("righthand", "rhand", "rightwrist", "rwrist"),
}


def _norm(name: str) -> str:
    n = name.lower()
    n = n.split(":")[-1]  # mixamorig:LeftArm
    return re.sub(r"[^a-z0-9]", "", n)


def mapping_indices(names, path: str = "") -> dict[str, int]:
    """H36M joint -> index into ``names`` (pelvis excluded: it is the hips' midpoint).

    Raises DataError naming the file and the joints it cannot find (an unknown skeleton).
    """
    pos = {}
    for i, n in enumerate(names):
        pos.setdefault(_norm(n), i)
    out, missing = {}, []
    for joint, aliases in ALIASES.items():
        idx = next((pos[a] for a in aliases if a in pos), None)
        if idx is None:
            missing.append(joint)
        else:
            out[joint] = idx
    if missing:
        raise DataError(f"{path}: unknown skeleton: no source joint for {', '.join(missing)} "
                        f"(joints: {', '.join(names[:40])}{' ...' if len(names) > 40 else ''})")
    return out


def to_h36m17(motion: SourceMotion, unit_m: float, up: str = "y") -> np.ndarray:
    """Source joints -> H36M-17 (T, 17, 3) metres, Z up. ``up='y'``: (x, y, z) -> (x, -z, y)."""
    idx = mapping_indices(motion.names, motion.path)
    p = motion.positions
    out = np.zeros((p.shape[0], len(JOINT_NAMES), 3))
    for j, name in enumerate(JOINT_NAMES):
        if name == "pelvis":
            out[:, j] = 0.5 * (p[:, idx["l_hip"]] + p[:, idx["r_hip"]])
        else:
            out[:, j] = p[:, idx[name]]
    out = out * unit_m
    if up == "y":
        out = np.stack([out[..., 0], -out[..., 2], out[..., 1]], -1)
    elif up != "z":
        raise ValueError(f"up = {up!r}: expected 'y' or 'z'")
    return out


# --------------------------------------------------------------------------- takes
def read_npz_takes(path: str | os.PathLike, subjects=None) -> list[Take]:
    """The shared npz -> one Take per clip (action = ``<activity>_<n>``, n counting the
    subject's clips of that activity from 1), metres."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            pos = z["positions"].astype(np.float64) / 1000.0
            clip, subj, act = z["clip_id"], z["subject"].astype(str), z["activity"].astype(str)
            fps = float(z["fps"])
            names = tuple(str(n) for n in z["joint_names"])
    except (KeyError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a pose3d real-mocap npz ({e})") from e
    if names != JOINT_NAMES:
        raise DataError(f"{path}: joint_names {names} are not H36M-17")
    if fps <= 0:
        raise DataError(f"{path}: fps = {fps}: must be positive")
    takes, count = [], {}
    for c in np.unique(clip):
        m = clip == c
        s, a = subj[m][0], act[m][0]
        if subjects is not None and s not in subjects:
            continue
        count[(s, a)] = count.get((s, a), 0) + 1
        takes.append(Take(s, f"{a}_{count[(s, a)]}", pos[m], fps))
    return takes


def read_take_file(path: str | os.PathLike, subject: str, bvh_unit_m: float = _INCH_M / 0.45,
                   asf: str | os.PathLike | None = None, amc_fps: float = 120.0) -> Take:
    """One .bvh or .amc file (with its ``asf``) -> Take (action = the file stem)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".bvh":
        mo = read_bvh(path)
        pos = to_h36m17(mo, bvh_unit_m)
    elif path.suffix.lower() == ".amc":
        if asf is None:
            raise DataError(f"{path}: an AMC file needs its ASF skeleton (none found beside it)")
        sk = read_asf(asf)
        mo = read_amc(path, sk, amc_fps)
        pos = to_h36m17(mo, acclaim_unit_m(sk))
    else:
        raise DataError(f"{path}: unsupported mocap format {path.suffix!r} (expected .bvh, .amc, .npz)")
    return Take(subject, path.stem, pos, mo.fps)


def load_takes(path: str | os.PathLike, subjects=None, bvh_unit_m: float = _INCH_M / 0.45) -> list[Take]:
    """Takes from the shared npz, or from a folder ``<subject>/<take>.bvh|.amc`` (AMC files use
    the single .asf of their folder). ``subjects`` filters (and must all be present)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{path}: expected the real-mocap .npz or a folder of <subject>/ takes")
        takes = read_npz_takes(path, subjects)
    else:
        takes = []
        for sdir in sorted(p for p in path.iterdir() if p.is_dir()):
            if subjects is not None and sdir.name not in subjects:
                continue
            asfs = sorted(sdir.glob("*.asf"))
            for f in sorted(sdir.iterdir()):
                if f.suffix.lower() in (".bvh", ".amc"):
                    takes.append(read_take_file(f, sdir.name, bvh_unit_m, asfs[0] if asfs else None))
    if subjects is not None:
        missing = sorted(set(subjects) - {t.subject for t in takes})
        if missing:
            raise DataError(f"{path}: no takes for subject(s) {', '.join(missing)}")
    return takes


# --------------------------------------------------------------------------- resampling
def resample(positions: np.ndarray, fps_in: float, fps_out: float) -> np.ndarray:
    """Resample (T, J, 3) from ``fps_in`` to ``fps_out`` by linear interpolation in time.

    Output frame k is at time k / fps_out; when fps_in / fps_out is (within 1e-6) an integer
    n, this is exactly every n-th frame. Raises ValueError for non-positive rates.
    """
    if fps_in <= 0 or fps_out <= 0:
        raise ValueError(f"resample: fps must be positive (got {fps_in} -> {fps_out})")
    T = positions.shape[0]
    ratio = fps_in / fps_out
    n_out = int(np.floor((T - 1) / ratio + 1e-9)) + 1
    src = np.arange(n_out) * ratio
    near = np.abs(src - np.round(src)) < 1e-6
    src = np.where(near, np.round(src), src)
    i0 = np.clip(np.floor(src).astype(int), 0, T - 1)
    i1 = np.minimum(i0 + 1, T - 1)
    w = (src - i0)[:, None, None]
    return positions[i0] * (1 - w) + positions[i1] * w


def level_and_centre(positions: np.ndarray, ankle_height: float = 0.08) -> np.ndarray:
    """Put a take on the studio floor: the lowest ankles (2nd percentile) at ``ankle_height``
    above z = 0, and the mean pelvis at the volume centre (x = y = 0). (T, J, 3) metres."""
    p = positions.copy()
    ank = np.minimum(p[:, JOINT_NAMES.index("l_ankle"), 2], p[:, JOINT_NAMES.index("r_ankle"), 2])
    p[..., 2] -= np.percentile(ank, 2) - ankle_height
    p[..., :2] -= p[:, 0, :2].mean(0)
    return p
