"""Where the 2D learning curve stalls: pose_resnet trained with the stage's step, validated
every ``--every`` optimiser steps on 256 test crops (flip + DARK), with the arm-confusion rate
(an elbow or wrist nearer the other arm's ground truth) that shows left/right collapse.

    python benchmarks/pose2d_plateau.py OUT.jsonl --crops data/crops --threads 1 [--size 64]
        [--batch-size 16] [--sigma 2.5] [--flip-prob 0] [--steps 900 --every 75]

``--size`` trains and validates on crops resampled to that size (the warm-up of
``pose2d.warmup_size``); other settings are params.yaml's ``pose2d`` section. One JSON line per
validation: step, samples, seconds, PCK@0.1, mean / median / wrist px (512 px frames), arm
confusions %. The rows of reports/benchmarks/pose2d_runs/plateau/ come from this script
(session 7 ran an earlier draft of it with the same arithmetic). The figure:

    python benchmarks/pose2d_plateau.py --figure reports/figures/pose2d_plateau.png \
        "96 px:reports/benchmarks/pose2d_runs/plateau/base.jsonl" ...
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from pose3d.runtime import params as P
from pose3d.data.crops import CropDataset, read_crop_index, read_crops, resize_crops
from pose3d.heatmaps import crop_to_heatmap, gaussian_targets, weighted_mse
from pose3d.tasks import pose2d
from pose3d.runtime.train import adam, autocast

REPO = Path(__file__).resolve().parents[1]


def figure(png: Path, runs: list[str]) -> None:
    """Arm confusions and mean error against samples seen, one line per ``LABEL:PATH.jsonl``."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        label, _, path = run.rpartition(":")
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        x = [r["samples"] / 1000 for r in rows]
        axes[0].plot(x, [r["arm_conf"] for r in rows], marker="o", label=label)
        axes[1].plot(x, [r["mean_px"] for r in rows], marker="o", label=label)
    axes[0].set(xlabel="samples seen (thousands)", ylabel="arm confusions, % of crops",
                title="left/right collapse: both arms drawn on one")
    axes[1].set(xlabel="samples seen (thousands)", ylabel="mean error, px of the 512 px frame",
                title="validation (256 test crops, flip + DARK)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--figure", type=Path, help="draw the runs given as LABEL:PATH instead of training")
    ap.add_argument("runs", nargs="*", default=[])
    ap.add_argument("--crops", type=Path, default=REPO / "data/crops")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--every", type=int, default=75)
    ap.add_argument("--size", type=int, default=0, help="train and validate at this crop size (0: stored)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--sigma", type=float, default=None)
    ap.add_argument("--flip-prob", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if a.figure:
        figure(a.figure, ([str(a.out)] if a.out else []) + a.runs)
        return 0
    if a.out is None:
        ap.error("OUT.jsonl is required when training")
    torch.set_num_threads(a.threads)
    p = P.load("pose2d", a.params)
    changes = {k: v for k, v in (("batch_size", a.batch_size), ("sigma", a.sigma), ("aug_flip_prob", a.flip_prob))
               if v is not None}
    p = dataclasses.replace(p, **changes)
    index = read_crop_index(a.crops / "crops.parquet")
    train_idx, val_idx = pose2d.split_crops(index, 0, 256)
    size = a.size or index.crop_size
    dataset = CropDataset(read_crops(a.crops / "crops.h5", train_idx.keys["index"].to_numpy()),
                          pose2d.joints_in_crops(train_idx), pose2d.augmentation_of(p), seed=0)
    val_crops = resize_crops(read_crops(a.crops / "crops.h5", val_idx.keys["index"].to_numpy()), size)
    torch.manual_seed(0)
    config = pose2d.model_config_of(p, len(index.meta["joint_names"]))
    model = pose2d.build_model(p.architecture, config).to(memory_format=torch.channels_last)
    opt = adam(model.parameters(), lr=p.lr)
    cpu = torch.device("cpu")
    kw = dict(batch_size=64, flip=True, method=p.decode, sigma=p.sigma, precision="bf16", channels_last=True)
    batches = pose2d.EpochBatches(dataset, p.batch_size, 0, size_of_epoch=lambda e: size)
    widths = pose2d.image_widths(val_idx)
    step, epoch, t0 = 0, 0, time.time()
    with open(a.out, "w") as out:
        while step < a.steps:
            for images, joints, weights in batches(epoch):
                with autocast(cpu, "bf16"):
                    hm = model(images.contiguous(memory_format=torch.channels_last))
                targets, inside = gaussian_targets(crop_to_heatmap(joints, config.stride), *hm.shape[-2:], p.sigma)
                loss = weighted_mse(hm.float(), targets, weights * inside)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if step % a.every == 0:
                    model.eval()
                    _, m = pose2d.score_crops(model, val_crops, val_idx, widths, **kw)
                    model.train()
                    row = {"step": step, "samples": step * p.batch_size, "sec": round(time.time() - t0, 1),
                           "pck01": round(100 * m["pck_0.1"], 2), "mean_px": round(m["mean_px_error"], 2),
                           "median_px": round(m["median_px_error"], 2),
                           "wrists": round(m["wrists_mean_px_error"], 2),
                           "arm_conf": round(100 * m["arm_confusion_rate"], 1), "loss": float(loss.detach())}
                    print(json.dumps(row), file=out, flush=True)
                if step >= a.steps:
                    break
            epoch += 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
