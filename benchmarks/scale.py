"""Memory and speed of the data stages as the data grows: `extract` and `detect_2d` on studios
of 1x, 2x and 4x the seconds per take (maximum resident set size from /usr/bin/time -v,
wall-clock seconds, frames per second, crops.h5 size on disk).

    python benchmarks/scale.py --out reports/benchmarks/scale.json [--scales 1 2 4]

Each scale is a fresh studio (`stages/studio.py`) with fewer subjects and actions than the
default (two subjects, S1 train and S9 test, four actions, four cameras, 512 x 512 at 10 fps,
3 s per take at 1x), then `stages/extract.py` (96 px crops) and `stages/detect_2d.py` with a
ResNet-18 pose_resnet of the default params (random weights: the speed and memory of detection
do not depend on them; detection metrics are meaningless here). MLflow is off. Every stage is
its own process, as under DVC, started with `nice -n 19` and OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

import yaml

REPO = Path(__file__).resolve().parents[1]
ACTIONS = ["Directions", "Eating", "Walking", "Sitting"]


def timed(cmd: list[str], env: dict) -> dict:
    """Run ``cmd`` under /usr/bin/time -v: {max_rss_mb, seconds}."""
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", "nice", "-n", "19", *cmd], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return {"max_rss_mb": round(rss_kb / 1024, 1), "seconds": round(seconds, 1)}


def random_pose2d(model_dir: Path, params: dict, crop_size: int) -> None:
    """models/pose2d/{model.pt, config.json} of the default architecture, random weights."""
    import torch

    from pose3d.runtime import params as P
    from pose3d.runtime.train import save_model
    from pose3d.tasks.pose2d import build_model, model_config_of

    p = P.from_dict(P.Pose2D, params["pose2d"], "pose2d")
    cfg = model_config_of(p, 17)
    torch.manual_seed(0)
    save_model(model_dir, build_model(p.architecture, cfg),
               {**cfg.to_dict(), "input_size": crop_size, "sigma": p.sigma, "architecture": p.architecture})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "reports/benchmarks/scale.json")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4])
    a = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for x in a.scales:
            root = tmp / f"x{x}"
            root.mkdir()
            params = yaml.safe_load((REPO / "params.yaml").read_text())
            params["base"].update({"mlflow": False, "num_threads": 1, "device": "cpu"})
            params["studio"].update({"subjects": {"S1": "train", "S9": "test"}, "actions": ACTIONS,
                                     "seconds": 3.0 * x, "workers": 1})
            (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            pp = ["--params", str(root / "params.yaml")]
            s = root / "studio"
            run = lambda cmd: timed(cmd, env)  # noqa: E731
            studio = run([py, str(REPO / "stages/studio.py"), "--mocap", str(s / "mocap.h5"), "--cameras",
                          str(s / "cameras.json"), "--videos", str(s / "videos"), "--metrics",
                          str(root / "studio.json"), "--timings", str(root / "studio_t.json"), *pp])
            ext = run([py, str(REPO / "stages/extract.py"), "--mocap", str(s / "mocap.h5"), "--cameras",
                       str(s / "cameras.json"), "--videos", str(s / "videos"), "--out-h5", str(root / "crops.h5"),
                       "--out-index", str(root / "crops.parquet"), *pp])
            random_pose2d(root / "pose2d", params, params["extract"]["crop_size"])
            det = run([py, str(REPO / "stages/detect_2d.py"), "--crops-h5", str(root / "crops.h5"), "--crops-index",
                       str(root / "crops.parquet"), "--model-dir", str(root / "pose2d"), "--out",
                       str(root / "det.parquet"), "--metrics", str(root / "det.json"),
                       "--per-joint", str(root / "det_joints.csv"), "--figure",
                       str(root / "det.png"), *pp])
            n = pq.read_metadata(root / "det.parquet").num_rows
            row = {"scale": x, "seconds_per_take": 3.0 * x, "crops": n,
                   "crops_h5_mb": round((root / "crops.h5").stat().st_size / 2**20, 2),
                   "crops_parquet_mb": round((root / "crops.parquet").stat().st_size / 2**20, 3),
                   "studio": studio, "extract": {**ext, "frames_per_s": round(n / ext["seconds"], 1)},
                   "detect_2d": {**det, "frames_per_s": round(n / det["seconds"], 1)}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"machine": os.uname().nodename, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
