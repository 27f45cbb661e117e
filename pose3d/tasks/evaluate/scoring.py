"""Scoring: every method's 3D predictions against the studio's ground truth.

One entry point per step, each a plain function over arrays and tables:

* :func:`pose3d.data.contracts.read_predictions` reads ``data/predictions/<method>.parquet``
  (the contract is documented there) with joints in H36M-17 order.
* :class:`pose3d.data.views.GroundTruth` joins rows to ``mocap.h5`` by (subject, action,
  frame) and, for camera-frame tables, maps the world poses into that camera
  (``x_cam = R x_world + t``).
* :func:`evaluate_predictions` computes, per row and batched in torch, MPJPE (protocol 1,
  root-aligned), P-MPJPE (protocol 2, similarity Procrustes), N-MPJPE (root + scale), PCK3D
  at 150 mm and its AUC over 0..150 mm; per joint (protocol 1 and 2); and MPJVE over pairs of
  consecutive frames of one sequence (and camera).

Averages, because the field mixes them up:
* **frame-wise** (the headline here, keys without suffix, e.g. ``mpjpe_mm``): the mean over
  every evaluated row, i.e. every test frame of every camera for camera-frame methods, every
  test frame for world-frame methods.
* **action-wise** (keys ending ``_actionwise``): the mean over actions of each action's
  frame-wise mean; this is what most Human3.6M papers print as "Avg" in their tables.

Frames of reference:
* camera: ground truth is the world pose mapped into that row's camera;
* world: ground truth is the world pose;
* reference_camera (uncalibrated triangulation: the scene is known only up to a similarity):
  ground truth is the world pose in the reference camera, and every sequence's predictions are
  first moved by the one similarity (s, R, t) that best fits all its frames (Umeyama). Only
  alignment-invariant numbers mean something there: P-MPJPE exactly, and MPJPE / MPJVE / PCK
  *after this sequence-level similarity alignment*; the report marks them.

Missing joints: a joint that is NaN in every row of the predictions (a layout without it, e.g.
pose-hg-3d has no neck_nose) or of the ground truth is left out of that method's averages
(``joints_evaluated``). A row with NaN in any
other evaluated joint is a failed prediction: excluded from the averages and counted in
``valid_fraction``.

Units: metres inside; metric keys carry their unit (``mpjpe_mm``); PCK and AUC are fractions
in [0, 1]; MPJVE is mm per frame (``mpjve_mm``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence as Seq

import numpy as np
import pandas as pd
import torch

from pose3d import metrics
from pose3d.data.contracts import Predictions, read_predictions
from pose3d.data.io import DataError
from pose3d.data.views import GroundTruth
from pose3d.geometry.procrustes import apply_similarity, similarity_procrustes
from pose3d.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS

log = logging.getLogger(__name__)

#: per-row metric columns of :attr:`MethodResult.frames` (mm or fractions)
FRAME_METRICS = ("mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "pck3d", "auc")

#: The published numbers of the seeds, all on **Human3.6M** (protocol 1 / 2, mm), not on the
#: synthetic studio; they are context, not a target our numbers should match.
PUBLISHED: dict[str, dict] = {
    "martinez": {"p1_mm": 44.9, "p2_mm": None,
                 "source": "Martinez et al. 2017, Gluon reimplementation, ground-truth 2D input"},
    "repnet": {"p1_mm": 76.5, "p2_mm": 54.3, "source": "RepNet (Wandt & Rosenhahn 2019), 3d-human-pose"},
    "temporal": {"p1_mm": 70.5, "p2_mm": 51.2, "source": "temporal convolution + GAN weak supervision"},
    "triangulate_algebraic": {"p1_mm": 22.5, "p2_mm": None,
                              "source": "learnable triangulation (Iskakov et al. 2019), algebraic"},
    "triangulate_ransac": {"p1_mm": 27.4, "p2_mm": None,
                           "source": "learnable triangulation, RANSAC baseline"},
    "triangulate_probabilistic": {"p1_mm": 26.1, "p2_mm": None,
                                  "source": "Probabilistic Triangulation (Jiang et al. ICCV 2023)"},
    "hg3d": {"p1_mm": None, "p2_mm": None,
             "source": "pose-hg-3d (Zhou et al. 2017); no number stated by the seed"},
}


# --------------------------------------------------------------------------- evaluation
@dataclass
class MethodResult:
    """Everything evaluate computes for one method."""

    method: str
    path: Path
    coord_frame: str
    joints_evaluated: tuple[str, ...]
    frames: pd.DataFrame  # keys + split + valid + FRAME_METRICS (+ '<m>_<subset>' columns)
    per_joint: pd.DataFrame  # joint, mpjpe_mm, pa_mpjpe_mm
    pairs: pd.DataFrame  # subject, action, camera, frame (first of the pair), mpjve_mm
    summary: dict[str, float]  # compact numbers for metrics.json
    per_action: pd.DataFrame  # action + FRAME_METRICS + mpjve_mm + n_frames
    aligned_world: np.ndarray  # (N, J, 3) predictions in the world frame (after alignment)
    note: str = ""
    reference_camera: str | None = None


def _sequence_similarity(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                         jmask: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
    """Move each group's (sequence's) predictions by one similarity fitted on all its frames.

    pred, target (N, J, 3); valid (N,) bool; jmask (J,) bool; groups (N,) int codes.
    """
    out = pred.clone()
    for g in np.unique(groups):  # one Umeyama fit per sequence, frames stacked as points
        rows = torch.from_numpy(np.flatnonzero(groups == g))
        ok = rows[valid[rows]]
        if len(ok) == 0:
            continue
        X = pred[ok].reshape(1, -1, 3)  # (1, T*J, 3)
        Y = target[ok].reshape(1, -1, 3)
        m = jmask.expand(len(ok), -1).reshape(1, -1)
        s, R, t = similarity_procrustes(X, Y, m)
        out[rows] = apply_similarity(pred[rows].reshape(1, -1, 3), s, R, t).reshape(-1, NUM_JOINTS, 3)
    return out


def _per_row(pred: torch.Tensor, gt: torch.Tensor, jmask: torch.Tensor, pck_threshold: float,
             auc_max: float, auc_steps: int) -> dict[str, torch.Tensor]:
    return {
        "mpjpe_mm": metrics.mpjpe(pred, gt, jmask) * 1000,
        "pa_mpjpe_mm": metrics.pa_mpjpe(pred, gt, jmask) * 1000,
        "n_mpjpe_mm": metrics.n_mpjpe(pred, gt, jmask) * 1000,
        "pck3d": metrics.pck3d(pred, gt, pck_threshold, jmask),
        "auc": metrics.auc_pck3d(pred, gt, auc_max, auc_steps, jmask),
    }


def pck_key(threshold_m: float) -> str:
    """``0.150 -> 'pck3d_150mm'``."""
    return f"pck3d_{round(threshold_m * 1000):d}mm"


def evaluate_predictions(preds: Predictions, gt: GroundTruth, split: str = "test",
                         pck_threshold: float = 0.150, auc_max: float = 0.150, auc_steps: int = 31,
                         joint_subset: Seq[str] = (), subset_name: str = "subset",
                         device: str | torch.device = "cpu") -> MethodResult:
    """Evaluate one method (see module docstring). Thresholds in metres."""
    where = str(preds.path)
    split_all = gt.split_of(preds.keys, where)
    keep = np.ones(len(split_all), bool) if split == "all" else split_all == split
    if not keep.any():
        raise DataError(f"{where}: no rows of split {split!r} (the file has splits "
                        f"{sorted(set(split_all))})")
    keys = preds.keys[keep].reset_index(drop=True)
    dev = torch.device(device)
    pred = torch.from_numpy(preds.joints[keep]).to(dev, torch.float64)  # (N, J, 3)
    target = torch.from_numpy(gt.target(preds, keys)).to(dev, torch.float64)

    # (J,) joints both the prediction layout and the ground truth have (in some row)
    jmask = ~torch.isnan(pred).all(-1).all(0) & ~torch.isnan(target).all(-1).all(0)
    valid = ~torch.isnan(pred[:, jmask]).any(-1).any(-1) & ~torch.isnan(target[:, jmask]).any(-1).any(-1)
    if not bool(valid.any()):
        raise DataError(f"{where}: every row of split {split!r} has NaN joints; nothing to evaluate")

    if preds.coord_frame == "reference_camera":
        seq = keys.groupby(["subject", "action"], sort=False).ngroup().to_numpy()
        pred = _sequence_similarity(pred, target, valid, jmask, seq)
        note = "after one similarity alignment per sequence (uncalibrated frame)"
    else:
        note = ""

    # metrics on valid rows only; invalid rows keep NaN in the table
    pv, tv = pred[valid], target[valid]
    rows = _per_row(pv, tv, jmask, pck_threshold, auc_max, auc_steps)
    frames = keys.copy()
    frames["split"] = split_all[keep]
    frames["valid"] = valid.cpu().numpy()
    vidx = np.flatnonzero(frames["valid"].to_numpy())
    for k, v in rows.items():
        col = np.full(len(frames), np.nan)
        col[vidx] = v.cpu().numpy()
        frames[k] = col
    sub_mask = None
    if joint_subset:
        bad = [n for n in joint_subset if n not in JOINT_INDEX]
        if bad:
            raise DataError(f"evaluate.joint_subset: unknown joint names {bad}")
        sub_mask = torch.zeros(NUM_JOINTS, dtype=torch.bool, device=dev)
        sub_mask[[JOINT_INDEX[n] for n in joint_subset]] = True
        sub_mask &= jmask
        for k, v in _per_row(pv, tv, sub_mask, pck_threshold, auc_max, auc_steps).items():
            col = np.full(len(frames), np.nan)
            col[vidx] = v.cpu().numpy()
            frames[f"{k}_{subset_name}"] = col

    # per joint: protocol 1 and 2 errors averaged over valid rows
    e1 = metrics.joint_errors(pv, tv, "root").mean(0) * 1000
    e2 = metrics.joint_errors(pv, tv, "procrustes", jmask).mean(0) * 1000
    jm = jmask.cpu().numpy()
    per_joint = pd.DataFrame({"joint": list(JOINT_NAMES),
                              "mpjpe_mm": np.where(jm, e1.cpu().numpy(), np.nan),
                              "pa_mpjpe_mm": np.where(jm, e2.cpu().numpy(), np.nan)})

    # MPJVE over pairs of consecutive frames of the same sequence and camera
    order = keys.sort_values(["subject", "action", "camera", "frame"]).index.to_numpy()
    k_sorted = keys.loc[order]
    same = ((k_sorted[["subject", "action", "camera"]].to_numpy()[1:]
             == k_sorted[["subject", "action", "camera"]].to_numpy()[:-1]).all(1)
            & (np.diff(k_sorted["frame"].to_numpy()) == 1))
    vnp = valid.cpu().numpy()
    a, b = order[:-1][same], order[1:][same]
    ok = vnp[a] & vnp[b]
    a, b = a[ok], b[ok]
    pairs = keys.loc[a, ["subject", "action", "camera", "frame"]].reset_index(drop=True)
    if len(a):
        ia, ib = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
        ps = torch.stack([pred[ia], pred[ib]], dim=1)  # (P, 2, J, 3)
        ts = torch.stack([target[ia], target[ib]], dim=1)
        pairs["mpjve_mm"] = (metrics.mpjve(ps, ts, jmask)[:, 0] * 1000).cpu().numpy()
    else:
        pairs["mpjve_mm"] = np.zeros(0)

    # averages
    fv = frames[frames["valid"]]
    summary: dict[str, float] = {}
    for k in FRAME_METRICS:
        name = pck_key(pck_threshold) if k == "pck3d" else k
        summary[name] = metrics.framewise_mean(torch.tensor(fv[k].to_numpy(np.float64)))
    summary["mpjve_mm"] = (metrics.framewise_mean(torch.tensor(pairs["mpjve_mm"].to_numpy(np.float64)))
                           if len(pairs) else float("nan"))
    for k in ("mpjpe_mm", "pa_mpjpe_mm"):
        summary[f"{k}_actionwise"] = metrics.actionwise_mean(torch.tensor(fv[k].to_numpy(np.float64)),
                                                             fv["action"].tolist())[0]
    if sub_mask is not None:
        for k in ("mpjpe_mm", "pa_mpjpe_mm"):
            summary[f"{k}_{subset_name}"] = metrics.framewise_mean(
                torch.tensor(fv[f"{k}_{subset_name}"].to_numpy(np.float64)))
    summary["n_frames"] = int(len(fv))
    summary["valid_fraction"] = float(len(fv) / len(frames))

    per_action = fv.groupby("action", sort=True)[list(FRAME_METRICS)].mean()
    per_action["n_frames"] = fv.groupby("action", sort=True).size()
    per_action["mpjve_mm"] = pairs.groupby("action")["mpjve_mm"].mean() if len(pairs) else np.nan
    per_action = per_action.reset_index()

    aligned_world = gt.to_world(preds, pred.cpu().numpy(), keys)
    return MethodResult(method=preds.method, path=preds.path, coord_frame=preds.coord_frame,
                        joints_evaluated=tuple(n for n, m in zip(JOINT_NAMES, jm) if m),
                        frames=frames, per_joint=per_joint, pairs=pairs, summary=summary,
                        per_action=per_action, aligned_world=aligned_world, note=note,
                        reference_camera=preds.reference_camera)


def evaluate_files(paths: Seq[str | Path], gt: GroundTruth, **kwargs) -> list[MethodResult]:
    """Load and evaluate every predictions file (all are loaded first, so a bad file fails fast)."""
    loaded = [read_predictions(p) for p in paths]
    methods = [p.method for p in loaded]
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise DataError(f"predictions: method name(s) {dup} appear in more than one file")
    return [evaluate_predictions(p, gt, **kwargs) for p in loaded]


# --------------------------------------------------------------------------- tables
def _finite(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(float(x), 4)


#: a method's headline numbers (frame-wise), its DVC metrics file; PCK3D's key depends on the
#: threshold (:func:`pck_key`). Action-wise means, joint subsets and frame counts are in the report
#: and the MLflow run (on the studio the action-wise means equal the frame-wise ones).
HEADLINE = ("mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "mpjve_mm", "pck3d_*", "auc", "valid_fraction")


def metrics_json(results: Seq[MethodResult]) -> dict:
    """{method: its headline numbers} (:data:`HEADLINE`), one DVC metrics file per method."""
    out = {}
    for r in results:
        keys = [next(k for k in r.summary if k.startswith("pck3d_")) if h == "pck3d_*" else h for h in HEADLINE]
        out[r.method] = {k: _finite(r.summary[k]) for k in keys}
    return out


def _long_table(results: Seq[MethodResult], attr: str, key: str) -> pd.DataFrame:
    """Stack each method's ``attr`` table; ``label`` = 'method | <key>' for DVC plots."""
    rows = []
    for r in results:
        t = getattr(r, attr).copy()
        t.insert(0, "method", r.method)
        rows.append(t)
    df = pd.concat(rows, ignore_index=True)
    df.insert(0, "label", df["method"] + " | " + df[key])
    return df


