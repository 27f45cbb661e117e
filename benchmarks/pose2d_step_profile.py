"""Where one train_2d step goes: the stage's data path (EpochBatches: reading the batch's crops,
augmentation, collation), forward, loss, backward and the optimiser, timed separately; then the
same network on one fixed input with no data work.

    python benchmarks/pose2d_step_profile.py --crops data/crops --threads 2 [--steps 40]
        [--stream] [--crops-h5 other.h5 --tile K] [--max-train 0] [--json out.json]

``--stream``: the batch's crops are read from crops.h5 (CropStore, what the stage does), else
the train crops are read into memory first. ``--crops-h5``: another crops.h5 (e.g. re-chunked)
whose rows are ``--tile`` copies of the index's rows (copy k of row r at r + k N), the index's
train rows tiled alike (``benchmarks/train_stream.py`` builds such files). ``--max-train``: train
crops used (evenly spaced; 0 = all). Also prints the process's max RSS.

Settings are params.yaml's ``pose2d`` section (bf16 autocast, channels_last, fused Adam, as the
stage on a CPU with native bf16). Prints milliseconds per step.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from pose3d.runtime import params as P
import numpy as np

from pose3d.data.crops import CropDataset, CropStore, read_crop_index, read_crops
from pose3d.heatmaps import crop_to_heatmap, gaussian_targets, weighted_mse
from pose3d.tasks import pose2d
from pose3d.runtime.train import adam, autocast

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", type=Path, default=REPO / "data/crops")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--crops-h5", type=Path)
    ap.add_argument("--tile", type=int, default=1)
    ap.add_argument("--max-train", type=int, default=1600)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    p = P.load("pose2d", a.params)
    index = read_crop_index(a.crops / "crops.parquet")
    train, _ = pose2d.split_crops(index, a.max_train, 8)
    rows = np.concatenate([train.keys["index"].to_numpy() + k * len(index) for k in range(a.tile)])
    joints = np.concatenate([pose2d.joints_in_crops(train)] * a.tile)
    h5 = a.crops_h5 or a.crops / "crops.h5"
    t0 = time.perf_counter()
    crops = CropStore(h5, rows) if a.stream else read_crops(h5, rows)
    load_s = time.perf_counter() - t0
    dataset = CropDataset(crops, joints, pose2d.augmentation_of(p), seed=0)
    torch.manual_seed(0)
    config = pose2d.model_config_of(p, len(index.meta["joint_names"]))
    model = pose2d.build_model(p.architecture, config).to(memory_format=torch.channels_last).train()
    opt = adam(model.parameters(), lr=p.lr)
    cpu = torch.device("cpu")
    parts = dict.fromkeys(("data", "forward", "loss", "backward", "optimiser"), 0.0)
    batches = iter(pose2d.EpochBatches(dataset, p.batch_size, 0)(0))
    warmup = 5
    for k in range(a.steps + warmup):
        t = [time.perf_counter()]
        images, joints, weights = next(batches)
        images = images.contiguous(memory_format=torch.channels_last)
        t.append(time.perf_counter())
        with autocast(cpu, "bf16"):
            hm = model(images)
        t.append(time.perf_counter())
        targets, inside = gaussian_targets(crop_to_heatmap(joints, config.stride), *hm.shape[-2:], p.sigma)
        loss = weighted_mse(hm.float(), targets, weights * inside)
        t.append(time.perf_counter())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t.append(time.perf_counter())
        opt.step()
        t.append(time.perf_counter())
        if k >= warmup:
            for key, t0, t1 in zip(parts, t, t[1:]):
                parts[key] += t1 - t0
    ms = {k: round(1000 * v / a.steps, 1) for k, v in parts.items()}
    print("stage step, ms:", ms, "total", round(sum(ms.values()), 1))
    t0 = time.perf_counter()
    for _ in range(20):
        with autocast(cpu, "bf16"):
            hm = model(images)
        loss = weighted_mse(hm.float(), targets, weights * inside)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    fixed = round(1000 * (time.perf_counter() - t0) / 20, 1)
    print("fixed input, no data work, ms:", fixed)
    rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"{len(dataset)} train crops ({'streamed' if a.stream else 'in memory'}, read in {load_s:.1f} s); "
          f"max RSS {rss} MB")
    if a.json:
        a.json.write_text(json.dumps({"crops_h5": h5.name, "stream": a.stream, "train_crops": len(dataset),
                                      "threads": a.threads, "steps": a.steps, "load_s": round(load_s, 1),
                                      "ms": ms, "step_ms": round(sum(ms.values()), 1),
                                      "data_share": round(ms["data"] / sum(ms.values()), 3),
                                      "fixed_input_ms": fixed, "max_rss_mb": rss}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
