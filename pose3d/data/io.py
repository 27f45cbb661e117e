"""File contracts between stages: atomic writes, Parquet tables, mocap HDF5, cameras JSON.

Every stage writes through these helpers so that a failed stage never leaves a half-written
file (write to a temporary sibling, then ``os.replace``), and every table carries its joint
names and units in metadata.

Parquet layout (documented once, here):
  * key columns: ``subject`` (str), ``action`` (str), ``camera`` (str, may be absent for
    world-frame tables), ``frame`` (int64, 0-based index into the sequence of mocap.h5);
  * point columns are fixed-size float32 lists, flattened row-major from ``(J, C)``:
    ``keypoints_px`` (J*2), ``scores`` (J), ``joints_3d`` (J*3, metres), ``gt_2d`` (J*2),
    ``bbox_xyxy`` (4), ``crop_to_image`` (6 = the 2x3 affine row-major);
  * schema metadata (key ``pose3d``): a JSON object with at least ``joint_names``; tables add
    their own keys (``units``, ``frame`` = camera|world|reference_camera, ``model_hash``...).

mocap.h5 layout: group ``/<subject>/<action>`` with dataset ``positions_world`` (T, J, 3)
float32 metres; group attrs ``fps`` (float), ``split`` ("train"|"test"); file attrs
``joint_names`` and ``units`` = "m".

cameras.json layout: ``{"convention": ..., "units": "m", "subjects": {subject: {camera:
{"K": 3x3, "dist": [k1,k2,p1,p2,k3], "R": 3x3, "t": [3], "width": W, "height": H}}}}``
with x_cam = R @ x_world + t.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pose3d.geometry.camera import Camera
from pose3d.skeleton import JOINT_NAMES

META_KEY = b"pose3d"


class DataError(ValueError):
    """Bad or inconsistent input data; the message names the file/key/value."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    >>> with atomic_path("out.parquet") as tmp: write(tmp)   # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix + ".tmp",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory: build it in a temp sibling, then swap it in."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove what a killed writer of ``path`` left: the temporary siblings of
    :func:`atomic_path` / :func:`atomic_dir` (``.<name>.*``) and, for a directory, the
    temporary files inside it (``.*.tmp``, e.g. a checkpoint being written). Returns them."""
    path = Path(path)
    found = list(path.parent.glob(f".{path.name}.*")) if path.parent.is_dir() else []
    if path.is_dir():
        found += list(path.glob(".*.tmp"))
    for p in found:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def is_timing(key: str) -> bool:
    """Wall-clock figures (seconds, rates): they differ on every run, so they stay out of the
    metrics DVC compares."""
    return "seconds" in key or key.endswith(("_per_s", "_fps")) or key == "fps"


def headline(metrics: Mapping, keys) -> dict:
    """The DVC metrics file's share of a stage's numbers: ``keys`` in that order, those present.

    A DVC metrics file holds the few numbers a person compares across experiments (`dvc metrics
    diff`, `dvc exp show`); the details (per joint, per action, diagnostics) go to the stage's
    MLflow run and to DVC plots, and no number is stored in two metrics files.
    """
    return {k: metrics[k] for k in keys if k in metrics}


def write_metrics(path: str | os.PathLike, timings_path: str | os.PathLike, metrics: Mapping,
                  keys=None) -> None:
    """Write a stage's metrics JSON (only ``keys`` when given: :func:`headline`) without its
    timings, which go to ``timings_path`` (dvc.yaml names both): `dvc metrics diff` then shows
    what changed in the results, not the machine's load."""
    kept = metrics if keys is None else headline(metrics, keys)
    write_json(path, {k: v for k, v in kept.items() if not is_timing(k)})
    write_json(timings_path, {k: v for k, v in metrics.items() if is_timing(k)})


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_digest(*paths: str | os.PathLike | None, length: int = 16) -> str:
    """SHA-256 (hex, first ``length`` characters) of the contents of ``paths`` in order; a
    None or missing path adds nothing. One file with ``length=64`` is its plain SHA-256."""
    h = hashlib.sha256()
    for p in paths:
        if p is not None and Path(p).exists():
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:length]


# --------------------------------------------------------------------------- Parquet tables
def points_column(arr: np.ndarray) -> pa.FixedSizeListArray:
    """(N, *dims) float array -> fixed-size float32 list column of width prod(dims)."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    n = arr.shape[0]
    width = int(np.prod(arr.shape[1:])) if arr.ndim > 1 else 1
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), width) if n else \
        pa.array([], type=pa.list_(pa.float32(), width))


def column_points(table: pa.Table | pd.DataFrame, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`points_column`: a list column -> (N, *shape) float32."""
    if isinstance(table, pd.DataFrame):
        col = table[name]
        if len(col) == 0:
            return np.zeros((0, *shape), np.float32)
        return np.stack(col.to_numpy()).astype(np.float32).reshape(-1, *shape)
    col = table.column(name).combine_chunks()
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.astype(np.float32).reshape(-1, *shape)


