"""Stage ``studio``: animate subjects (procedural motion or real mocap) and film them.

    python stages/studio.py [--mocap-path <overrides studio.mocap_path>] \
        --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json \
        --videos data/studio/videos --metrics reports/metrics/studio.json

Writes mocap.h5, cameras.json and videos/<subject>/<action>.<camera>.mp4 (see DESIGN.md).
Every output is written atomically; on any error none of them is left behind and the
stage exits non-zero with a message naming the file or key.
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks import data

ARGS = {"--mocap-path": dict(default=None, help="overrides studio.mocap_path (by hand; the DAG reads params.yaml)"),
        "--mocap": dict(output=True, required=True, help="output mocap.h5"),
        "--cameras": dict(output=True, required=True, help="output cameras.json"),
        "--videos": dict(output=True, required=True, help="output videos folder"),
        "--metrics": dict(output=True, required=True, help="output summary (DVC metrics) json"),
        "--timings": dict(output=True, required=True, help="wall-clock figures (not DVC metrics)")}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, "studio", ARGS, data.run_studio_stage, argv=argv, device=False)


if __name__ == "__main__":
    sys.exit(main())
