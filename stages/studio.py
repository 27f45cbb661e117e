"""Stage ``studio``: animate subjects (procedural motion or real mocap) and film them.

    python stages/studio.py --mocap-path "<studio.mocap_path>" \
        --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json \
        --videos data/studio/videos --metrics reports/metrics/studio.json

Writes mocap.h5, cameras.json and videos/<subject>/<action>.<camera>.mp4 (see DESIGN.md).
Every output is written atomically; on any error none of them is left behind and the
stage exits non-zero with a message naming the file or key.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

from tqdm import tqdm

from pose3d import cli, tracking
from pose3d.data.io import DataError, atomic_dir, save_cameras, write_json, write_mocap
from pose3d.data.studio import dataset

log = logging.getLogger("studio")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mocap-path", default=None, help="overrides studio.mocap_path (dvc.yaml passes it)")
    ap.add_argument("--mocap", required=True, help="output mocap.h5")
    ap.add_argument("--cameras", required=True, help="output cameras.json")
    ap.add_argument("--videos", required=True, help="output videos folder")
    ap.add_argument("--metrics", required=True, help="output summary (DVC metrics) json")
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    s = cli.setup("studio", a.params, device=False)
    p, base = s.params, s.base
    mocap_path = p.mocap_path if a.mocap_path is None else a.mocap_path
    flat = s.flat
    outputs = [Path(a.mocap), Path(a.cameras), Path(a.videos), Path(a.metrics)]
    t0 = time.perf_counter()
    try:
        with tracking.stage_run(stage="studio", params=flat, base=base) as run:
            if p.source == "procedural":
                takes = dataset.procedural_sequences(p.subjects, p.actions, p.seconds, p.fps, p.seed)
            else:
                if not mocap_path:
                    raise DataError("studio.mocap_path: required when studio.source is mocap")
                takes = dataset.mocap_sequences(mocap_path, p.subjects, p.actions if p.actions else None,
                                                p.fps, p.max_seconds, p.seed, p.bvh_unit_m)
            subjects = sorted({t.sequence.subject for t in takes}, key=list(p.subjects).index)
            cams = dataset.make_cameras(subjects, p.num_cameras, p.width, p.height, p.camera_distance,
                                        p.camera_height, p.seed)
            n_pose_frames = sum(len(t.sequence.positions_world) for t in takes)
            log.info("%d takes, %d subjects, %d pose frames, %d cameras", len(takes), len(subjects),
                     n_pose_frames, p.num_cameras)
            stats = {"frames": 0, "seconds": 0.0, "fps": 0.0}
            with atomic_dir(a.videos) as tmp_videos:
                if p.render:
                    with tqdm(total=len(takes), desc="studio: takes", unit="take") as bar:
                        stats = dataset.render_videos(takes, cams, tmp_videos, p.seed, p.workers,
                                                      progress=bar.update)
                write_mocap(a.mocap, [t.sequence for t in takes])
                save_cameras(a.cameras, cams)
            size = sum(f.stat().st_size for f in Path(a.videos).rglob("*.mp4"))
            summary = {"takes": len(takes), "subjects": len(subjects), "pose_frames": n_pose_frames,
                       "video_frames": stats["frames"], "render_seconds": round(stats["seconds"], 2),
                       "render_fps": round(stats["fps"], 2), "videos_mb": round(size / 2**20, 2),
                       "seconds": round(time.perf_counter() - t0, 2)}
            write_json(a.metrics, summary)
            run.log_metrics(summary)
            log.info("studio: %s", summary)
    except (DataError, OSError, ValueError) as e:
        _cleanup(outputs)
        log.error("%s", e)
        return 1
    except BaseException:
        _cleanup(outputs)
        raise
    return 0


def _cleanup(paths: list[Path]) -> None:
    """No partial output: remove whatever of the outputs this run may have written."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


if __name__ == "__main__":
    sys.exit(main())
