"""train_2d reading its crops from crops.h5 batch by batch vs holding them in memory: the
loader's share of a step and the process's max RSS, at the default DAG's crops (1x) and at 4x
as many (the same crops written four times).

    python benchmarks/train_stream.py --crops data/crops --out reports/benchmarks/train_stream.json
        [--steps 60] [--threads 1] [--tile 4]

Builds, in a temporary folder, crops.h5 re-written with extract's layout
(:func:`pose3d.data.crops.create_crops_dataset`: one crop per gzip-1 chunk) once and ``--tile``
times, then runs ``benchmarks/pose2d_step_profile.py`` (every train crop, params.yaml's pose2d
section, ``--threads`` threads) as its own process under ``nice -n 19`` for: in memory and
streamed from the given file (extract's old layout: 64 crops per chunk), streamed from the
one-crop-per-chunk copy, and in memory and streamed from the tiled copy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

from pose3d.data.crops import create_crops_dataset, iter_crop_blocks

REPO = Path(__file__).resolve().parents[1]


def rewrite(src: Path, dst: Path, tile: int) -> dict:
    """``src``'s crops, ``tile`` times over, in extract's layout -> {mb, seconds}."""
    t0 = time.perf_counter()
    with h5py.File(src, "r") as f:
        size = int(f["crops"].shape[1])
    with h5py.File(dst, "w") as g:
        ds = create_crops_dataset(g, size)
        for _ in range(tile):
            for _, block in iter_crop_blocks(src, block=64):
                n0 = ds.shape[0]
                ds.resize(n0 + len(block), axis=0)
                ds[n0:] = block
    return {"mb": round(dst.stat().st_size / 2**20, 2), "seconds": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=Path, default=REPO / "data/crops")
    ap.add_argument("--out", type=Path, default=REPO / "reports/benchmarks/train_stream.json")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tile", type=int, default=4)
    a = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    given = a.crops / "crops.h5"
    out = {"given_mb": round(given.stat().st_size / 2**20, 2), "runs": []}
    with tempfile.TemporaryDirectory() as d:
        one, tiled = Path(d) / "chunk1.h5", Path(d) / f"chunk1_x{a.tile}.h5"
        out["chunk1"] = rewrite(given, one, 1)
        out[f"chunk1_x{a.tile}"] = rewrite(given, tiled, a.tile)
        print(json.dumps(out), flush=True)
        for h5, tile, stream in ((given, 1, False), (given, 1, True), (one, 1, True), (tiled, a.tile, False),
                                 (tiled, a.tile, True)):
            js = Path(d) / "run.json"
            cmd = ["nice", "-n", "19", sys.executable, str(REPO / "benchmarks/pose2d_step_profile.py"),
                   "--crops", str(a.crops), "--crops-h5", str(h5), "--tile", str(tile), "--max-train", "0",
                   "--threads", str(a.threads), "--steps", str(a.steps), "--json", str(js)]
            subprocess.run(cmd + (["--stream"] if stream else []), env=env, check=True)
            run = {"file": "given" if h5 == given else h5.stem, "tile": tile, **json.loads(js.read_text())}
            out["runs"].append(run)
            print(json.dumps(run), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
