"""Where one train_2d step goes: the stage's data path (EpochBatches: augmentation + collation),
forward, loss, backward and the optimiser, timed separately; then the same network on one fixed
input with no data work.

    python benchmarks/pose2d_step_profile.py --crops data/crops --threads 2 [--steps 40]

Settings are params.yaml's ``pose2d`` section (bf16 autocast, channels_last, fused Adam, as the
stage on a CPU with native bf16). Prints milliseconds per step.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from pose3d.runtime import params as P
from pose3d.data.crops import CropDataset, read_crop_index, read_crops
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
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    p = P.load("pose2d", a.params)
    index = read_crop_index(a.crops / "crops.parquet")
    train, _ = pose2d.split_crops(index, 1600, 8)
    dataset = CropDataset(read_crops(a.crops / "crops.h5", train.keys["index"].to_numpy()),
                          pose2d.joints_in_crops(train), pose2d.augmentation_of(p), seed=0)
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
    print("fixed input, no data work, ms:", round(1000 * (time.perf_counter() - t0) / 20, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
