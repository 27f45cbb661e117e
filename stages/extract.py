"""Stage ``extract``: studio videos -> person crops (crops.h5) + their index (crops.parquet).

    python stages/extract.py --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json \
        --videos data/studio/videos --out-h5 data/crops/crops.h5 --out-index data/crops/crops.parquet
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks import data

ARGS = {"--mocap": dict(required=True),
        "--cameras": dict(required=True),
        "--videos": dict(required=True, help="folder <subject>/<action>.<camera>.mp4 or image folders"),
        "--out-h5": dict(output=True, required=True),
        "--out-index": dict(output=True, required=True)}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, "extract", ARGS, data.run_extract_stage, argv=argv, device=False)


if __name__ == "__main__":
    sys.exit(main())
