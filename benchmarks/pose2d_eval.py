"""Accuracy of a trained 2D model on every crop of a split (test by default), with and without flip test.

    python benchmarks/pose2d_eval.py --model-dir models/pose2d --crops data/crops [--threads 2]

For each of flip off / on: PCK@0.05 / @0.1, mean and median px on the full frames, px per
1000 px of frame width, elbows / wrists / knees / ankles mean px, the share of crops with a
left/right arm or leg swap (:func:`pose3d.tasks.pose2d.left_right_swaps`), per-joint mean px, and the
inference rate (crops/s), and where the wrist error sits (median, 90th percentile, mean on crops
with and without an arm confusion, share of the summed error in the worst 5 % of wrists). One JSON line per setting on stdout; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from pose3d.tasks import pose2d
from pose3d.data.crops import apply_affine, read_crop_index, read_crops
from pose3d.runtime.train import resolve_precision


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--crops", required=True, help="folder with crops.h5 + crops.parquet")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--flip", choices=["both", "on", "off"], default="both")
    ap.add_argument("--split", default="test", help="test | train: the train split shows the generalisation gap")
    ap.add_argument("--max-crops", type=int, default=0, help="evenly spaced subset (0 = all)")
    ap.add_argument("--swap-figure", help="PNG: up to 16 crops with a left/right arm swap (flip test on)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    crops_dir = Path(a.crops)
    index = read_crop_index(crops_dir / "crops.parquet")
    test = index.select(index.keys["split"].to_numpy() == a.split)
    test = test.select(pose2d.evenly_spaced(len(test), a.max_crops))
    crops = read_crops(crops_dir / "crops.h5", test.keys["index"].to_numpy())
    model, cfg = pose2d.load_model(Path(a.model_dir), device="auto")
    device = next(model.parameters()).device
    precision = resolve_precision(a.precision, device)
    box = test.bbox_xyxy[:, 2] - test.bbox_xyxy[:, 0]
    results = []
    for flip in {"both": (False, True), "on": (True,), "off": (False,)}[a.flip]:
        t0 = time.perf_counter()
        pred, m = pose2d.score_crops(model, crops, test, pose2d.image_widths(test), batch_size=64, flip=flip,
                                     method="dark", sigma=float(cfg.get("sigma", 1.5)), precision=precision,
                                     channels_last=device.type == "cpu")
        seconds = time.perf_counter() - t0
        # where the wrist error sits: the tail (arms confused or hidden) vs the rest
        names = list(pose2d.JOINT_NAMES)
        wr = [names.index("l_wrist"), names.index("r_wrist")]
        err = np.linalg.norm(pred[:, wr] - test.gt_2d[:, wr], axis=-1)  # (N, 2)
        confused = pose2d.left_right_swaps(pred, test.gt_2d, box, pose2d.SWAP_LIMBS["arm"], kind="confusion")
        top = np.sort(err.ravel())[::-1][:max(1, err.size // 20)]
        wrists = {"wrists_median_px": float(np.median(err)), "wrists_p90_px": float(np.percentile(err, 90)),
                  "wrists_mean_px_without_arm_confusion": float(err[~confused].mean()),
                  "wrists_mean_px_with_arm_confusion": float(err[confused].mean()) if confused.any() else None,
                  "wrists_error_share_of_worst_5pct": float(top.sum() / err.sum())}
        row = {"model_dir": str(a.model_dir), "split": a.split, "flip_test": flip, "precision": precision,
               "crops_per_s": round(len(crops) / seconds, 1),
               **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in {**m, **wrists}.items()
                  if k != "per_joint"},
               "per_joint_mean_px": {k: round(v["mean_px_error"], 2) for k, v in m["per_joint"].items()}}
        print(json.dumps(row), flush=True)
        if a.swap_figure and (flip or a.flip == "off"):
            swapped = np.flatnonzero(pose2d.left_right_swaps(pred, test.gt_2d, box, pose2d.SWAP_LIMBS["arm"]))
            pick = swapped[np.linspace(0, len(swapped) - 1, min(16, len(swapped))).round().astype(int)] \
                if len(swapped) else swapped
            itc = test.image_to_crop()[pick]
            titles = [f"{r.subject} {r.action} {r.camera} #{r.frame}" for r in test.keys.iloc[pick].itertuples()]
            pose2d.draw_crop_grid(a.swap_figure, crops[pick], apply_affine(itc, pred[pick]),
                                  apply_affine(itc, test.gt_2d[pick].astype(np.float64)), titles)
        results.append(row)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
