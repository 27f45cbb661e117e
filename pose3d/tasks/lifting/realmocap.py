"""Real optical mocap (an npz on the Human3.6M 17-joint skeleton, millimetres, Z up) as lifting
data, alone or together with the studio's mocap: the footage route's lifter trained on more
than the studio's motion.

    mocap, cams = mixed_dataset(tmp, npz="real_mocap_h36m17.npz", test_subjects=["cmu01"],
                                studio_mocap="data/studio/mocap.h5",
                                studio_cameras="data/studio/cameras.json")
    run_lift("temporal", section, base, mocap=mocap, cameras=cams, ...)

Real mocap has no images, so every real clip is filmed by a Human3.6M-like virtual rig
(:func:`h36m_like_rig`) and the lifter trains on its GT 2D projections; the studio's subjects
keep their own cameras. :func:`train_footage_lifter` is ``p3d train-lifter``.

The npz holds ``positions`` (N, 17, 3) mm, ``clip_id``, ``subject``, ``activity``,
``frame_in_clip`` per frame and ``fps`` (the layout of ``../shared/data/real-mocap``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from pose3d.data.io import DataError, Sequence, load_cameras, read_mocap, save_cameras, write_mocap
from pose3d.geometry.camera import Camera
from pose3d.geometry.rotations import look_at
from pose3d.skeleton import FLIP_PERM, JOINT_INDEX, PARENTS

#: re-proportioned copies of each real clip the footage lifter trains on (p3d train-lifter's
#: default; chosen on an inner LOSO validation, reports/benchmarks/lifting.md, sessions 10-11)
BONE_COPIES = 8
#: their bone factors g * u with g, u ~ U(1 - BONE_SPREAD, 1 + BONE_SPREAD) (same validation)
BONE_SPREAD = 0.15

#: the npz arrays :func:`real_mocap_sequences` reads
NPZ_KEYS = ("positions", "clip_id", "subject", "activity", "frame_in_clip", "fps")


def h36m_like_rig(n_cameras: int = 4, distance: float = 4.5, height: float = 1.5,
                  size: int = 1000, focal: float = 1145.0, yaw0_deg: float = 45.0) -> dict[str, Camera]:
    """Cameras on a circle around the origin (world Z up), aimed at (0, 0, 1)."""
    cams = {}
    K = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1]])
    dist = np.array([-0.2, 0.24, -0.001, -0.001, -0.0016])
    for i in range(n_cameras):
        a = np.deg2rad(yaw0_deg + 360.0 * i / n_cameras)
        eye = torch.tensor([distance * np.cos(a), distance * np.sin(a), height], dtype=torch.float64)
        R, t = look_at(eye, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
        cams[f"cam{i}"] = Camera(K=K, dist=dist, R=R.numpy(), t=t.numpy(), width=size, height=size,
                                 name=f"cam{i}")
    return cams


def load_real_mocap(npz: str | Path) -> dict[str, np.ndarray]:
    """The npz's arrays (:data:`NPZ_KEYS`, plus ``reliable_joint_mask`` when present); a missing
    file or key is a DataError naming it."""
    npz = Path(npz)
    if not npz.exists():
        raise DataError(f"{npz}: real mocap npz not found")
    with np.load(npz, allow_pickle=False) as d:
        missing = [k for k in NPZ_KEYS if k not in d.files]
        if missing:
            raise DataError(f"{npz}: missing array(s) {missing} (needs {', '.join(NPZ_KEYS)})")
        out = {k: d[k] for k in d.files if k in NPZ_KEYS + ("reliable_joint_mask",)}
    if out["positions"].ndim != 3 or out["positions"].shape[1:] != (17, 3):
        raise DataError(f"{npz}: positions has shape {out['positions'].shape}, expected (N, 17, 3) mm")
    return out


def real_mocap_sequences(npz: str | Path, test_subjects=()) -> list[Sequence]:
    """One :class:`Sequence` per clip (metres, each clip's mean root moved to x = y = 0 so the rig
    sees it); split "test" for ``test_subjects``, else "train"."""
    d = load_real_mocap(npz)
    subjects = set(np.unique(d["subject"]).tolist())
    unknown = sorted(set(test_subjects) - subjects)
    if unknown:
        raise DataError(f"{npz}: subject(s) {unknown} not in the file (subjects: {sorted(subjects)})")
    pos = d["positions"].astype(np.float64) / 1000.0
    seqs = []
    for cid in np.unique(d["clip_id"]):
        rows = np.flatnonzero(d["clip_id"] == cid)
        rows = rows[np.argsort(d["frame_in_clip"][rows])]
        p = pos[rows].copy()
        p[..., :2] -= p[:, 0, :2].mean(0)
        subj = str(d["subject"][rows[0]])
        act = f"{d['activity'][rows[0]]}_{int(cid):03d}"
        seqs.append(Sequence(subj, act, p.astype(np.float32), float(d["fps"]),
                             "test" if subj in test_subjects else "train"))
    return seqs


def scaled_copies(seqs: list[Sequence], scales=(1.0,)) -> list[Sequence]:
    """Body-size augmentation: each "train" clip once per factor in ``scales``, its positions
    multiplied by the factor (about the floor point under the clip's mean root: the clip is
    centred, Z up, floor at 0, so the floor stays the floor), action ``<action>_x<factor>``;
    "test" clips once, unscaled. ``scales = (1.0,)`` returns ``seqs`` unchanged."""
    scales = tuple(float(f) for f in scales)
    if not scales or any(not (0.5 <= f <= 2.0) for f in scales):
        raise DataError(f"real-mocap scales {scales}: need one or more factors in [0.5, 2]")
    if scales == (1.0,):
        return list(seqs)
    out = []
    for q in seqs:
        if q.split != "train":
            out.append(q)
            continue
        out += [dataclasses.replace(q, action=f"{q.action}_x{f:.3f}",
                                    positions_world=(q.positions_world * np.float32(f)).astype(np.float32))
                for f in scales]
    return out


def rescale_bones(pos: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Re-target ``pos`` (T, 17, 3) to new proportions: bone (parent -> j) of every frame
    multiplied by ``factors[j]`` (17,; the root's entry unused) by forward kinematics from the
    root, which stays where it is; bone directions are kept. The clip is then shifted vertically
    by one constant so that its lowest ankle height over the clip is the original's."""
    out = pos.astype(np.float64).copy()
    for j, par in enumerate(PARENTS):
        if par >= 0:  # parents come before their children in H36M-17 order
            out[:, j] = out[:, par] + factors[j] * (pos[:, j] - pos[:, par])
    ankles = [JOINT_INDEX["r_ankle"], JOINT_INDEX["l_ankle"]]
    out[..., 2] += pos[:, ankles, 2].min() - out[:, ankles, 2].min()
    return out.astype(np.float32)