def per_action_table(results: Seq[MethodResult]) -> pd.DataFrame:
    """Long table: one row per (method, action)."""
    return _long_table(results, "per_action", "action")


def per_joint_table(results: Seq[MethodResult]) -> pd.DataFrame:
    """Long table: one row per (method, joint)."""
    return _long_table(results, "per_joint", "joint")


def data_summary(results: Seq[MethodResult], gt: GroundTruth, split: str) -> pd.DataFrame:
    """Per method: the subjects, sequences, frames and cameras its numbers come from."""
    rows = []
    for r in results:
        f = r.frames
        cams = sorted(c for c in f["camera"].unique() if c)
        rows.append({
            "method": r.method, "coord_frame": r.coord_frame,
            "subjects": ", ".join(sorted(f["subject"].unique())),
            "sequences": int(f.groupby(["subject", "action"]).ngroups),
            "rows": int(len(f)), "valid_rows": int(f["valid"].sum()),
            "distinct_frames": int(f.drop_duplicates(["subject", "action", "frame"]).shape[0]),
            "cameras": (", ".join(cams) if cams else
                        f"reference {r.reference_camera}" if r.coord_frame == "reference_camera"
                        else "(world frame)"),
            "joints": len(r.joints_evaluated),
        })
    return pd.DataFrame(rows)
