"""What a training loader streaming from crops.h5 pays: milliseconds to read one batch of
crops in random order (what a shuffled epoch asks for) and in file order, for crops.h5 as
given and for re-chunked copies of its first ``--copy`` crops (in a temporary folder): 64, 8
and 1 crops per chunk, gzip level 1 or lzf. Readers: pose3d.data.crops.read_crops (block-wise
for chunks of many crops), h5py directly (one fancy-index read; one read per row), and
:class:`pose3d.data.crops.CropStore` (what train_2d and train_hg3d stream through: one read
per run of consecutive rows, sorted). Also per copy: MB on disk per 1,000 crops, seconds to
write it (what extract pays) and to read it whole in 64-crop blocks (what detect_2d does).

    python benchmarks/crops_read.py --crops-h5 data/crops/crops.h5 [--batch 32] [--batches 30]
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

from pose3d.data.crops import CropStore, iter_crop_blocks, read_crops

#: (crops per chunk, compression, its option) of the re-chunked copies
LAYOUTS = ((64, "gzip", 1), (8, "gzip", 1), (1, "gzip", 1), (1, "lzf", None))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops-h5", required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--copy", type=int, default=4096)
    ap.add_argument("--out", help="also write the JSON here")
    a = ap.parse_args(argv)
    with h5py.File(a.crops_h5, "r") as f:
        n, chunks = f["crops"].shape[0], f["crops"].chunks
    rng = np.random.default_rng(0)
    out = {"crops": int(n), "chunks": list(chunks), "batch": a.batch}

    def timeit(name, read, n_rows, orders=("random", "sequential")):
        for order in orders:
            t0 = time.perf_counter()
            for k in range(a.batches):
                rows = (np.sort(rng.choice(n_rows, a.batch, replace=False)) if order == "random"
                        else np.arange(k * a.batch, (k + 1) * a.batch) % n_rows)
                read(rows)
            out[f"{name}_{order}_ms_per_batch"] = round((time.perf_counter() - t0) / a.batches * 1000, 1)

    timeit("given_read_crops", lambda rows: read_crops(a.crops_h5, rows), n)
    with h5py.File(a.crops_h5, "r") as f:
        ds = f["crops"]
        timeit("given_h5py", lambda rows: ds[rows], n)
        timeit("given_h5py_per_row", lambda rows: np.stack([ds[int(i)] for i in rows]), n)
        first = ds[:min(a.copy, n)]
    store = CropStore(a.crops_h5)
    timeit("given_store", store.read, n)
    store.close()
    with tempfile.TemporaryDirectory() as d:
        for c, comp, opt in LAYOUTS:
            name = f"chunk{c}_{comp}"
            path = Path(d) / f"{name}.h5"
            t0 = time.perf_counter()
            with h5py.File(path, "w") as g:
                w = g.create_dataset("crops", shape=(0,) + first.shape[1:], maxshape=(None,) + first.shape[1:],
                                     dtype=np.uint8, chunks=(c,) + first.shape[1:], compression=comp,
                                     compression_opts=opt)
                for s in range(0, len(first), 64):  # extract's flushes of 64 crops
                    w.resize(min(s + 64, len(first)), axis=0)
                    w[s:s + 64] = first[s:s + 64]
            out[f"{name}_write_s_per_1000_crops"] = round((time.perf_counter() - t0) / len(first) * 1000, 3)
            out[f"{name}_mb_per_1000_crops"] = round(path.stat().st_size / 2**20 / len(first) * 1000, 2)
            t0 = time.perf_counter()
            got = np.concatenate([b for _, b in iter_crop_blocks(path, block=64)])
            out[f"{name}_read_all_s_per_1000_crops"] = round((time.perf_counter() - t0) / len(first) * 1000, 3)
            assert np.array_equal(got, first), name  # only the layout differs
            with h5py.File(path, "r") as g:
                ds = g["crops"]
                timeit(f"{name}_h5py", lambda rows: ds[rows], len(first), ("random",))
                timeit(f"{name}_h5py_per_row", lambda rows: np.stack([ds[int(i)] for i in rows]), len(first),
                       ("random",))
            store = CropStore(path)
            timeit(f"{name}_store", store.read, len(first))
            store.close()
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
