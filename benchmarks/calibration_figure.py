"""Picture of detected board corners on rendered studio frames (checkerboard, ChArUco, floor).

    python benchmarks/calibration_figure.py --work /tmp/calib_bench --subject S9 \\
        --out reports/figures/calibration_corners.png

Reads the takes that benchmarks/calibration.py rendered into ``--work``; draws the corners the
calibrate room detects in the first frame with a board (crosses coloured by corner number, the
board's first corner circled), frames upscaled 2x.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pose3d.data.boards import BoardSpec
from pose3d.data.video import iter_frames
from pose3d.tasks.calibrate.detect import BoardDetector

BOARDS = {"checkerboard": "checkerboard:10x7:0.1", "charuco": "charuco:6x5:0.18:0.135:DICT_4X4_50"}
FLOOR = "checkerboard:8x5:0.25"


def first_detection(path: Path, board: BoardSpec, stretch=(1.0,)):
    det = BoardDetector(board, stretch_y=stretch)
    for k, rgb in iter_frames(path):
        r = det(rgb)
        if isinstance(r, tuple) and len(r[0]) >= min(board.num_corners, 16):
            return k, rgb, r
    raise SystemExit(f"{path}: no detection")


def draw(rgb, ids, uv, title):
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    img = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    p = (uv + 0.5) * 2 - 0.5
    for i, (x, y) in zip(ids, p):
        c = tuple(int(v) for v in cv2.applyColorMap(np.uint8([[int(255 * i / max(ids.max(), 1))]]), cv2.COLORMAP_JET)[0, 0])
        cv2.drawMarker(img, (int(round(x)), int(round(y))), c, cv2.MARKER_CROSS, 9, 2)
    first = p[np.argmin(ids)]
    cv2.circle(img, (int(round(first[0])), int(round(first[1]))), 9, (255, 255, 255), 2)
    cv2.putText(img, title, (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    return img


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/calib_bench")
    ap.add_argument("--subject", default="S9")
    ap.add_argument("--camera", default="60457274")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    tiles = []
    for kind, take, spec, stretch in (("checkerboard", "board", BOARDS["checkerboard"], (1.0,)),
                                      ("charuco", "board", BOARDS["charuco"], (1.0,)),
                                      ("checkerboard", "floor", FLOOR, (1.0, 2.5, 4.0))):
        src = Path(a.work) / a.subject / kind / take / f"{a.camera}.mp4"
        board = BoardSpec.parse(spec)
        k, rgb, (ids, uv) = first_detection(src, board, stretch)
        tiles.append(draw(rgb, ids, uv, f"{take} take, {spec}, frame {k}: {len(ids)} corners"))
    cv2.imwrite(a.out, np.concatenate(tiles, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
