"""SimpleBaseline 2D pose: the training step, inference with flip test, detection, metrics.

The stages ``train_2d`` and ``detect_2d`` are thin wrappers around this module:

* :func:`make_step` -> the step function for :class:`pose3d.runtime.train.Trainer` (Gaussian targets
  made on the device from crop coordinates, target-weighted MSE);
* :class:`EpochBatches` -> ``train_batches(epoch)``: shuffled with ``default_rng([seed, epoch])``,
  augmentation seeded per (seed, epoch, item), so a resumed run sees the same data;
* :func:`predict` -> crop-pixel coordinates and confidences (flip test, DARK / quarter offset);
* :func:`detect_file` -> the whole crops.h5, streamed, mapped to full-image pixels;
* :func:`pck_metrics` -> PCK@0.05 / @0.1 of the box size, mean pixel error, per 1000 px of
  image width, per joint.

Glossary: N crops, B batch, J joints, S crop size, H/W heatmap size, stride = S / H.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pose3d.data.contracts import write_detections
from pose3d.runtime import distributed, params
from pose3d.data.crops import (Augmentation, CropDataset, CropIndex, CropStore, apply_affine,
                               iter_crop_blocks, normalize_images, read_crop_index, read_crops,
                               resize_crops, resize_points)
from pose3d.data.io import DataError, atomic_path, file_digest, headline, write_json
from pose3d.heatmaps import (crop_to_heatmap, decode, flip_heatmaps, gaussian_targets,
                             heatmap_to_crop, weighted_mse)
from pose3d.models.pose_resnet import PoseResNet, PoseResNetConfig
from pose3d.skeleton import JOINT_NAMES, LEFT_JOINTS, PARENTS
from pose3d.runtime.train import Trainer, TrainConfig, adam, autocast, load_state, resolve_device, resolve_precision, save_model

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- training
def make_step(stride: int, sigma: float):
    """Step function: batch (images (B, 3, S, S), joints (B, J, 2) crop px, weights (B, J))."""

    def step(ctx, batch, epoch):
        images, joints, weights = batch
        model = ctx.modules["model"]
        with ctx.autocast():
            hm = model(images)
        _, _, H, W = hm.shape
        targets, inside = gaussian_targets(crop_to_heatmap(joints, stride), H, W, sigma)
        loss = weighted_mse(hm.float(), targets, weights * inside)
        ctx.backward_step(loss, "model")
        return {"loss": loss.detach()}

    return step


class EpochBatches:
    """``train_batches(epoch)`` for the Trainer: a sized iterable of collated batches.
    ``size_of_epoch(epoch)`` -> the crop size that epoch trains at (default: the stored size)."""

    def __init__(self, dataset: CropDataset, batch_size: int, seed: int, drop_last: bool = True,
                 size_of_epoch=None):
        self.dataset, self.batch_size, self.seed, self.drop_last = dataset, batch_size, seed, drop_last
        self.size_of_epoch = size_of_epoch or (lambda epoch: dataset.size)

    def __call__(self, epoch: int) -> "_Epoch":
        return _Epoch(self, epoch)


class _Epoch:
    def __init__(self, parent: EpochBatches, epoch: int, rank: int = 0, world: int = 1):
        self.p, self.epoch, self.rank, self.world = parent, epoch, rank, world
        n, b = len(parent.dataset), parent.batch_size
        self.n_batches = n // b if parent.drop_last else -(-n // b)

    def __len__(self) -> int:
        return self.n_batches

    def shard(self, rank: int, world: int) -> "_Epoch":
        """Under DDP: rank ``rank``'s slice of every batch, and only its crops are built (their
        augmentation is seeded per item, so they are those one process would build)."""
        return _Epoch(self.p, self.epoch, rank, world)

    def __iter__(self):
        ds, b = self.p.dataset, self.p.batch_size
        ds.set_epoch(self.epoch, self.p.size_of_epoch(self.epoch))
        perm = np.random.default_rng([self.p.seed, self.epoch]).permutation(len(ds))
        for k in range(self.n_batches):
            items = perm[k * b:(k + 1) * b]
            if self.world > 1:
                items = distributed.shard_batch(items, self.rank, self.world)
            yield ds.batch(items)


def joints_in_crops(index: CropIndex) -> np.ndarray:
    """GT 2D of each crop (N, J, 2) mapped from image px into crop px."""
    return apply_affine(index.image_to_crop(), index.gt_2d.astype(np.float64)).astype(np.float32)


#: 2D heatmap models by name (``pose2d.architecture``, saved in config.json): (network, config).
#: The config is a dataclass with ``to_dict`` / ``from_dict`` and ``stride``, filled from the
#: pose2d params keys of the same names; the network maps (N, 3, S, S) crops to
#: (N, J, S / stride, S / stride) heatmaps. A new 2D model is one entry here (and its params keys).
MODELS_2D: dict[str, tuple[type[torch.nn.Module], type]] = {"pose_resnet": (PoseResNet, PoseResNetConfig)}


def _registered(architecture: str, where: str) -> tuple[type[torch.nn.Module], type]:
    if architecture not in MODELS_2D:
        raise DataError(f"{where}: architecture {architecture!r} is not a registered 2D model "
                        f"(known: {', '.join(MODELS_2D)})")
    return MODELS_2D[architecture]


def model_config_of(p, num_joints: int):
    """The config of the 2D model ``p.architecture`` from the params section ``p``."""
    cls = _registered(p.architecture, "pose2d.architecture")[1]
    keys = {f.name for f in dataclasses.fields(cls)} - {"num_joints"}
    return cls(num_joints=num_joints, **{k: getattr(p, k) for k in keys if hasattr(p, k)})


def build_model(architecture: str, config) -> torch.nn.Module:
    return _registered(architecture, "pose2d.architecture")[0](config)


# --------------------------------------------------------------------------- inference
@torch.no_grad()
def predict(model: PoseResNet, crops: np.ndarray | torch.Tensor, *, flip: bool = True,
            method: str = "dark", sigma: float = 1.5, precision: str = "fp32",
            channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of uint8 crops (B, S, S, 3) -> (coords (B, J, 2) crop px, scores (B, J)).

    The backbone may run in bf16 (``precision``); the 1x1 heatmap layer and the decoding run in
    float32 so that sub-pixel refinement is not limited by bf16's 8-bit mantissa.
    Flip test: heatmaps of the mirrored crop are mirrored back (joints swapped by name) and
    averaged with the direct ones before decoding.
    """
    device = next(model.parameters()).device
    x = normalize_images(torch.as_tensor(crops).to(device))
    S = x.shape[-1]
    if flip:
        x = torch.cat([x, x.flip(-1)])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        f = model.features(x)
    hm = model.final(f.float())
    if flip:
        B = hm.shape[0] // 2
        hm = 0.5 * (hm[:B] + flip_heatmaps(hm[B:]))
    coords, scores = decode(hm.float(), method=method, sigma=sigma)
    return heatmap_to_crop(coords, S // hm.shape[-1]), scores


def predict_array(model: PoseResNet, crops: np.ndarray, batch_size: int = 64, **kw
                  ) -> tuple[np.ndarray, np.ndarray]:
    """All crops of an in-memory array (N, S, S, 3) -> (coords (N, J, 2), scores (N, J))."""
    cs, ss = [], []
    for i in range(0, len(crops), batch_size):
        c, s = predict(model, crops[i:i + batch_size], **kw)
        cs.append(c.cpu().numpy())
        ss.append(s.cpu().numpy())
    J = model.config.num_joints
    if not cs:
        return np.zeros((0, J, 2), np.float32), np.zeros((0, J), np.float32)
    return np.concatenate(cs), np.concatenate(ss)


def detect_file(model: PoseResNet, crops_h5: str | os.PathLike, index: CropIndex, batch_size: int = 64,
                progress: bool = True, **kw) -> tuple[np.ndarray, np.ndarray]:
    """Run the model over every crop of crops.h5 (streamed) -> (keypoints (N, J, 2) full-image px,
    scores (N, J)) in the row order of ``index`` (which must cover h5 rows 0..N-1)."""
    rows = index.keys["index"].to_numpy()
    N = len(rows)
    if not np.array_equal(np.sort(rows), np.arange(N)):
        raise ValueError(f"{crops_h5}: the crop index does not cover rows 0..{N - 1} exactly")
    J = model.config.num_joints
    coords = np.zeros((N, J, 2), np.float32)
    scores = np.zeros((N, J), np.float32)
    bar = tqdm(total=N, desc="detect_2d", unit="crop", disable=not progress, mininterval=2.0)
    for start, block in iter_crop_blocks(crops_h5, block=batch_size):
        c, s = predict(model, block, **kw)
        coords[start:start + len(block)] = c.cpu().numpy()
        scores[start:start + len(block)] = s.cpu().numpy()
        bar.update(len(block))
    bar.close()
    # h5 row r -> index position
    pos = np.empty(N, np.int64)
    pos[rows] = np.arange(N)
    coords_by_row = np.empty_like(coords)
    coords_by_row[pos] = coords
    scores_by_row = np.empty_like(scores)
    scores_by_row[pos] = scores
    keypoints = apply_affine(index.crop_to_image.astype(np.float64), coords_by_row.astype(np.float64))
    return keypoints.astype(np.float32), scores_by_row


# --------------------------------------------------------------------------- metrics
def pck_metrics(pred_px: np.ndarray, gt_px: np.ndarray, box_size: np.ndarray,
                image_width: np.ndarray, joint_names=JOINT_NAMES) -> dict:
    """2D accuracy in full-image pixels.

    pred_px, gt_px (N, J, 2); box_size (N,) side of the square person box in px; image_width (N,).
    PCK@a = fraction of joints with error <= a * box_size (a = 0.05, 0.1). The error per
    1000 px is ``err / image_width * 1000`` (resolution-independent). NaN GT joints are skipped.
    """
    err = np.linalg.norm(np.asarray(pred_px, np.float64) - gt_px, axis=-1)  # (N, J)
    valid = np.isfinite(err)
    box = np.asarray(box_size, np.float64)[:, None]
    per1000 = err / np.asarray(image_width, np.float64)[:, None] * 1000.0

    def m(x, mask):
        return float(np.mean(x[mask])) if mask.any() else float("nan")

    out = {
        "pck_0.05": m(err <= 0.05 * box, valid),
        "pck_0.1": m(err <= 0.1 * box, valid),
        "mean_px_error": m(err, valid),
        "median_px_error": float(np.median(err[valid])) if valid.any() else float("nan"),
        "mean_px_error_per_1000px": m(per1000, valid),
        "num_crops": int(len(err)),
        "per_joint": {},
    }
    names = list(joint_names)
    for j, name in enumerate(names):
        v = valid[:, j]
        out["per_joint"][name] = {"pck_0.1": m((err <= 0.1 * box)[:, j], v),
                                  "mean_px_error": m(err[:, j], v),
                                  "mean_px_error_per_1000px": m(per1000[:, j], v)}
    for group, members in JOINT_GROUPS.items():
        cols = [names.index(n) for n in members if n in names]
        if cols:
            out[f"{group}_mean_px_error"] = m(err[:, cols], valid[:, cols])
    for limb, members in SWAP_LIMBS.items():
        if all(f"{side}{n}" in names for n in members for side in ("l_", "r_")):
            for kind in ("swap", "confusion"):
                out[f"{limb}_{kind}_rate"] = float(np.mean(
                    left_right_swaps(pred_px, gt_px, box[:, 0], members, names, kind=kind)))
    return out


#: what the DVC metrics files of train_2d (validation subset) and detect_2d (every test crop)
#: keep; per-joint numbers go to detect_2d's per-joint plot and every number to the MLflow run
TRAIN_HEADLINE = ("pck_0.1", "mean_px_error", "mean_px_error_per_1000px")
DETECT_HEADLINE = TRAIN_HEADLINE + ("elbows_mean_px_error", "wrists_mean_px_error", "arm_swap_rate")


def per_joint_table(metrics: dict) -> pd.DataFrame:
    """:func:`pck_metrics`' per-joint numbers as a table (joint, pck_0.1, mean_px_error,
    mean_px_error_per_1000px): detect_2d's DVC plot."""
    return pd.DataFrame([{"joint": j, **v} for j, v in metrics["per_joint"].items()])


#: joint groups whose mean pixel error is reported beside the per-joint values
JOINT_GROUPS: dict[str, tuple[str, ...]] = {"elbows": ("l_elbow", "r_elbow"), "wrists": ("l_wrist", "r_wrist"),
                                           "knees": ("l_knee", "r_knee"), "ankles": ("l_ankle", "r_ankle")}
#: limbs checked for left/right swaps (joint names without the l_/r_ prefix)
SWAP_LIMBS: dict[str, tuple[str, ...]] = {"arm": ("elbow", "wrist"), "leg": ("knee", "ankle")}


def left_right_swaps(pred_px: np.ndarray, gt_px: np.ndarray, box_size: np.ndarray,
                     limb: tuple[str, ...], joint_names=JOINT_NAMES, min_separation: float = 0.1,
                     kind: str = "swap") -> np.ndarray:
    """(N,) bool: crops whose left and right ``limb`` (e.g. ("elbow", "wrist")) were confused.

    kind="swap": the two sides were exchanged: the left limb's predicted joints lie nearer the
    right limb's ground truth than the left's (summed over the limb's joints), and the right
    limb's nearer the left's. kind="confusion": any joint of the limb lies nearer the opposite
    side's ground truth than its own (swaps, and both sides predicted on one limb, as happens
    when one arm hides the other). Only crops whose left and right ground truth lie at least
    ``min_separation * box_size`` apart (mean over the limb's joints) count: closer than that,
    which side is which is neither visible nor costly. pred_px, gt_px (N, J, 2); box_size (N,).
    """
    if kind not in ("swap", "confusion"):
        raise ValueError(f"kind = {kind!r}: expected 'swap' or 'confusion'")
    names = list(joint_names)
    pred, gt = np.asarray(pred_px, np.float64), np.asarray(gt_px, np.float64)
    L = [names.index(f"l_{n}") for n in limb]
    R = [names.index(f"r_{n}") for n in limb]

    def dist(a, b):  # (N, len(limb))
        return np.linalg.norm(pred[:, a] - gt[:, b], axis=-1)

    apart = np.linalg.norm(gt[:, L] - gt[:, R], axis=-1).mean(-1) >= min_separation * np.asarray(box_size)
    if kind == "swap":
        crossed = (dist(L, R).sum(-1) < dist(L, L).sum(-1)) & (dist(R, L).sum(-1) < dist(R, R).sum(-1))
    else:
        crossed = ((dist(L, R) < dist(L, L)) | (dist(R, L) < dist(R, R))).any(-1)
    return apart & crossed


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Nested metrics -> {'per_joint.l_wrist.pck_0.1': value} for MLflow."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update(flat_metrics(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = float(v)
    return out


def score_crops(model: PoseResNet, crops: np.ndarray, index: CropIndex, image_width: np.ndarray,
                **predict_kw) -> tuple[np.ndarray, dict]:
    """Predict the in-memory crops (N, s, s, 3) of ``index`` and score them in full-image pixels
    -> (predictions (N, J, 2) image px, :func:`pck_metrics`). ``predict_kw`` go to
    :func:`predict_array` (batch_size, flip, method, sigma, precision, channels_last). Crops
    resampled from the index's size S to s are mapped back to S before the index's affine."""
    coords, _ = predict_array(model, crops, **predict_kw)
    coords = resize_points(coords, crops.shape[1], index.crop_size)
    pred = apply_affine(index.crop_to_image.astype(np.float64), coords.astype(np.float64))
    box = index.bbox_xyxy[:, 2] - index.bbox_xyxy[:, 0]
    return pred, pck_metrics(pred, index.gt_2d, box, image_width)


def make_evaluate(crops: np.ndarray, index: CropIndex, image_width: np.ndarray, size_of_epoch=None,
                  **predict_kw):
    """``evaluate(ctx, epoch)`` for the Trainer: PCK / pixel error on held-out crops, at the
    size the epoch trained at (``size_of_epoch(epoch)``; default the stored size)."""
    resized = {crops.shape[1]: crops}

    def evaluate(ctx, epoch):
        size = size_of_epoch(epoch) if size_of_epoch else crops.shape[1]
        if size not in resized:
            resized[size] = crops.resized(size) if isinstance(crops, CropStore) else resize_crops(crops, size)
        _, m = score_crops(ctx.modules["model"], resized[size], index, image_width, **predict_kw)
        return {f"val_{k}": v for k, v in m.items() if not isinstance(v, dict)}

    return evaluate


# --------------------------------------------------------------------------- figure
#: bone colours (torso and right limbs, left limbs) for ground truth and prediction
GT_COLOURS = ("lime", "cyan")
PRED_COLOURS = ("red", "orange")


def draw_crop_grid(path: str | os.PathLike, crops: np.ndarray, pred_crop: np.ndarray,
                   gt_crop: np.ndarray, titles: list[str] | None = None, cols: int = 4) -> None:
    """A grid of crops (n, S, S, 3) with predicted (red, left limbs orange) and ground-truth
    (green, left limbs cyan) skeletons (n, J, 2) in crop pixels; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    n = len(crops)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(crops[k])
        for pts, colours in ((gt_crop[k], GT_COLOURS), (pred_crop[k], PRED_COLOURS)):
            for j, p in enumerate(PARENTS):
                if p >= 0:
                    colour = colours[j in LEFT_JOINTS]
                    ax.plot([pts[j, 0], pts[p, 0]], [pts[j, 1], pts[p, 1]], "-", color=colour, lw=1.2)
            ax.plot(pts[:, 0], pts[:, 1], ".", color=colours[0], ms=3)
        if titles:
            ax.set_title(titles[k], fontsize=7)
    fig.suptitle("ground truth: green (left limbs cyan); prediction: red (left limbs orange)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


# --------------------------------------------------------------------------- the fit
def evenly_spaced(n: int, k: int) -> np.ndarray:
    """k (or all n when k <= 0 or k >= n) evenly spaced indices into range(n)."""
    if k <= 0 or k >= n:
        return np.arange(n)
    return np.linspace(0, n - 1, k).round().astype(np.int64)


def image_widths(index: CropIndex) -> np.ndarray:
    """Width in px of the full image of every crop, from the crops.parquet metadata."""
    sizes = index.meta.get("image_size", {})
    cams = index.keys["camera"].to_numpy()
    missing = sorted(set(cams) - set(sizes))
    if missing:
        raise KeyError(f"crops.parquet metadata 'image_size' lacks cameras {missing}")
    return np.array([sizes[c][0] for c in cams], np.float64)


def split_crops(index: CropIndex, max_train: int, max_val: int
                ) -> tuple[CropIndex, CropIndex]:
    """(train subset, validation subset) of the crop index: train split vs test split,
    each evenly thinned to at most max_train / max_val crops (0 = all train crops)."""
    split = index.keys["split"].to_numpy()
    train = index.select(split == "train")
    val = index.select(split == "test")
    if len(train) == 0:
        raise ValueError("no crops of the 'train' split")
    if len(val) == 0:
        log.warning("no crops of the 'test' split: validating on train crops")
        val = train
    return train.select(evenly_spaced(len(train), max_train)), val.select(evenly_spaced(len(val), max_val))


def make_scheduler(opt: torch.optim.Optimizer, schedule: str, epochs: int, lr_steps=(),
                   lr_factor: float = 0.1):
    """Per-epoch learning-rate schedule. ``step``: lr *= lr_factor after each epoch in lr_steps;
    ``cosine``: lr_e = lr * (1 + cos(pi * e / epochs)) / 2 for epoch e = 0..epochs-1
    (Loshchilov & Hutter 2017 without restarts), so the last epoch runs at a small lr."""
    if schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(lr_steps), gamma=lr_factor)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 * (1.0 + math.cos(math.pi * e / epochs)))
    raise ValueError(f"lr_schedule = {schedule!r}: expected 'step' or 'cosine'")


def augmentation_of(p) -> Augmentation:
    return Augmentation(scale=p.aug_scale, rotation=p.aug_rotation, rotation_prob=p.aug_rotation_prob,
                        flip_prob=p.aug_flip_prob, color=p.aug_color, brightness=p.aug_brightness,
                        shift=p.aug_shift)


def fit(crops_h5, index: CropIndex, p, *, trainer_config, run=None,
        fingerprint: str = "", stream: bool = True) -> tuple[torch.nn.Module, list[dict], dict]:
    """Train the 2D model of params section ``p`` (pose2d) on the train-split crops; validate
    on the test split after every epoch. ``stream``: read the crops from crops.h5 batch by
    batch (:class:`~pose3d.data.crops.CropStore`), else hold them in memory (same model).

    Returns (model in eval mode, history, final validation metrics with per-joint values).
    """
    model_config = model_config_of(p, len(index.meta["joint_names"]))
    sigma = p.sigma
    train_idx, val_idx = split_crops(index, p.max_train_crops, p.val_max_crops)
    log.info("train_2d: %d train crops, %d validation crops (of %d)", len(train_idx), len(val_idx), len(index))
    read = CropStore if stream else read_crops
    train_crops = read(crops_h5, train_idx.keys["index"].to_numpy())
    val_crops = read(crops_h5, val_idx.keys["index"].to_numpy())
    dataset = CropDataset(train_crops, joints_in_crops(train_idx), augmentation_of(p), seed=trainer_config.seed)
    torch.manual_seed(trainer_config.seed)
    model = build_model(p.architecture, model_config)
    opt = adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    sched = make_scheduler(opt, p.lr_schedule, trainer_config.epochs, p.lr_steps, p.lr_factor)
    trainer = Trainer({"model": model}, {"model": opt}, {"model": sched}, config=trainer_config, run=run)
    cl = bool(trainer_config.channels_last)
    precision = trainer.precision  # validate in the precision the model trains in
    widths = image_widths(val_idx)
    kw = dict(batch_size=64, flip=p.flip_test, method=p.decode, sigma=sigma, precision=precision,
              channels_last=cl)

    def size_of_epoch(epoch: int) -> int:  # a warm-up at a lower resolution, then the crop size
        return p.warmup_size if epoch < p.warmup_epochs else index.crop_size

    evaluate = make_evaluate(val_crops, val_idx, widths, size_of_epoch, **kw)
    batches = EpochBatches(dataset, p.batch_size, trainer_config.seed, size_of_epoch=size_of_epoch)
    history = trainer.fit(make_step(model_config.stride, sigma), batches, evaluate, fingerprint=fingerprint)
    model.eval()
    _, final = score_crops(model, val_crops, val_idx, widths, **kw)
    return model, history, final


# --------------------------------------------------------------------------- detect stage
def load_model(model_dir: Path, device: str = "auto", crop_size: int | None = None) -> tuple[torch.nn.Module, dict]:
    """models/pose2d/{model.pt, config.json} -> (model in eval mode on the device, config dict).

    ``crop_size``: the size of the crops it will see; a model trained on another size is a
    :class:`~pose3d.data.io.DataError` naming both."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    if not cfg_path.exists():
        raise DataError(f"{cfg_path}: model config not found (run train_2d first)")
    cfg = json.loads(cfg_path.read_text())
    if crop_size is not None and int(cfg.get("input_size", crop_size)) != crop_size:
        raise DataError(f"{cfg_path}: the model was trained on {cfg['input_size']} px crops, "
                        f"these are {crop_size} px (extract.crop_size)")
    net, cfg_cls = _registered(cfg.get("architecture", "pose_resnet"), str(cfg_path))
    model = net(cfg_cls.from_dict({f.name: cfg[f.name] for f in dataclasses.fields(cfg_cls)}))
    model.load_state_dict(load_state(model_dir / "model.pt"))
    dev = resolve_device(device)
    model.to(dev).eval()
    if dev.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model, cfg


#: the keys of models/pose2d/config.json recorded in the detections' metadata ``model``
MODEL_INFO_KEYS = ("architecture", "depth", "deconv_channels", "deconv_kernel", "num_deconv", "input_size", "sigma")


def run_detection(model: torch.nn.Module, crops_h5, index: CropIndex, model_path, out_parquet, metrics_json,
                  figure_png, *, per_joint_csv=None, batch_size: int = 64, flip: bool = True, method: str = "dark",
                  sigma: float = 1.5, precision: str = "fp32", figure_crops: int = 16,
                  seed: int = 0, progress: bool = True, model_config: dict | None = None) -> dict:
    """Detect on every crop, write the detections Parquet (:mod:`pose3d.data.contracts`; its
    metadata ``model`` says which network made them: architecture, depth, head, input_size,
    and how: flip_test, decode, precision), test-split metrics JSON and the figure.

    Returns the metrics dict (test split; every crop when there is no test split).
    """
    device = next(model.parameters()).device
    cl = device.type == "cpu"
    precision = resolve_precision(precision, device)
    kw = dict(flip=flip, method=method, sigma=sigma, precision=precision, channels_last=cl)
    keypoints, scores = detect_file(model, crops_h5, index, batch_size=batch_size, progress=progress, **kw)
    info = {k: v for k, v in (model_config or {}).items() if k in MODEL_INFO_KEYS}
    info.update({"input_size": int(index.crop_size), "flip_test": bool(flip), "decode": method,
                 "precision": precision})
    write_detections(out_parquet, index.keys, keypoints, scores, {
        "model_hash": file_digest(model_path, length=64), "image_size": index.meta.get("image_size", {}), "units": "px",
        "keypoints": "full-image pixels (distorted, as in the video), x y per joint",
        "scores": "heatmap peak per joint (flip-averaged when model.flip_test)", "model": info})
    test = index.keys["split"].to_numpy() == "test"
    if not test.any():
        test = np.ones(len(index), bool)
    sub = index.select(test)
    metrics = pck_metrics(keypoints[test], sub.gt_2d, sub.bbox_xyxy[:, 2] - sub.bbox_xyxy[:, 0],
                          image_widths(sub))
    metrics["split"] = "test" if (index.keys["split"] == "test").any() else "all"
    metrics["num_detections"] = int(len(index))
    metrics["mean_score"] = float(scores[test].mean())
    if per_joint_csv is not None:
        with atomic_path(per_joint_csv) as tmp:
            per_joint_table(metrics).to_csv(tmp, index=False, float_format="%.4f")
    write_json(metrics_json, headline(metrics, DETECT_HEADLINE))
    # figure: a seeded sample of test crops
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(sub), size=min(figure_crops, len(sub)), replace=False))
    crops = read_crops(crops_h5, sub.keys["index"].to_numpy()[pick])
    itc = sub.image_to_crop()[pick]
    pred_c = apply_affine(itc, keypoints[test][pick].astype(np.float64))
    gt_c = apply_affine(itc, sub.gt_2d[pick].astype(np.float64))
    titles = [f"{r.subject} {r.action} {r.camera} #{r.frame}" for r in sub.keys.iloc[pick].itertuples()]
    draw_crop_grid(figure_png, crops, pred_c, gt_c, titles)
    return metrics


