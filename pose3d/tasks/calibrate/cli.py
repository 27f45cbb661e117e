"""The ``calibrate`` command: board takes in, cameras.json out.

    python -m pose3d.tasks.calibrate takes/board --floor takes/floor \\
        --board checkerboard:10x7:0.1 --floor-board checkerboard:8x5:0.25 --out cameras.json

A take is a folder with one video (``<camera>.mp4``) or image folder (``<camera>/``) per
camera, frame k of all of them filmed at the same instant. ``add_parser(subparsers)`` adds the
subcommand to a larger command line (``p3d calibrate ...``); :func:`main` runs it alone.
Bad input (a board never seen, too few views, a board spec that does not match, cameras with no
shared view) prints one error naming the camera and file, exits 1 and writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pose3d.data.boards import BoardSpec
from pose3d.data.io import DataError
from pose3d.tasks.calibrate.pipeline import format_report, run

log = logging.getLogger("pose3d.calibrate")

HELP = "calibrate cameras from board videos (checkerboard or ChArUco) -> cameras.json"


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("board_take", help="folder with one video or image folder per camera, the board "
                   "moved and tilted through the capture volume")
    p.add_argument("--board", required=True, help="KIND:NXxNY:SQUARE_M[:MARKER_M[:DICT]] with NX x NY "
                   "squares, sizes in metres, e.g. checkerboard:10x7:0.1 or charuco:6x5:0.18:0.135:DICT_4X4_50")
    p.add_argument("--out", required=True, help="cameras.json to write (atomically)")
    p.add_argument("--floor", default=None, help="take folder of the board lying on the floor, printed "
                   "side up; fixes the world frame (Z up, origin on the floor). Without it the world is "
                   "the first camera's frame")
    p.add_argument("--floor-board", default=None, help="spec of the floor board (default: --board)")
    p.add_argument("--floor-offset", nargs=2, type=float, default=(0.0, 0.0), metavar=("X", "Y"),
                   help="world X Y (metres) of the floor board's origin (the outer corner of its first "
                   "square); world X runs along the board's rows, Y against its columns")
    p.add_argument("--subject", action="append", default=None, help="subject name(s) to file the rig "
                   "under in cameras.json (repeatable; default: rig)")
    p.add_argument("--report", default=None, help="also write a JSON report (per camera RMS, views, timing)")
    p.add_argument("--stride", type=int, default=1, help="use every N-th frame of the board take")
    p.add_argument("--min-views", type=int, default=10, help="board views a camera needs")
    p.add_argument("--max-intrinsic-views", type=int, default=60,
                   help="views per camera for the intrinsics' initialisation (all enter the bundle adjustment)")
    p.set_defaults(func=run_args)
    return p


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``calibrate`` subcommand to an ``argparse`` subparsers object."""
    return configure(subparsers.add_parser("calibrate", help=HELP, description=__doc__,
                                           formatter_class=argparse.RawDescriptionHelpFormatter))


def run_args(a: argparse.Namespace) -> int:
    """Run a parsed ``calibrate`` command; returns the exit status (1 on bad input)."""
    try:
        if a.stride < 1 or a.min_views < 1:
            raise DataError(f"--stride {a.stride} / --min-views {a.min_views}: must be >= 1")
        board = BoardSpec.parse(a.board)
        floor_board = BoardSpec.parse(a.floor_board) if a.floor_board else None
        cal = run(a.board_take, board, a.out, a.floor, floor_board, tuple(a.floor_offset), a.subject,
                  a.report, a.stride, a.min_views, a.max_intrinsic_views)
    except DataError as e:
        log.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_report(cal.report))
    return 0


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    p = configure(argparse.ArgumentParser(prog="python -m pose3d.tasks.calibrate", description=__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
    return run_args(p.parse_args(argv))
