"""Ground truth of a dataset in world, camera and pixel coordinates: the one view of
``mocap.h5`` + ``cameras.json`` that every task reads, instead of loading and projecting the
two files itself.

Coordinates (DESIGN.md): world metres; camera frame ``x_cam = R x_world + t`` (metres);
pixels through the camera's full model, distortion included, as in the video
(:func:`pose3d.geometry.camera.project`). Arrays are float64 (callers cast).

Three ways in, one per access pattern of the tasks:

* one sequence seen by one camera, whole: :meth:`GroundTruth.view` -> :class:`SequenceView`
  (lifting's frame sets, crop extraction, the VideoPose3D export, the report's figures);
* one subject seen by all its cameras at once: :meth:`GroundTruth.multiview` ->
  :class:`MultiView` (triangulation);
* rows of a table keyed (subject, action, [camera,] frame): :meth:`GroundTruth.world`,
  :meth:`~GroundTruth.camera_arrays`, :meth:`~GroundTruth.in_cameras`,
  :meth:`~GroundTruth.target` (image -> 3D, evaluation).

Unknown subjects, cameras, sequences or frames are a :class:`~pose3d.data.io.DataError` naming
the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence as Seq

import numpy as np
import pandas as pd
import torch

from pose3d.data.contracts import Predictions
from pose3d.data.io import DataError, Sequence, load_cameras, read_mocap
from pose3d.geometry.camera import Camera, camera_to_world, project, project_camera, stack_cameras, world_to_camera


@dataclass(frozen=True)
class SequenceView:
    """One (subject, action) sequence seen by one camera: T frames, J joints, float64."""

    sequence: Sequence
    camera_name: str
    camera: Camera
    world: np.ndarray    # (T, J, 3) metres
    cam: np.ndarray      # (T, J, 3) metres, camera frame
    pixels: np.ndarray   # (T, J, 2) distorted pixels


@dataclass(frozen=True)
class MultiView:
    """All sequences of one subject, concatenated along T, seen by its V cameras."""

    subject: str
    world: torch.Tensor            # (T, J, 3) float64 metres
    pixels: torch.Tensor           # (T, V, J, 2) float64 distorted pixels
    actions: list[str]             # (T,) the action of each frame
    frames: np.ndarray             # (T,) frame number inside its sequence
    cameras: dict[str, torch.Tensor]  # stacked K, dist, R, t: (V, ...)
    camera_names: list[str]        # (V,)
    fps: dict[str, float]          # per action


class GroundTruth:
    """Mocap sequences + the cameras of each subject (see the module docstring).

    ``sequences`` in file order; ``cameras[subject][name]`` in cameras.json order. The paths
    only name the files in errors (in-memory ground truth may leave the defaults)."""

    def __init__(self, sequences: Seq[Sequence], cameras: Mapping[str, Mapping[str, Camera]], *,
                 mocap_path: str | Path = "mocap.h5", cameras_path: str | Path = "cameras.json"):
        if not sequences:
            raise DataError(f"{mocap_path}: no sequences")
        self.sequences = list(sequences)
        self.cameras = cameras
        self.mocap_path, self.cameras_path = str(mocap_path), str(cameras_path)
        lengths = np.asarray([len(s.positions_world) for s in self.sequences], np.int64)
        self.index = pd.DataFrame({
            "subject": [s.subject for s in self.sequences],
            "action": [s.action for s in self.sequences],
            "offset": np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
            "length": lengths,
            "split": [s.split for s in self.sequences],
            "fps": [s.fps for s in self.sequences],
        })
        self.positions = np.concatenate([s.positions_world for s in self.sequences]).astype(np.float64)

    @classmethod
    def load(cls, mocap: str | Path, cameras: str | Path, *, split: str | None = None,
             subjects: Iterable[str] | None = None) -> "GroundTruth":
        """Read ``mocap.h5`` (only ``split`` / ``subjects`` when given) and ``cameras.json``."""
        subjects = None if subjects is None else list(subjects)
        seqs = read_mocap(mocap, subjects=subjects, split=split)
        if not seqs:
            which = ([f"split {split!r}"] if split else []) + ([f"subjects {subjects}"] if subjects else [])
            raise DataError(f"{mocap}: no sequences" + (" for " + " and ".join(which) if which else ""))
        return cls(seqs, load_cameras(cameras), mocap_path=mocap, cameras_path=cameras)

    # ----------------------------------------------------------------- sequences, cameras
    @property
    def subjects(self) -> list[str]:
        """Subjects in file order."""
        return list(dict.fromkeys(s.subject for s in self.sequences))

    def of_subject(self, subject: str) -> list[Sequence]:
        return [s for s in self.sequences if s.subject == subject]

    def sequence(self, subject: str, action: str) -> Sequence:
        for s in self.sequences:
            if s.subject == subject and s.action == action:
                return s
        raise DataError(f"{self.mocap_path}: no sequence {subject}/{action}")

    def cameras_of(self, subject: str) -> Mapping[str, Camera]:
        """``{name: Camera}`` of ``subject`` in cameras.json order."""
        if subject not in self.cameras:
            raise DataError(f"{self.cameras_path}: no cameras for subject {subject!r} of {self.mocap_path}")
        return self.cameras[subject]

    def camera(self, subject: str, name: str) -> Camera:
        cams = self.cameras_of(subject)
        if name not in cams:
            raise DataError(f"{self.cameras_path}: no camera {name!r} for subject {subject!r} "
                            f"(has {sorted(cams)})")
        return cams[name]

    # ----------------------------------------------------------------- whole sequences
    def view(self, seq: Sequence, camera_name: str) -> SequenceView:
        """``seq`` in world, camera and pixel coordinates of its subject's camera ``camera_name``."""
        cam = self.camera(seq.subject, camera_name)
        world = np.asarray(seq.positions_world, np.float64)
        x_cam = world_to_camera(torch.from_numpy(world), torch.from_numpy(cam.R), torch.from_numpy(cam.t))
        pixels = project_camera(x_cam, torch.from_numpy(cam.K).double(), torch.from_numpy(cam.dist).double())
        return SequenceView(seq, camera_name, cam, world, x_cam.numpy(), pixels.numpy())

    def multiview(self, subject: str) -> MultiView:
        """Every sequence of ``subject`` (file order, concatenated) projected into all its cameras."""
        names = list(self.cameras_of(subject))
        cams = stack_cameras([self.cameras[subject][c] for c in names])
        sub = self.of_subject(subject)
        world = torch.as_tensor(np.concatenate([s.positions_world for s in sub]), dtype=torch.float64)
        pixels = project(world.unsqueeze(-3), cams["K"], cams["dist"], cams["R"], cams["t"])
        return MultiView(subject, world, pixels, [s.action for s in sub for _ in range(len(s.positions_world))],
                         np.concatenate([np.arange(len(s.positions_world)) for s in sub]), cams, names,
                         {s.action: float(s.fps) for s in sub})

    # ----------------------------------------------------------------- table rows
    def _rows(self, keys: pd.DataFrame, where: str) -> pd.DataFrame:
        """keys -> keys + offset/length/split, erroring on unknown sequences or frames."""
        m = keys[["subject", "action"]].merge(self.index, on=["subject", "action"], how="left")
        unknown = m["offset"].isna()
        if unknown.any():
            pairs = m.loc[unknown, ["subject", "action"]].itertuples(index=False)
            bad = sorted({f"{a}/{b}" for a, b in pairs})
            raise DataError(f"{where}: {int(unknown.sum())} rows name sequences absent from the "
                            f"ground truth ({self.mocap_path}): {bad[:5]}")
        frames = keys["frame"].to_numpy()
        out = (frames < 0) | (frames >= m["length"].to_numpy())
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise DataError(f"{where}: {int(out.sum())} rows have frames outside their sequence, e.g. "
                            f"{keys.iloc[i].to_dict()} (length {int(m['length'].iloc[i])})")
        return m

    def split_of(self, keys: pd.DataFrame, where: str = "keys") -> np.ndarray:
        return self._rows(keys, where)["split"].to_numpy().astype(str)

    def world(self, keys: pd.DataFrame, where: str = "keys") -> np.ndarray:
        """World poses (N, J, 3) metres for rows (subject, action, frame)."""
        m = self._rows(keys, where)
        return self.positions[m["offset"].to_numpy(np.int64) + keys["frame"].to_numpy(np.int64)]

    def camera_arrays(self, subjects: Iterable[str], cams: Iterable[str]) -> dict[str, np.ndarray]:
        """K (N, 3, 3), dist (N, 5), R (N, 3, 3), t (N, 3) of each row's (subject, camera)."""
        pairs = pd.DataFrame({"subject": list(subjects), "camera": list(cams)})
        uniq = pairs.drop_duplicates().reset_index(drop=True)
        found = [self.camera(s, c) for s, c in uniq.itertuples(index=False)]  # a few pairs, not frames
        code = pairs.merge(uniq.reset_index(), on=["subject", "camera"], how="left")["index"].to_numpy()
        return {k: np.stack([getattr(c, k) for c in found]).astype(np.float64)[code] if found
                else np.zeros((0,) + shape) for k, shape in (("K", (3, 3)), ("dist", (5,)), ("R", (3, 3)), ("t", (3,)))}

    def in_cameras(self, x_world: np.ndarray, subjects: Iterable[str], cams: Iterable[str]) -> np.ndarray:
        """World points (N, J, 3) -> the camera frame of each row's (subject, camera)."""
        c = self.camera_arrays(subjects, cams)
        return world_to_camera(torch.from_numpy(x_world), torch.from_numpy(c["R"]), torch.from_numpy(c["t"])).numpy()

    def target(self, preds: Predictions, keys: pd.DataFrame | None = None) -> np.ndarray:
        """Ground truth (N, J, 3) in the frame of ``preds`` for its rows ``keys``."""
        keys = preds.keys if keys is None else keys
        xw = self.world(keys, str(preds.path))
        if preds.coord_frame == "world":
            return xw
        return self.in_cameras(xw, keys["subject"], self._pred_cameras(preds, keys))

    def to_world(self, preds: Predictions, x: np.ndarray, keys: pd.DataFrame) -> np.ndarray:
        """Poses (N, J, 3) in the frame of ``preds`` -> world frame (for pictures)."""
        if preds.coord_frame == "world":
            return x
        c = self.camera_arrays(keys["subject"], self._pred_cameras(preds, keys))
        return camera_to_world(torch.from_numpy(x).double(), torch.from_numpy(c["R"]), torch.from_numpy(c["t"])).numpy()

    @staticmethod
    def _pred_cameras(preds: Predictions, keys: pd.DataFrame) -> list[str]:
        return list(keys["camera"]) if preds.coord_frame == "camera" else [preds.reference_camera] * len(keys)