def proportion_copies(seqs: list[Sequence], copies: int = 0, spread: float = 0.1, size: float = 0.1,
                      seed: int = 0) -> list[Sequence]:
    """Body-proportion augmentation: ``seqs`` plus, for each "train" clip, ``copies`` re-targeted
    copies (:func:`rescale_bones`, action ``<action>_b<k>``), copy k's bone j scaled by
    g_k * u_kj with g_k ~ U(1 - size, 1 + size) (overall size) and u_kj ~ U(1 - spread, 1 + spread)
    (proportions; a left bone and its right mirror share u). Draws are seeded by (seed, clip
    index in ``seqs``), so a clip's copies do not depend on the other clips."""
    if copies < 0 or not (0 <= spread < 1) or not (0 <= size < 1):
        raise DataError(f"proportion copies {copies}, spread {spread}, size {size}: need copies >= 0 "
                        "and spread, size in [0, 1)")
    out = []
    for i, q in enumerate(seqs):
        out.append(q)
        if q.split != "train" or copies == 0:
            continue
        rng = np.random.default_rng([seed, i])
        for k in range(copies):
            g = rng.uniform(1 - size, 1 + size)
            u = rng.uniform(1 - spread, 1 + spread, len(PARENTS))
            mirror = np.asarray(FLIP_PERM)
            u = np.where(np.arange(len(u)) <= mirror, u, u[mirror])  # a right bone takes its left's u
            out.append(dataclasses.replace(q, action=f"{q.action}_b{k}",
                                           positions_world=rescale_bones(q.positions_world, g * u)))
    return out


