"""What a training loader streaming from crops.h5 would pay: milliseconds to read one batch of
crops in random order (what a shuffled epoch asks for) and in file order: through
pose3d.data.crops.read_crops (block-wise, for whole-split reads), through h5py directly (one
fancy-index read, or one read per row) with the
file's own chunking (64 crops per gzip chunk, written by extract), and from re-chunked copies
of the first ``--copy`` crops (1 and 8 crops per chunk, gzip 1) in a temporary folder.

    python benchmarks/crops_read.py --crops-h5 data/crops/crops.h5 [--batch 32] [--batches 30]

train_2d today reads its training crops into memory once (pose3d.tasks.pose2d.fit); this
measures the alternative for data that does not fit in memory.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from pose3d.data.crops import read_crops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops-h5", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--copy", type=int, default=4096)
    a = ap.parse_args(argv)
    with h5py.File(a.crops_h5, "r") as f:
        n, chunks = f["crops"].shape[0], f["crops"].chunks
    rng = np.random.default_rng(0)
    out = {"crops": int(n), "chunks": list(chunks), "batch": a.batch}

    def timeit(name, read, n_rows):
        for order, rows_of in (("random", lambda k: np.sort(rng.choice(n_rows, a.batch, replace=False))),
                               ("sequential", lambda k: np.arange(k * a.batch, (k + 1) * a.batch) % n_rows)):
            t0 = time.perf_counter()
            for k in range(a.batches):
                read(rows_of(k))
            out[f"{name}_{order}_ms_per_batch"] = round((time.perf_counter() - t0) / a.batches * 1000, 1)

    timeit("read_crops", lambda rows: read_crops(a.crops_h5, rows), n)
    with h5py.File(a.crops_h5, "r") as f:
        ds = f["crops"]
        timeit("h5py", lambda rows: ds[rows], n)
        timeit("h5py_per_row", lambda rows: np.stack([ds[int(i)] for i in rows]), n)
        first = ds[:min(a.copy, n)]
    with tempfile.TemporaryDirectory() as d:
        for c in (1, 8):
            path = Path(d) / f"c{c}.h5"
            with h5py.File(path, "w") as g:
                g.create_dataset("crops", data=first, chunks=(c,) + first.shape[1:], compression="gzip",
                                 compression_opts=1)
            out[f"chunk{c}_file_mb_per_1000_crops"] = round(path.stat().st_size / 2**20 / len(first) * 1000, 2)
            with h5py.File(path, "r") as g:
                ds = g["crops"]
                timeit(f"h5py_chunk{c}", lambda rows: ds[rows], len(first))
                timeit(f"h5py_chunk{c}_per_row", lambda rows: np.stack([ds[int(i)] for i in rows]), len(first))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
