"""Stage ``extract``: studio videos -> person crops (crops.h5) + their index (crops.parquet).

    python stages/extract.py --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json \
        --videos data/studio/videos --out-h5 data/crops/crops.h5 --out-index data/crops/crops.parquet
"""

from __future__ import annotations

import argparse
import logging
import sys

from pose3d import cli, tracking
from pose3d.data.crops import extract_crops
from pose3d.data.io import DataError

log = logging.getLogger("extract")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mocap", required=True)
    ap.add_argument("--cameras", required=True)
    ap.add_argument("--videos", required=True, help="folder <subject>/<action>.<camera>.mp4 or image folders")
    ap.add_argument("--out-h5", required=True)
    ap.add_argument("--out-index", required=True)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    s = cli.setup("extract", a.params, device=False)
    p, base = s.params, s.base
    flat = s.flat
    try:
        with tracking.stage_run(stage="extract", params=flat, base=base) as run:
            stats = extract_crops(a.mocap, a.cameras, a.videos, a.out_h5, a.out_index,
                                  crop_size=p.crop_size, frame_stride=p.frame_stride,
                                  box_source=p.box_source, box_margin=p.box_margin,
                                  bg_frames=p.bg_frames, bg_threshold=p.bg_threshold,
                                  on_error=p.on_error, compression=p.compression)
            run.log_metrics({"crops": stats["crops"], "videos": stats["videos"],
                             "skipped_videos": len(stats["skipped_videos"]),
                             "background_fallbacks": stats["background_fallbacks"],
                             "seconds": stats["seconds"],
                             "frames_per_s": stats["crops"] / max(stats["seconds"], 1e-9)})
    except DataError as e:
        log.error("%s", e)
        return 1
    log.info("extract: %d crops from %d videos in %.1f s (%d skipped, %d background fallbacks)",
             stats["crops"], stats["videos"], stats["seconds"], len(stats["skipped_videos"]),
             stats["background_fallbacks"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
