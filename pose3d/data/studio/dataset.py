"""The studio dataset: sequences (procedural or real mocap), cameras per subject, videos.

``procedural_sequences`` and ``mocap_sequences`` give :class:`Take` records (the mocap.h5
sequence plus the dressed subject that renders it); ``make_cameras`` the rig per subject;
``render_videos`` films every take with every camera into ``<videos>/<subject>/<action>.<camera>.mp4``
in parallel processes (one job per take; frame k of every file shows pose k).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pose3d.data import mocap_readers as mr
from pose3d.data.io import DataError, Sequence, video_path
from pose3d.data.studio.anthropometry import Subject, make_subject, subject_from_bone_lengths
from pose3d.data.studio.motion import generate
from pose3d.data.studio.seeds import stable_seed
from pose3d.data.studio.render import CameraView, render_sequence
from pose3d.data.studio.rig import make_rig
from pose3d.geometry.camera import Camera

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Take:
    sequence: Sequence
    subject: Subject


def procedural_sequences(subjects: dict[str, str], actions, seconds: float, fps: float,
                         seed: int) -> list[Take]:
    """One procedural take per (subject, action); positions float32 metres, Z up."""
    if fps <= 0:
        raise DataError(f"studio.fps = {fps}: must be positive")
    takes = []
    for name, split in subjects.items():
        subj = make_subject(name, seed)
        for action in actions:
            m = generate(subj, action, seconds, fps, seed)
            takes.append(Take(Sequence(name, action, m.positions.astype(np.float32), float(fps), split), subj))
    return takes


def mocap_sequences(path: str | os.PathLike, subjects: dict[str, str], actions, fps: float,
                    max_seconds: float, seed: int, bvh_unit_m: float = 0.0564444) -> list[Take]:
    """Real takes from the shared npz or a ``<subject>/<take>.bvh|.amc`` folder (see
    :mod:`pose3d.data.mocap_readers`), resampled to ``fps``, levelled (lowest ankle at its
    ankle height above z = 0) and centred on the volume. Errors name the file."""

    if fps <= 0:
        raise DataError(f"studio.fps = {fps}: must be positive")
    raw = mr.load_takes(path, subjects=list(subjects), bvh_unit_m=bvh_unit_m)
    takes = []
    for t in raw:
        if actions and t.action not in actions:
            continue
        pos = mr.resample(t.positions, t.fps, fps)
        pos = pos[: max(int(round(max_seconds * fps)), 2)]
        pos = mr.level_and_centre(pos)
        subj = subject_from_bone_lengths(t.subject, pos, seed)
        takes.append(Take(Sequence(t.subject, t.action, pos.astype(np.float32), float(fps),
                                   subjects[t.subject]), subj))
    if not takes:
        raise DataError(f"{path}: no takes for subjects {list(subjects)}"
                        + (f" and actions {list(actions)}" if actions else ""))
    return takes


def make_cameras(subjects, num_cameras: int, width: int, height: int, distance: float,
                 camera_height: float, seed: int) -> dict[str, dict[str, Camera]]:
    """{subject: {camera: Camera}}: the same rig with a small per-subject change."""
    return {s: make_rig(s, num_cameras, width, height, distance, camera_height, seed=seed) for s in subjects}


# --------------------------------------------------------------------------- rendering jobs
_VIEWS: dict = {}


def _views_for(subject: str, cams: dict[str, Camera], room_seed: int):

    key = subject
    if key not in _VIEWS:
        if len(_VIEWS) >= 2:
            _VIEWS.pop(next(iter(_VIEWS)))
        _VIEWS[key] = {n: CameraView(c, room_seed) for n, c in cams.items()}
    return _VIEWS[key]


def _render_job(args) -> tuple[str, str, int, float]:
    take, cams, videos_dir, room_seed, seed = args

    try:
        import cv2
        cv2.setNumThreads(1)
    except Exception:  # pragma: no cover
        pass
    t0 = time.perf_counter()
    seq = take.sequence
    views = _views_for(seq.subject, cams, room_seed)
    paths = {n: video_path(videos_dir, seq.subject, seq.action, n) for n in cams}
    n = render_sequence(seq.positions_world.astype(np.float64), take.subject, views, paths, seq.fps,
                        stable_seed(seed, "light", seq.subject, seq.action))
    return seq.subject, seq.action, n * len(cams), time.perf_counter() - t0


def render_videos(takes: list[Take], cameras: dict[str, dict[str, Camera]], videos_dir: str | os.PathLike,
                  seed: int, workers: int = 0, progress=None) -> dict:
    """Film every take with its subject's cameras; returns {'frames', 'seconds', 'fps'}.

    ``workers`` processes (0 = all cores); ``progress`` an optional callable(n_done_jobs).
    """
    room_seed = stable_seed(seed, "room")
    jobs = [(t, cameras[t.sequence.subject], Path(videos_dir), room_seed, seed) for t in takes]
    workers = workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    frames = 0
    if workers == 1 or len(jobs) == 1:
        results = map(_render_job, jobs)
        for r in results:
            frames += r[2]
            if progress:
                progress(1)
    else:
        chunk = 1  # takes are ordered by subject, so neighbouring jobs share cached views
        # fork: the workers only run numpy/OpenCV (no torch), and start without re-importing
        with get_context("fork" if os.name == "posix" else "spawn").Pool(workers, initializer=_worker_init) as pool:
            for r in pool.imap_unordered(_render_job, jobs, chunksize=chunk):
                frames += r[2]
                if progress:
                    progress(1)
    dt = time.perf_counter() - t0
    return {"frames": frames, "seconds": dt, "fps": frames / max(dt, 1e-9)}


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch
        torch.set_num_threads(1)
    except Exception:  # pragma: no cover
        pass