# --------------------------------------------------------------------------- the stages
def train_fingerprint(p, base, crops_h5, crops_index) -> str:
    """What a checkpoint must match to be resumed: the params and the crops' content (a
    changed ``extract`` upstream retrains instead of resuming a stale model)."""
    return f"{params.fingerprint(p, base)}-{file_digest(crops_h5, crops_index)}"


def run_train_stage(s, paths, tracker) -> str:
    """``train_2d``: train on the crops, write the model, its metrics and curves."""
    p, base = s.params, s.base
    index = read_crop_index(paths.crops_index)
    trainer_config = TrainConfig(epochs=p.epochs, device=base.device, cpu_precision=base.cpu_precision,
                                 channels_last=p.channels_last, seed=base.seed,
                                 checkpoint=Path(paths.checkpoint), curves_csv=Path(paths.curves), desc="train_2d")
    fp = train_fingerprint(p, base, paths.crops_h5, paths.crops_index)
    tracker.log_params({"extract.crop_size": index.crop_size})
    model, history, final = fit(paths.crops_h5, index, p, trainer_config=trainer_config, run=tracker,
                                fingerprint=fp)
    config = model_config_of(p, len(index.meta["joint_names"]))
    save_model(paths.model_dir, model, {**config.to_dict(), "input_size": index.crop_size, "sigma": p.sigma,
                                        "architecture": p.architecture})
    final["epochs"] = len(history)
    write_json(paths.metrics, headline(final, TRAIN_HEADLINE))
    tracker.log_metrics({f"final_{k}": v for k, v in flat_metrics(final).items()})
    tracker.log_artifact(paths.metrics)
    return (f"validation PCK@0.1 {final['pck_0.1']:.4f}, mean error {final['mean_px_error']:.2f} px "
            f"({final['mean_px_error_per_1000px']:.2f} per 1000 px)")


