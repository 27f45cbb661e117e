"""Board corner detection in video frames (OpenCV), with one corner numbering for both kinds.

Checkerboard (the whole board must be in view): ``cv2.findChessboardCorners`` (fast check,
adaptive threshold), and where it fails ``cv2.findChessboardCornersSB`` (Duda & Frese 2018,
which finds more boards but costs ~0.2 s per frame without one); then ``cv2.cornerSubPix`` in a
window of half a square. On rendered studio frames this gives 0.03 px mean error where the SB
corners alone are 0.08 px (benchmarks/calibration.py). Its corner
order can start at any of the board's corners, so the order is fixed here: (1) the printed side
faces the camera, so the grid's x and y axes must turn the same way as the image's (positive
signed area of the outer corner polygon), else each row is reversed; (2) a board with
``squares_x + squares_y`` odd is not symmetric under a half turn: the squares that must be
black (``i + j`` even, :mod:`pose3d.data.boards`) have to be darker than the ones that must be
white, else the order is reversed. Then corner ``k`` is :meth:`BoardSpec.object_points` row k.

ChArUco: ``cv2.aruco.CharucoDetector`` (OpenCV >= 4.7 API; the pinned 5.0 has no
``interpolateCornersCharuco``): markers, then the chessboard corners between them, identified by
the marker ids, refined to sub-pixel; partial views count. A view needs ``min_corners``
corners spanning 2 rows and 2 columns of the board (collinear points fix no pose).

Output per frame: ``ids`` (N,) int corner numbers and ``uv`` (N, 2) float64 distorted pixels
(OpenCV's pixel centres: integer coordinates at pixel centres, as pose3d's cameras use).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pose3d.data.boards import BoardSpec
from pose3d.data.io import DataError
from pose3d.data.video import iter_frames, video_info

log = logging.getLogger(__name__)


@dataclass
class SourceDetections:
    """Corners found in one camera's video / image folder."""
    path: Path
    width: int
    height: int
    frames_read: int
    ids: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (N,) corner ids
    uv: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> (N, 2) pixels
    markers_seen: int = 0  # ChArUco: frames with markers but too few corners (a spec hint)


