"""Throughput of the 2D pose network: training images/s and inference crops/s.

    python benchmarks/pose2d.py --out reports/benchmarks/pose2d.json [--depth 18 --size 96 --deconv-channels 128]

Also counts the FLOPs of one training step (torch's FlopCounterMode, forward + backward) and
times a 2048^2 matmul in fp32 and bf16, so the step's achieved FLOP rate can be read against
the machine's matmul rate of the same precision.

Runs a few warm-up steps, then times ``--steps`` training steps (Adam, target-weighted MSE,
batch ``--batch``) and inference batches (flip test + DARK decoding, as detect_2d) for each
precision / memory-format variant. Random inputs: throughput does not depend on content.
On a shared CPU the numbers are pessimistic; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pose3d.tasks import pose2d
from pose3d.heatmaps import crop_to_heatmap, gaussian_targets, weighted_mse
from pose3d.models.pose_resnet import PoseResNet, PoseResNetConfig
from pose3d.runtime.train import resolve_device


def _train_rate(depth, channels, size, batch, steps, precision, channels_last, device):
    torch.manual_seed(0)
    net = PoseResNet(PoseResNetConfig(depth=depth, deconv_channels=channels)).to(device).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(batch, 3, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    j = torch.rand(batch, 17, 2, device=device) * size
    H = size // 4
    t, w = gaussian_targets(crop_to_heatmap(j, 4), H, H, 1.5)
    dtype = torch.bfloat16 if precision == "bf16" else (torch.float16 if precision == "fp16" else None)

    def step():
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else torch.autocast(device.type, enabled=False)
        with ctx:
            hm = net(x)
        loss = weighted_mse(hm.float(), t, w)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def _train_flops_per_image(depth, channels, size, batch):
    """FLOPs of one training step (forward + backward, counted by torch's FlopCounterMode) / batch."""
    from torch.utils.flop_counter import FlopCounterMode

    net = PoseResNet(PoseResNetConfig(depth=depth, deconv_channels=channels)).train()
    x = torch.randn(batch, 3, size, size)
    with FlopCounterMode(display=False) as fc:
        net(x).square().mean().backward()
    return fc.get_total_flops() / batch


def _matmul_rate(precision, device, n=2048, reps=10):
    """Measured dense matmul rate (FLOP/s) at n x n in fp32 or bf16: the ceiling of the step."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0)


def _infer_rate(depth, channels, size, batch, steps, precision, device):
    torch.manual_seed(0)
    net = PoseResNet(PoseResNetConfig(depth=depth, deconv_channels=channels)).to(device).eval()
    cl = device.type == "cpu"
    if cl:
        net = net.to(memory_format=torch.channels_last)
    crops = np.random.default_rng(0).integers(0, 255, (batch, size, size, 3), dtype=np.uint8)
    kw = dict(flip=True, method="dark", sigma=1.5, precision=precision, channels_last=cl)
    pose2d.predict(net, crops, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        pose2d.predict(net, crops, **kw)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--deconv-channels", type=int, default=128)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    variants = ([("fp32", False), ("fp32", True), ("bf16", True)] if device.type == "cpu"
                else [("fp32", False), ("bf16", False)])
    res = {"device": str(device), "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "loadavg_1min_before": os.getloadavg()[0], "depth": a.depth, "deconv_channels": a.deconv_channels, "input_size": a.size,
           "batch": a.batch, "steps": a.steps, "train_img_per_s": {}, "infer_crops_per_s": {}}
    for prec, cl in variants:
        key = f"{prec}{'+channels_last' if cl else ''}"
        res["train_img_per_s"][key] = round(_train_rate(a.depth, a.deconv_channels, a.size, a.batch, a.steps, prec, cl, device), 1)
        print(key, "train img/s", res["train_img_per_s"][key], flush=True)
    flops = _train_flops_per_image(a.depth, a.deconv_channels, a.size, 4)
    res["train_gflop_per_image"] = round(flops / 1e9, 3)
    res["matmul_gflop_per_s"] = {p: round(_matmul_rate(p, device) / 1e9, 1) for p in ("fp32", "bf16")}
    res["achieved_gflop_per_s"] = {k: round(v * flops / 1e9, 1) for k, v in res["train_img_per_s"].items()}
    res["fraction_of_matmul_rate"] = {
        k: round(v / res["matmul_gflop_per_s"]["bf16" if k.startswith("bf16") else "fp32"], 3)
        for k, v in res["achieved_gflop_per_s"].items()}
    print("train GFLOP/image", res["train_gflop_per_image"], "matmul GFLOP/s", res["matmul_gflop_per_s"],
          "achieved", res["achieved_gflop_per_s"], flush=True)
    for prec in ("fp32", "bf16"):
        res["infer_crops_per_s"][f"{prec}+flip+dark"] = round(
            _infer_rate(a.depth, a.deconv_channels, a.size, 64, a.steps, prec, device), 1)
        print(prec, "infer crops/s", res["infer_crops_per_s"][f"{prec}+flip+dark"], flush=True)
    res["loadavg_1min_after"] = os.getloadavg()[0]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
