"""``p3d``: the command a user types (console script of the ``pose3d-pipeline`` distribution).

    p3d infer video.mp4 --out out/             # one camera: boxes -> 2D -> temporal lifter
    p3d infer a.mp4 b.mp4 --cameras cams.json --out out/   # N calibrated cameras: triangulation
    p3d fetch-models                           # BlazePose weights for `p3d infer --detector blazepose`
    p3d train-lifter --mocap real.npz --studio data/studio --out models/footage_temporal  # --lifter for infer
    p3d calibrate takes/board --board checkerboard:10x7:0.1 --out cams.json  # board -> cameras.json

Each subcommand lives in its own module, which exposes ``add_parser(subparsers)``: it adds its
parser and sets ``func`` (``args -> exit status``) as the parser's default. A new subcommand is
one module and one line in :data:`SUBCOMMANDS`.

Errors: a :class:`~pose3d.data.io.DataError` (bad input, named in the message) prints one line
``p3d <command>: error: <message>`` on stderr and exits 1; argparse usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from pose3d.data.io import DataError

#: modules with ``add_parser(subparsers)``, in the order ``p3d --help`` lists them
SUBCOMMANDS: tuple[str, ...] = ("pose3d.tasks.footage.command", "pose3d.tasks.footage.fetch",
                                 "pose3d.tasks.lifting.cli", "pose3d.tasks.calibrate.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="p3d", description="pose3d: your own footage in, 3D out; cameras calibrated from a board.")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args) or 0)
    except DataError as e:
        print(f"p3d {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