def write_table(path: str | os.PathLike, columns: Mapping[str, np.ndarray | list | pa.Array],
                metadata: Mapping | None = None) -> None:
    """Write a Parquet table atomically. Multi-dim numpy arrays become fixed-size list columns.

    ``metadata`` (JSON-serialisable) is stored under the ``pose3d`` schema key; joint names
    default to H36M-17.
    """
    arrays = {}
    for k, v in columns.items():
        if isinstance(v, np.ndarray) and v.ndim > 1:
            arrays[k] = points_column(v)
        elif isinstance(v, pa.Array):
            arrays[k] = v
        else:
            arrays[k] = pa.array(np.asarray(v) if not isinstance(v, list) else v)
    table = pa.table(arrays)
    meta = {"joint_names": list(JOINT_NAMES)}
    meta.update(dict(metadata or {}))
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> tuple[pa.Table, dict]:
    """Read a pose3d Parquet table -> (arrow table, metadata dict). Errors name the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{path}: not a readable Parquet file ({e})") from e
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
    if raw is None:
        raise DataError(f"{path}: missing 'pose3d' schema metadata (not written by pose3d?)")
    return table, json.loads(raw)


# --------------------------------------------------------------------------- mocap.h5
@dataclass(frozen=True)
class Sequence:
    subject: str
    action: str
    positions_world: np.ndarray  # (T, J, 3) float32, metres
    fps: float
    split: str  # "train" | "test"


def write_mocap(path: str | os.PathLike, sequences: list[Sequence],
                joint_names: tuple[str, ...] = JOINT_NAMES) -> None:
    """Write mocap.h5 atomically (see module docstring). Deterministic bytes for equal input."""
    with atomic_path(path) as tmp:
        # track_order + fixed object times keep the bytes reproducible
        with h5py.File(tmp, "w", track_order=True, libver=("earliest", "v110")) as f:
            f.attrs["joint_names"] = np.array(joint_names, dtype=h5py.string_dtype())
            f.attrs["units"] = "m"
            for s in sequences:
                if s.positions_world.ndim != 3 or s.positions_world.shape[1:] != (len(joint_names), 3):
                    raise DataError(f"{s.subject}/{s.action}: positions_world has shape "
                                    f"{s.positions_world.shape}, expected (T, {len(joint_names)}, 3)")
                g = f.require_group(s.subject).create_group(s.action, track_order=True)
                g.create_dataset("positions_world", data=s.positions_world.astype(np.float32),
                                 track_times=False)
                g.attrs["fps"] = float(s.fps)
                g.attrs["split"] = s.split


def read_mocap(path: str | os.PathLike, subjects: list[str] | None = None,
               split: str | None = None) -> list[Sequence]:
    """Read mocap.h5 -> list of :class:`Sequence` (optionally filtered by subject or split).
    Positions must be finite: a NaN joint is an error naming the sequence, frame and joint."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    out = []
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
    with f:
        names = tuple(str(n.decode() if isinstance(n, bytes) else n) for n in f.attrs.get("joint_names", []))
        if names and names != JOINT_NAMES:
            raise DataError(f"{path}: joint_names {names} differ from the H36M-17 order")
        for subj in f:
            if subjects is not None and subj not in subjects:
                continue
            for act in f[subj]:
                g = f[subj][act]
                if split is not None and g.attrs["split"] != split:
                    continue
                where = f"{path}: {subj}/{act}"
                try:
                    pos = np.asarray(g["positions_world"][()])
                except (KeyError, OSError) as e:
                    raise DataError(f"{where}: positions_world unreadable ({e})") from None
                if not np.issubdtype(pos.dtype, np.floating) or pos.ndim != 3 or pos.shape[1:] != (len(JOINT_NAMES), 3):
                    raise DataError(f"{where}: positions_world is {pos.dtype} {pos.shape}, expected float (T, 17, 3)")
                bad = np.argwhere(~np.isfinite(pos))
                if len(bad):
                    t, j, _ = bad[0]
                    raise DataError(f"{where}: positions_world has {len(bad)} non-finite values, first at frame "
                                    f"{t}, joint {JOINT_NAMES[j]} ({pos[t, j].tolist()})")
                out.append(Sequence(subj, act, pos, float(g.attrs["fps"]), str(g.attrs["split"])))
    return out


# --------------------------------------------------------------------------- cameras.json
def save_cameras(path: str | os.PathLike, cameras: Mapping[str, Mapping[str, Camera]]) -> None:
    """Write {subject: {camera_name: Camera}} as readable JSON (atomic)."""
    obj = {"convention": "x_cam = R @ x_world + t; dist = k1 k2 p1 p2 k3 (OpenCV)", "units": "m",
           "subjects": {s: {c: cam.to_dict() for c, cam in cams.items()} for s, cams in cameras.items()}}
    write_json(path, obj)


def load_cameras(path: str | os.PathLike) -> dict[str, dict[str, Camera]]:
    """Read cameras.json -> {subject: {camera_name: Camera}}; errors name file and key."""

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        obj = json.loads(path.read_text())
        subjects = obj["subjects"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a pose3d cameras file ({e!r})") from e
    out: dict[str, dict[str, Camera]] = {}
    for s, cams in subjects.items():
        out[s] = {}
        for c, d in cams.items():
            try:
                out[s][c] = Camera.from_dict(d, name=c)
            except (KeyError, ValueError, TypeError) as e:
                raise DataError(f"{path}: camera {s}/{c}: {e}") from e
    # every subject is filmed by the same rig: a camera missing for one subject is an error
    names = set().union(*(set(c) for c in out.values())) if out else set()
    for s, cams in out.items():
        missing = sorted(names - set(cams))
        if missing:
            raise DataError(f"{path}: subject {s} lacks camera(s) {missing} that other subjects have")
    return out


def video_path(videos_dir: str | os.PathLike, subject: str, action: str, camera: str,
               ext: str = ".mp4") -> Path:
    """``<videos_dir>/<subject>/<action>.<camera>.mp4`` (the studio layout)."""
    return Path(videos_dir) / subject / f"{action}.{camera}{ext}"
