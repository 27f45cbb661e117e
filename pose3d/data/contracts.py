"""The tables that pass between stages: one reader and one writer for each.

* **detections** (``data/detections_2d.parquet``, written by detect_2d or an import; read by
  the lifters, the triangulation, the figures and the VideoPose3D export): key columns
  subject, action, camera, frame; ``keypoints_px`` (J*2 full-image pixels, distorted as in the
  video) and ``scores`` (J); metadata ``joint_names``, ``units`` = "px", ``image_size`` and
  what made them (``model_hash``, ``model``).
* **predictions** (``data/predictions/<method>.parquet``, written by every 3D method, read by
  evaluate): key columns subject, action, camera ("" for a world-frame table), frame;
  ``joints_3d`` (J*3 metres) and optional extra columns (``root_3d``); metadata
  ``joint_names``, ``method``, ``coord_frame`` (camera | world | reference_camera),
  ``reference_camera`` (with reference_camera), ``root_relative``, ``units`` = "m".

One joint-order policy for both: joints are matched to H36M-17 **by name**. A detections file
must name every H36M-17 joint (a lifter or a triangulation cannot do without one); a
predictions file may lack some (pose-hg-3d's layout has no neck_nose): those come back NaN and
the evaluation leaves them out, but the root is required. The generic Parquet / HDF5 / JSON
helpers (atomic writes, point columns) are in :mod:`pose3d.data.io`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from pose3d.data.io import DataError, column_points, read_table, write_table
from pose3d.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS, ROOT, reorder

KEY_COLUMNS = ("subject", "action", "camera", "frame")
COORD_FRAMES = ("camera", "world", "reference_camera")


def to_h36m(points: np.ndarray, names, path, *, allow_missing: bool = False) -> np.ndarray:
    """(N, len(names), C) in the file's joint order -> (N, J, C) in H36M-17 order, by name.
    A joint the file does not name is an error naming the file and the joints, or NaN with
    ``allow_missing``."""
    names = tuple(names)
    if names == JOINT_NAMES:
        return points
    missing = [n for n in JOINT_NAMES if n not in names]
    if missing and not allow_missing:
        raise DataError(f"{path}: joint_names lack the H36M-17 joint(s) {missing} (has {list(names)})")
    if all(n not in JOINT_INDEX for n in names):
        raise DataError(f"{path}: none of joint_names {list(names)} is an H36M-17 joint name")
    return reorder(points, names, JOINT_NAMES)


def _keys(table, *, camera_optional: bool = False) -> pd.DataFrame:
    n = table.num_rows
    cols = set(table.column_names)
    col = lambda c, dtype: np.asarray(table.column(c).to_pylist(), dtype=dtype)  # noqa: E731
    return pd.DataFrame({
        "subject": col("subject", object).astype(str), "action": col("action", object).astype(str),
        "camera": (col("camera", object).astype(str) if "camera" in cols or not camera_optional
                   else np.full(n, "", dtype=object).astype(str)),
        "frame": col("frame", np.int64) if n else np.zeros(0, np.int64)})


def _require_columns(table, path, needed) -> None:
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing} (has {sorted(table.column_names)})")


def _strings(values) -> pa.Array:
    """A string column (typed even when empty)."""
    return pa.array([str(v) for v in values], type=pa.string())


def _sorted_rows(keys: pd.DataFrame) -> np.ndarray:
    """Row order by (subject, action, camera, frame)."""
    return np.lexsort(tuple(np.asarray(keys[c]) for c in reversed(KEY_COLUMNS)))


# --------------------------------------------------------------------------- detections
@dataclass(frozen=True)
class Detections:
    """2D detections in H36M-17 order; row i of every array is ``keys.iloc[i]``."""

    path: Path
    keys: pd.DataFrame        # subject, action, camera, frame
    keypoints: np.ndarray     # (N, J, 2) float32 image pixels
    scores: np.ndarray        # (N, J) float32
    meta: Mapping = field(default_factory=dict)

    def sequences(self) -> dict[tuple[str, str, str], np.ndarray]:
        """{(subject, action, camera): its rows, sorted by frame}."""
        out = {}
        for key, g in self.keys.groupby(["subject", "action", "camera"], sort=False):
            rows = g.index.to_numpy()
            out[tuple(str(k) for k in key)] = rows[np.argsort(g["frame"].to_numpy(), kind="stable")]
        return out


def read_detections(path) -> Detections:
    """Read a detections table; every error names the file."""
    path = Path(path)
    table, meta = read_table(path)
    _require_columns(table, path, ("subject", "action", "camera", "frame", "keypoints_px"))
    for col in ("keypoints_px", "scores"):
        if col in table.column_names:
            t = table.schema.field(col).type
            if not (pa.types.is_list(t) or pa.types.is_fixed_size_list(t)) or not pa.types.is_floating(t.value_type):
                raise DataError(f"{path}: column {col} is {t}, expected a list of floats")
    names = tuple(meta.get("joint_names") or JOINT_NAMES)
    try:
        kp = column_points(table, "keypoints_px", (len(names), 2))
        sc = (column_points(table, "scores", (len(names), 1))[..., 0] if "scores" in table.column_names
              else np.ones((table.num_rows, len(names)), np.float32))
    except ValueError as e:
        raise DataError(f"{path}: keypoints_px / scores do not hold {len(names)} joints per row ({e})") from e
    kp = to_h36m(kp, names, path)
    sc = to_h36m(sc[..., None], names, path)[..., 0]
    return Detections(path, _keys(table), kp, sc, meta)


def write_detections(path, keys: pd.DataFrame, keypoints: np.ndarray, scores: np.ndarray,
                     meta: Mapping | None = None) -> None:
    """Write detections (N, J, 2) px + scores (N, J) in H36M-17 order, rows sorted by key.
    ``meta`` adds to the contract's keys (joint_names, units)."""
    order = _sorted_rows(keys)
    n = len(order)
    cols = {c: _strings(np.asarray(keys[c])[order]) for c in ("subject", "action", "camera")}
    cols["frame"] = np.asarray(keys["frame"])[order].astype(np.int64)
    cols["keypoints_px"] = np.asarray(keypoints, np.float32).reshape(n, NUM_JOINTS * 2)[order]
    cols["scores"] = np.asarray(scores, np.float32).reshape(n, NUM_JOINTS)[order]
    info = {"joint_names": list(JOINT_NAMES), **dict(meta or {})}
    info.setdefault("units", "px")
    write_table(path, cols, info)


