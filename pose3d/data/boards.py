"""Calibration boards: what a printed checkerboard or ChArUco board is, as one spec.

A board is ``squares_x`` x ``squares_y`` squares of ``square_m`` metres. Its frame (the
*board frame*): origin at the outer corner of the first square of the pattern, x along the
rows of the print, y down the print, z = x cross y, *into* the board (away from a viewer of
the printed side). Inner corner ``k = j * (squares_x - 1) + i`` (i, j >= 0) lies at
``((i + 1) s, (j + 1) s, 0)``: the order and positions of OpenCV's ``CharucoBoard``
``getChessboardCorners()``, used for the checkerboard as well, so that both kinds share one
corner numbering.

Checkerboard: square (i, j) is black when ``i + j`` is even. With ``squares_x + squares_y``
odd (e.g. 10 x 7) the pattern has no 180-degree symmetry, so the detector can tell its first
corner (see :mod:`pose3d.tasks.calibrate.detect`). ChArUco: OpenCV's board with ``marker_m``
markers of ``dictionary`` in the white squares; each corner is identified by the markers
around it, so partial views count.

A spec reads from a string ``KIND:NXxNY:SQUARE_M[:MARKER_M[:DICT]]``, e.g.
``checkerboard:10x7:0.1`` or ``charuco:6x5:0.18:0.135:DICT_4X4_50``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pose3d.data.io import DataError

KINDS = ("checkerboard", "charuco")


@dataclass(frozen=True)
class BoardSpec:
    kind: str
    squares_x: int
    squares_y: int
    square_m: float
    marker_m: float = 0.0
    dictionary: str = "DICT_4X4_50"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DataError(f"board kind {self.kind!r}: expected one of {KINDS}")
        if self.squares_x < 3 or self.squares_y < 3:
            raise DataError(f"board {self}: needs at least 3 x 3 squares (2 x 2 inner corners)")
        if not self.square_m > 0:
            raise DataError(f"board square size {self.square_m} m: must be positive")
        if self.kind == "checkerboard" and (self.squares_x + self.squares_y) % 2 == 0:
            raise DataError(f"checkerboard {self.squares_x}x{self.squares_y}: squares_x + squares_y must "
                            "be odd (e.g. 10x7), else a 180-degree turn of the board looks the same and "
                            "the first corner cannot be told")
        if self.kind == "charuco":
            if not 0 < self.marker_m < self.square_m:
                raise DataError(f"charuco marker size {self.marker_m} m: must be in (0, square size "
                                f"{self.square_m} m)")
            if not hasattr(cv2.aruco, self.dictionary):
                raise DataError(f"charuco dictionary {self.dictionary!r}: not an OpenCV aruco dictionary "
                                "(e.g. DICT_4X4_50, DICT_5X5_100)")

    @classmethod
    def parse(cls, text: str) -> "BoardSpec":
        """``KIND:NXxNY:SQUARE_M[:MARKER_M[:DICT]]`` -> spec (sizes in metres, NX x NY squares)."""
        parts = text.strip().split(":")
        try:
            kind = parts[0]
            nx, ny = (int(v) for v in parts[1].lower().split("x"))
            square = float(parts[2])
            marker = float(parts[3]) if len(parts) > 3 else 0.0
            dictionary = parts[4] if len(parts) > 4 else "DICT_4X4_50"
            if len(parts) > 5 or (kind == "checkerboard" and len(parts) > 3):
                raise ValueError("too many fields")
        except (IndexError, ValueError) as e:
            raise DataError(f"board spec {text!r}: expected KIND:NXxNY:SQUARE_M[:MARKER_M[:DICT]] "
                            f"(e.g. checkerboard:10x7:0.1 or charuco:6x5:0.18:0.135:DICT_4X4_50); {e}") from None
        return cls(kind, nx, ny, square, marker, dictionary)

    def __str__(self) -> str:
        s = f"{self.kind}:{self.squares_x}x{self.squares_y}:{self.square_m:g}"
        return s + (f":{self.marker_m:g}:{self.dictionary}" if self.kind == "charuco" else "")

    @property
    def inner(self) -> tuple[int, int]:
        """Inner corners (columns, rows)."""
        return self.squares_x - 1, self.squares_y - 1

    @property
    def num_corners(self) -> int:
        return (self.squares_x - 1) * (self.squares_y - 1)

    @property
    def size_m(self) -> tuple[float, float]:
        """Width and height of the pattern (without margin), metres."""
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def object_points(self) -> np.ndarray:
        """(N, 3) float64 inner-corner positions in the board frame, metres (see module doc)."""
        cx, cy = self.inner
        i, j = np.meshgrid(np.arange(cx), np.arange(cy))
        return np.stack([(i.ravel() + 1) * self.square_m, (j.ravel() + 1) * self.square_m,
                         np.zeros(cx * cy)], -1)

    def charuco_board(self) -> "cv2.aruco.CharucoBoard":
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, d)

    def texture(self, px_per_square: int = 64, margin_squares: float = 0.5) -> np.ndarray:
        """The printed board: (H, W) float32 in [0, 1] (0 black, 1 white) with a white margin of
        ``margin_squares`` squares. Texture pixel (c, r) centre is at board
        ``((c + 0.5) / px_per_square - margin_squares) * square_m`` (x; likewise y)."""
        m = int(round(margin_squares * px_per_square))
        w, h = self.squares_x * px_per_square, self.squares_y * px_per_square
        if self.kind == "checkerboard":
            i = np.arange(w) // px_per_square
            j = np.arange(h) // px_per_square
            pattern = np.where((i[None, :] + j[:, None]) % 2 == 0, 0.0, 1.0)
        else:
            pattern = self.charuco_board().generateImage((w, h), marginSize=0, borderBits=1)
            pattern = pattern.astype(np.float64) / 255.0
        out = np.ones((h + 2 * m, w + 2 * m), np.float32)
        out[m:m + h, m:m + w] = pattern
        return out