def run_detect_stage(s, paths, tracker) -> str:
    """``detect_2d``: detect on every crop with the trained model."""
    p, base = s.params, s.base
    index = read_crop_index(paths.crops_index)
    model, config = load_model(Path(paths.model_dir), device=base.device, crop_size=index.crop_size)
    t0 = time.perf_counter()
    result = run_detection(model, paths.crops_h5, index, Path(paths.model_dir) / "model.pt", paths.out,
                           paths.metrics, paths.figure, per_joint_csv=paths.per_joint, batch_size=p.batch_size, flip=p.flip_test,
                           method=p.decode, sigma=float(config.get("sigma", 1.5)), precision=p.precision,
                           figure_crops=p.figure_crops, seed=base.seed, model_config=config)
    seconds = time.perf_counter() - t0
    tracker.log_metrics({**flat_metrics(result), "seconds": seconds, "crops_per_s": len(index) / max(seconds, 1e-9)})
    for path in (paths.metrics, paths.figure):
        tracker.log_artifact(path)
    return (f"{len(index)} crops in {seconds:.1f} s; test PCK@0.1 {result['pck_0.1']:.4f}, mean error "
            f"{result['mean_px_error']:.2f} px ({result['mean_px_error_per_1000px']:.2f} per 1000 px)")