# --------------------------------------------------------------------------- predictions
@dataclass(frozen=True)
class Predictions:
    """One method's predictions, joints in H36M-17 order (NaN where the file lacks a joint)."""

    path: Path
    method: str
    coord_frame: str  # camera | world | reference_camera
    reference_camera: str | None
    root_relative: bool
    keys: pd.DataFrame  # subject, action, camera ("" for world frames), frame (int64)
    joints: np.ndarray  # (N, J, 3) float32 metres
    meta: Mapping = field(default_factory=dict)


def read_predictions(path) -> Predictions:
    """Read and validate one predictions table; every error names the file."""
    path = Path(path)
    table, meta = read_table(path)  # DataError on a missing/unreadable file
    _require_columns(table, path, ("subject", "action", "frame", "joints_3d"))
    names = tuple(meta.get("joint_names") or ())
    if not names:
        raise DataError(f"{path}: metadata has no joint_names")
    coord = meta.get("coord_frame")
    if coord not in COORD_FRAMES:
        raise DataError(f"{path}: metadata coord_frame = {coord!r}, expected one of {list(COORD_FRAMES)}")
    ref = meta.get("reference_camera")
    if coord == "reference_camera" and not ref:
        raise DataError(f"{path}: coord_frame is reference_camera but metadata names no reference_camera")
    units = meta.get("units", "m")
    if units != "m":
        raise DataError(f"{path}: units = {units!r}; predictions must be in metres ('m')")
    try:
        joints = column_points(table, "joints_3d", (len(names), 3))
    except ValueError as e:
        raise DataError(f"{path}: joints_3d does not hold {len(names)}*3 values per row ({e})") from e
    joints = to_h36m(joints, names, path, allow_missing=True)
    if len(joints) and np.isnan(joints[:, ROOT]).all():
        raise DataError(f"{path}: no pelvis (root) joint; every metric needs it")
    keys = _keys(table, camera_optional=True)
    if coord == "camera" and (keys["camera"] == "").any():
        raise DataError(f"{path}: coord_frame is camera but some rows have an empty camera name")
    dup = keys.duplicated(list(KEY_COLUMNS))
    if dup.any():
        raise DataError(f"{path}: {int(dup.sum())} duplicated rows, e.g. {keys[dup].iloc[0].to_dict()}")
    if len(keys) == 0:
        raise DataError(f"{path}: no rows")
    return Predictions(path=path, method=str(meta.get("method") or path.stem), coord_frame=coord,
                       reference_camera=ref, root_relative=bool(meta.get("root_relative", False)),
                       keys=keys, joints=joints.astype(np.float32), meta=meta)


def write_predictions(path, keys: Mapping, joints: np.ndarray, *, method: str, coord_frame: str,
                      root_relative: bool, extra_columns: Mapping[str, tuple[np.ndarray, str]] | None = None,
                      meta: Mapping | None = None) -> None:
    """Write (N, J, 3) metres in H36M-17 order with key columns ``keys`` (subject, action,
    camera, frame; camera "" in world frames). ``extra_columns``: {name: (array, description)};
    ``meta`` adds method-specific keys (``reference_camera`` is required with reference_camera)."""
    if coord_frame not in COORD_FRAMES:
        raise ValueError(f"coord_frame = {coord_frame!r}, expected one of {list(COORD_FRAMES)}")
    cols = {c: _strings(keys[c]) for c in ("subject", "action", "camera")}
    cols["frame"] = np.asarray(keys["frame"], dtype=np.int64)
    cols["joints_3d"] = np.asarray(joints, np.float32).reshape(len(cols["frame"]), NUM_JOINTS * 3)
    info = {"method": method, "coord_frame": coord_frame, "root_relative": bool(root_relative),
            "units": "m", "joint_names": list(JOINT_NAMES)}
    if extra_columns:
        cols.update({k: np.asarray(v, np.float32) for k, (v, _) in extra_columns.items()})
        info["extra_columns"] = {k: d for k, (_, d) in extra_columns.items()}
    info.update(meta or {})
    if coord_frame == "reference_camera" and not info.get("reference_camera"):
        raise ValueError("coord_frame reference_camera needs meta['reference_camera']")
    write_table(path, cols, info)