def _bilinear(gray: np.ndarray, pts: np.ndarray) -> np.ndarray:
    m = cv2.remap(gray, pts[:, 0:1].astype(np.float32), pts[:, 1:2].astype(np.float32),
                  cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return m.ravel().astype(np.float64)


def orient_checkerboard(gray: np.ndarray, corners: np.ndarray, board: BoardSpec) -> np.ndarray:
    """Reorder (N, 2) detected corners into the board's numbering (see module docstring)."""
    cx, cy = board.inner
    g = corners.reshape(cy, cx, 2)
    quad = np.stack([g[0, 0], g[0, -1], g[-1, -1], g[-1, 0]])
    area = 0.5 * np.sum(quad[:, 0] * np.roll(quad[:, 1], -1) - np.roll(quad[:, 0], -1) * quad[:, 1])
    if area < 0:  # mirrored order: the image's y axis is down, so a front view has area > 0
        g = g[:, ::-1]
    centres = 0.25 * (g[:-1, :-1] + g[1:, :-1] + g[:-1, 1:] + g[1:, 1:])  # inner squares (cy-1, cx-1)
    i, j = np.meshgrid(np.arange(cx - 1), np.arange(cy - 1))
    black = (i + j) % 2 == 0  # inner square (i, j) is board square (i+1, j+1)
    val = _bilinear(gray, centres.reshape(-1, 2)).reshape(black.shape)
    if val[black].mean() > val[~black].mean():  # a half turn: start at the other end
        g = g[::-1, ::-1]
    return g.reshape(-1, 2)


class BoardDetector:
    """Finds ``board``'s corners in RGB frames; ``min_corners`` per view (ChArUco)."""

    def __init__(self, board: BoardSpec, min_corners: int = 6, method: str = "auto",
                 stretch_y: tuple[float, ...] = (1.0,)):
        if method not in ("auto", "sb", "classic"):
            raise ValueError(f"method = {method!r}: expected 'auto', 'sb' or 'classic'")
        self.board = board
        self.method = method
        self.stretch_y = tuple(stretch_y)
        self.min_corners = max(int(min_corners), 4)
        if board.kind == "charuco":
            params = cv2.aruco.CharucoParameters()
            self._charuco = cv2.aruco.CharucoDetector(board.charuco_board(), params)

    def _checkerboard(self, gray: np.ndarray) -> np.ndarray | None:
        b = self.board
        corners = None
        if self.method in ("auto", "classic"):
            flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
            ok, corners = cv2.findChessboardCorners(gray, b.inner, flags=flags)
            corners = corners if ok else None
        if corners is None and self.method in ("auto", "sb"):
            ok, corners = cv2.findChessboardCornersSB(gray, b.inner, flags=cv2.CALIB_CB_ACCURACY
                                                      | cv2.CALIB_CB_NORMALIZE_IMAGE)
            corners = corners if ok else None
        if corners is None or len(corners) != b.num_corners:
            return None
        # sub-pixel refinement in a window of about half a square
        g = corners.reshape(b.inner[1], b.inner[0], 2)
        spacing = min(np.linalg.norm(np.diff(g, axis=0), axis=-1).min(),
                      np.linalg.norm(np.diff(g, axis=1), axis=-1).min())
        win = int(np.clip(0.5 * spacing, 2, 7))
        return cv2.cornerSubPix(gray, corners.astype(np.float32), (win, win), (-1, -1),
                                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-3))

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None | int:
        """RGB (H, W, 3) uint8 -> (ids (N,), uv (N, 2)) or None; for ChArUco, the number of
        markers found (an int) when they gave too few corners. A checkerboard is also looked for
        in the frame stretched vertically by each factor of ``stretch_y`` (a board on the
        floor, seen at a grazing angle, has squares too flat for the detectors)."""
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        b = self.board
        if b.kind == "checkerboard":
            for s in self.stretch_y:
                g = gray if s == 1 else cv2.resize(gray, None, fx=1.0, fy=s, interpolation=cv2.INTER_CUBIC)
                corners = self._checkerboard(g)
                if corners is not None:
                    uv = orient_checkerboard(g, corners.reshape(-1, 2).astype(np.float64), b)
                    uv[:, 1] = (uv[:, 1] + 0.5) / s - 0.5  # back to the frame's pixel centres
                    return np.arange(b.num_corners), uv
            return None
        corners, ids, _, marker_ids = self._charuco.detectBoard(gray)
        n_markers = 0 if marker_ids is None else len(marker_ids)
        if ids is None or len(ids) < self.min_corners:
            return n_markers if n_markers else None
        ids = ids.ravel().astype(np.int64)
        cx = b.inner[0]
        if len(np.unique(ids % cx)) < 2 or len(np.unique(ids // cx)) < 2:
            return n_markers
        return ids, corners.reshape(-1, 2).astype(np.float64)


def detect_source(path: str | Path, board: BoardSpec, stride: int = 1, min_corners: int = 6,
                  progress=None, stretch_y: tuple[float, ...] = (1.0,)) -> SourceDetections:
    """Detect ``board`` in frames 0, stride, ... of a video file or image folder."""
    path = Path(path)
    info = video_info(path)
    det = BoardDetector(board, min_corners, stretch_y=stretch_y)
    out = SourceDetections(path, info.width, info.height, 0)
    for k, rgb in iter_frames(path, stride=stride):
        out.frames_read += 1
        r = det(rgb)
        if isinstance(r, tuple):
            out.ids[k], out.uv[k] = r
        elif isinstance(r, int) and r > 0:
            out.markers_seen += 1
        if progress:
            progress(1)
    return out


def never_seen_error(camera: str, d: SourceDetections, board: BoardSpec) -> DataError:
    """The error for a camera whose source never showed ``board``."""
    hint = ""
    if d.markers_seen:
        hint = (f" ({d.markers_seen} frames show ArUco markers but no board corners: do the squares, "
                "marker size and dictionary match the print?)")
    return DataError(f"camera {camera} ({d.path}): board {board} not found in any of {d.frames_read} frames "
                     f"read{hint}; check that the video shows the board and that the board spec "
                     f"(KIND:NXxNY squares:square size) matches the printed board")