def mixed_dataset(out_dir: str | Path, npz: str | Path, test_subjects=(), studio_mocap=None,
                  studio_cameras=None, real_scales=(1.0,), bone_copies=0, seed=0,
                  bone_spread: float = 0.1) -> tuple[Path, Path]:
    """Write ``out_dir/mocap.h5`` + ``cameras.json``: the real mocap's clips (virtual rig; split
    "test" for ``test_subjects``; each train clip once per factor of ``real_scales``, see
    :func:`scaled_copies`, plus ``bone_copies`` re-proportioned copies, see
    :func:`proportion_copies`, ``bone_spread`` their spread and size) and, when given, the studio's
    sequences with their own cameras and splits. Returns the two paths."""
    seqs = scaled_copies(real_mocap_sequences(npz, test_subjects), real_scales)
    seqs = proportion_copies(seqs, bone_copies, spread=bone_spread, size=bone_spread, seed=seed)
    rig = h36m_like_rig()
    cams = {}
    if studio_mocap is not None:
        studio = read_mocap(studio_mocap)
        studio_cams = load_cameras(studio_cameras)
        clash = sorted({q.subject for q in studio} & {q.subject for q in seqs})
        if clash:
            raise DataError(f"{studio_mocap}: subject(s) {clash} also in {npz}")
        for s in sorted({q.subject for q in studio}):
            if s not in studio_cams:
                raise DataError(f"{studio_cameras}: no cameras for subject {s} of {studio_mocap}")
            cams[s] = studio_cams[s]
        # every subject of a cameras.json has the same camera names: the rig takes the studio's
        names = sorted(next(iter(cams.values())))
        rig = {n: dataclasses.replace(c, name=n) for n, c in zip(names, h36m_like_rig(len(names)).values())}
        seqs = list(studio) + seqs
    cams.update({s: rig for s in sorted({q.subject for q in seqs}) if s not in cams})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_mocap(out_dir / "mocap.h5", seqs)
    save_cameras(out_dir / "cameras.json", cams)
    return out_dir / "mocap.h5", out_dir / "cameras.json"


def train_footage_lifter(out_dir, *, npz, studio_mocap=None, studio_cameras=None, params=None, base=None,
                         real_scales=(1.0,), bone_copies=BONE_COPIES, bone_spread=BONE_SPREAD,
                         progress: bool = True):
    """Train the temporal lifter on the studio's train subjects + every real-mocap subject (GT 2D)
    and save it to ``out_dir`` (config.json + model.pt, what ``p3d infer --lifter`` loads).
    Scored on the studio's test subjects when a studio is given, else on the last real subject
    (then held out of training). ``params``: a Temporal section (default: params.yaml's, with
    ``input_2d = gt``); ``real_scales``: body-size copies of the real clips
    (:func:`scaled_copies`); ``bone_copies``: re-proportioned copies of each real clip
    (:func:`proportion_copies`, seeded by ``base.seed``; :data:`BONE_COPIES`) with factors in
    1 +- ``bone_spread`` (:data:`BONE_SPREAD`). Returns :class:`~pose3d.tasks.lifting.pipeline.LiftResult`."""
    from pose3d.runtime import params as P
    from pose3d.tasks.lifting.pipeline import run_lift
    from pose3d.tasks.lifting.data import split_of

    p = dataclasses.replace(params or P.Temporal(), input_2d="gt")
    base = base or P.Base(mlflow=False)
    with tempfile.TemporaryDirectory() as tmp:
        real = sorted({q.subject for q in real_mocap_sequences(npz)})
        held = [] if studio_mocap is not None else real[-1:]
        mocap, cams = mixed_dataset(tmp, npz, held, studio_mocap, studio_cameras, real_scales,
                                    bone_copies, base.seed, bone_spread)
        train, test = split_of(mocap, "train"), split_of(mocap, "test")
        if not test:
            raise DataError(f"{studio_mocap}: no test subjects (split attrs) to score the lifter on")
        return run_lift("temporal", p, base, mocap=mocap, cameras=cams, model_dir=out_dir,
                        checkpoint=Path(tmp) / "checkpoint.pt", progress=progress,
                        train_subjects=train, test_subjects=test)
