"""Stage ``prepare``: convert Human3.6M (one of four layouts) into the studio layout.

    python stages/prepare.py [--source <overrides prepare.source>] --out-dir data/prepared \
        --metrics reports/metrics/prepare.json

With ``prepare.layout: none`` (the default) it writes the same files empty, in about a
second, so the default DAG (driven by the studio) is untouched. See docs/byod.md.
"""

import sys

from pose3d.runtime import cli
from pose3d.tasks import data

ARGS = {"--source": dict(default=None, help="overrides prepare.source (by hand; the DAG reads params.yaml)"),
        "--out-dir": dict(output=True, required=True),
        "--metrics": dict(output=True, required=True),
        "--timings": dict(output=True, required=True, help="wall-clock figures (not DVC metrics)")}


def main(argv=None) -> int:
    return cli.run_stage(__doc__, "prepare", ARGS, data.run_prepare_stage, argv=argv, device=False)


if __name__ == "__main__":
    sys.exit(main())
