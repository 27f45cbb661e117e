"""Stage ``prepare``: convert Human3.6M (one of four layouts) into the studio layout.

    python stages/prepare.py --source "<prepare.source>" --out-dir data/prepared \
        --metrics reports/metrics/prepare.json

With ``prepare.layout: none`` (the default) it writes the same files empty, in about a
second, so the default DAG (driven by the studio) is untouched. See docs/byod.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from pose3d import cli, tracking
from pose3d.data import h36m
from pose3d.data.io import DataError, write_json

log = logging.getLogger("prepare")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=None, help="overrides prepare.source (dvc.yaml passes it)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    s = cli.setup("prepare", a.params, device=False)
    p, base = s.params, s.base
    source = p.source if a.source is None else a.source
    flat = s.flat
    t0 = time.perf_counter()
    try:
        dataset = None
        if p.layout != "none":
            dataset = h36m.load_layout(p.layout, source, source_2d=p.source_2d, cameras=p.cameras,
                                       images=p.images, allow_pickle=p.allow_pickle,
                                       trim_extra_2d=p.trim_extra_2d)
            drop = {}
            if p.drop_s11_directions:
                drop.setdefault("S11", []).extend(p.s11_directions_actions)
            if p.drop_s9_damaged:
                drop.setdefault("S9", []).extend(p.s9_damaged_actions)
            dataset = h36m.select(dataset, subjects=p.subjects, drop=drop, every_nth=p.every_nth)
        summary = h36m.write_prepared(a.out_dir, dataset, source_fps=p.source_fps,
                                      test_subjects=p.test_subjects, link_mode=p.link_mode)
    except DataError as e:
        log.error("%s", e)
        return 1
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(a.metrics, summary)
    log.info("prepared %s: %s", p.layout, json.dumps(summary))
    with tracking.stage_run(stage="prepare", params=flat, base=base) as run:
        run.log_metrics({k: float(v) for k, v in summary.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
