"""Where the wrist error of a detections file sits, and whether a temporal left/right pass helps.

    python benchmarks/pose2d_confusions.py --crops-index data/crops/crops.parquet \
        --detections data/detections_2d.parquet [--out reports/benchmarks/pose2d_confusions.json]

Per split (train / test subjects): the share of crops with an arm confusion
(:func:`pose3d.tasks.pose2d.left_right_swaps`, kind="confusion") and of arm swaps, the wrist
error with and without a confusion, the share of confused crops whose two wrists were predicted
on one spot (within 5 % of the box), the two wrists' peak scores there; then a temporal
left/right consistency pass (per video, swap a frame's left and right limb when the crossed
assignment lies nearer the previous frame's than ``ratio`` x the straight one) and what it does
to swaps and errors. Errors are pixels of the full frames.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from pose3d.data.contracts import read_detections
from pose3d.data.crops import read_crop_index
from pose3d.data.io import write_json
from pose3d.skeleton import JOINT_INDEX
from pose3d.tasks.pose2d import SWAP_LIMBS, left_right_swaps


def temporal_lr_pass(pred: np.ndarray, keys, limb, ratio: float) -> tuple[np.ndarray, int]:
    """pred (N, J, 2) rows keyed by ``keys`` (subject, action, camera, frame) -> the same with a
    frame's left/right ``limb`` exchanged where that fits the previous (corrected) frame better."""
    out = pred.copy()
    L = [JOINT_INDEX[f"l_{j}"] for j in limb]
    R = [JOINT_INDEX[f"r_{j}"] for j in limb]
    switched = 0
    for _, g in keys.groupby(["subject", "action", "camera"], sort=False):
        rows = g.sort_values("frame").index.to_numpy()
        for a, b in zip(rows[:-1], rows[1:]):
            same = np.linalg.norm(out[b, L + R] - out[a, L + R], axis=-1).sum()
            cross = np.linalg.norm(out[b, L + R] - out[a, R + L], axis=-1).sum()
            if cross < ratio * same:
                out[b, L + R] = out[b, R + L]
                switched += 1
    return out, switched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crops-index", required=True)
    ap.add_argument("--detections", required=True)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--out")
    a = ap.parse_args()
    index, det = read_crop_index(a.crops_index), read_detections(a.detections)
    keys = index.keys.reset_index(drop=True)
    rows = keys.merge(det.keys.reset_index(drop=True).reset_index(), how="left",
                      on=["subject", "action", "camera", "frame"])["index_y"].to_numpy()
    wrists = [JOINT_INDEX["l_wrist"], JOINT_INDEX["r_wrist"]]
    report = {}
    for split in ("train", "test"):
        s = (keys["split"] == split).to_numpy()
        k = keys[s].reset_index(drop=True)
        pred, gt = det.keypoints[rows[s]].astype(np.float64), index.gt_2d[s].astype(np.float64)
        scores = det.scores[rows[s]]
        box = np.linalg.norm(index.crop_to_image[s][:, :, 0], axis=-1) * index.crop_size
        arm = SWAP_LIMBS["arm"]
        confused = left_right_swaps(pred, gt, box, arm, kind="confusion")
        err = np.linalg.norm(pred - gt, axis=-1)[:, wrists]
        one_spot = np.linalg.norm(pred[:, wrists[0]] - pred[:, wrists[1]], axis=-1) < 0.05 * box
        worse = np.where(err[:, 0] > err[:, 1], wrists[0], wrists[1])
        better = np.where(err[:, 0] > err[:, 1], wrists[1], wrists[0])
        i = np.arange(len(pred))
        r = {"crops": int(s.sum()), "arm_confusion_frac": float(confused.mean()),
             "arm_swap_frac": float(left_right_swaps(pred, gt, box, arm).mean()),
             "wrist_px": float(err.mean()), "wrist_px_confused": float(err[confused].mean()),
             "wrist_px_not_confused": float(err[~confused].mean()),
             "wrist_error_share_of_confused": float(err[confused].sum() / err.sum()),
             "confused_with_wrists_on_one_spot_frac": float(one_spot[confused].mean()),
             "confused_score_worse_wrist_median": float(np.median(scores[i, worse][confused])),
             "confused_score_better_wrist_median": float(np.median(scores[i, better][confused])),
             "temporal_pass": []}
        for ratio in a.ratios:
            fixed, n = temporal_lr_pass(pred, k, arm, ratio)
            r["temporal_pass"].append({
                "ratio": ratio, "frames_switched": n,
                "arm_swap_frac": float(left_right_swaps(fixed, gt, box, arm).mean()),
                "wrist_px": float(np.linalg.norm(fixed - gt, axis=-1)[:, wrists].mean())})
        report[split] = r
        print(split, json.dumps(r))
    if a.out:
        write_json(a.out, report)


if __name__ == "__main__":
    main()
