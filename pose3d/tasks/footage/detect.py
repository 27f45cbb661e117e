"""Person boxes and 2D keypoints for a user's video, with the project's studio-trained pose_resnet.

Boxes (one person per frame, static camera): background subtraction against ``background``
(by default the median of ``bg_frames`` frames of the video itself; better an image of the
empty scene), like the extract stage's (:func:`pose3d.data.crops.median_background`,
:func:`~pose3d.data.crops.foreground_box`) with changes for footage that has no ground truth to
fall back on (:func:`person_box`): the background is gain-matched to each frame, and the box
spans the largest blob and the large blobs near it. Then:

* a frame without a blob takes the nearest frame's box (the whole image when no frame has one);
  boxes are smoothed by a running median over frames;
* the first 2D pass tries several crop scales around each box and keeps, per frame, the one
  whose keypoints score highest;
* ``refine`` passes re-crop each frame around its own keypoints
  (:func:`~pose3d.data.crops.square_box` of the joints scoring >= ``refine_min_score``).

A person detector for general footage (BlazePose's, or any other) would replace the first
pass only; the second pass and everything after it stay the same.

Glossary: T frames, J joints (H36M-17), S crop size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pose3d.data.crops import (apply_affine, box_from_extent, crop_affine, foreground_box, invert_affine,
                               median_background, square_box, warp_crop)
from pose3d.data.video import VideoError, iter_frames, video_info
from pose3d.tasks.pose2d import predict_array

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Keypoints2D:
    """2D of one view: ``points_px`` (T, J, 2) full-image pixels (NaN = missing), ``scores``
    (T, J), ``boxes`` (T, 4) xyxy (NaN without a box: imported keypoints), image ``width`` and
    ``height``, ``fps`` (0 when unknown) and where it came from (``source``)."""

    points_px: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    width: int
    height: int
    fps: float
    source: str


def person_box(frame: np.ndarray, background: np.ndarray, threshold: float = 30.0, margin: float = 0.25,
               min_area: int = 64, grow: float = 0.5) -> np.ndarray | None:
    """Square box (4,) xyxy around the person in ``frame`` against ``background`` (both (H, W, 3)),
    or None: :func:`pose3d.data.crops.foreground_box` with the light matched to the frame and the
    blobs of a person whose clothes match the background united (no closing)."""
    return foreground_box(frame, background, threshold, margin, min_area, close=False, match_light=True, grow=grow)


def background_boxes(video: str | Path, num_frames: int, *, background: np.ndarray | None = None,
                     margin: float = 0.25, bg_frames: int = 25, threshold: float = 30.0) -> tuple[np.ndarray, int]:
    """(T, 4) square boxes from background subtraction against ``background`` (H, W, 3) RGB, by
    default the median of ``bg_frames`` frames of the video itself, and the number of frames
    without a blob (they take the nearest frame's box; the whole image when no frame has one)."""
    if background is None:
        keep = set(np.linspace(0, num_frames - 1, min(bg_frames, num_frames)).round().astype(int).tolist())
        background = median_background([img for k, img in iter_frames(video, 1, num_frames) if k in keep])
    boxes = np.full((num_frames, 4), np.nan)
    for k, img in iter_frames(video, 1, num_frames):
        if img.shape != background.shape:
            raise VideoError(f"{video}: frames are {img.shape[1]}x{img.shape[0]}, the background image "
                             f"{background.shape[1]}x{background.shape[0]}")
        b = person_box(img, background, threshold, margin)
        if b is not None:
            boxes[k] = b
    missing = ~np.isfinite(boxes).all(1)
    if missing.all():
        info = video_info(video)
        boxes[:] = box_from_extent(np.array([[-0.5, -0.5]]), np.array([[info.width - 0.5, info.height - 0.5]]), 0.0)[0]
    elif missing.any():  # nearest frame with a box
        have = np.flatnonzero(~missing)
        near = have[np.abs(have[None, :] - np.flatnonzero(missing)[:, None]).argmin(1)]
        boxes[missing] = boxes[near]
    return boxes, int(missing.sum())


def detect_in_boxes(model: torch.nn.Module, video: str | Path, boxes: np.ndarray, crop_size: int,
                     batch_size: int, progress: bool, desc: str, **predict_kw) -> tuple[np.ndarray, np.ndarray]:
    """2D inside given square boxes (T, 4) xyxy of the first T frames of ``video`` -> (points (T, J, 2)
    image px, scores (T, J))."""
    T = len(boxes)
    J = model.config.num_joints
    pts = np.zeros((T, J, 2), np.float32)
    scs = np.zeros((T, J), np.float32)
    A = crop_affine(boxes, crop_size)  # (T, 2, 3) image -> crop
    bar = tqdm(total=T, desc=desc, unit="frame", disable=not progress, mininterval=2.0)
    crops, idx = [], []

    def flush():
        c, s = predict_array(model, np.stack(crops), batch_size=batch_size, **predict_kw)
        rows = np.asarray(idx)
        pts[rows] = apply_affine(invert_affine(A[rows]), c.astype(np.float64))
        scs[rows] = s
        bar.update(len(rows))
        crops.clear()
        idx.clear()

    for k, img in iter_frames(video, 1, T):
        crops.append(warp_crop(img, A[k], crop_size))
        idx.append(k)
        if len(crops) == batch_size:
            flush()
    if crops:
        flush()
    bar.close()
    return pts, scs


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Running median over ``window`` frames of the boxes' centres and sides, (T, 4) -> (T, 4):
    a frame whose blob lost the legs (or gained a shadow) takes its neighbours' box."""
    if window <= 1 or len(boxes) < 2:
        return boxes
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).max(1, keepdims=True)
    x = np.concatenate([c, side], 1)
    h = window // 2
    pad = np.concatenate([np.repeat(x[:1], h, 0), x, np.repeat(x[-1:], h, 0)])
    m = np.median(np.lib.stride_tricks.sliding_window_view(pad, window, axis=0), -1)
    return np.concatenate([m[:, :2] - m[:, 2:] / 2, m[:, :2] + m[:, 2:] / 2], 1)


def scale_boxes(boxes: np.ndarray, factor: float) -> np.ndarray:
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * factor
    return np.concatenate([c - half, c + half], 1)


def detect_video(model: torch.nn.Module, video: str | Path, *, crop_size: int, background: np.ndarray | None = None,
                 batch_size: int = 32, margin: float = 0.25, refine: int = 2, refine_min_score: float = 0.3,
                 first_scale: float | tuple[float, ...] = (1.25, 1.75, 2.5), smooth: int = 5, threshold: float = 30.0,
                 max_frames: int | None = None, progress: bool = True, **predict_kw) -> Keypoints2D:
    """Boxes then 2D for every frame of ``video`` (see the module docstring). The first pass
    crops each of ``first_scale`` x the background box (context for a blob that missed the legs)
    and keeps, per frame, the scale whose keypoints score highest on average; each of
    the ``refine`` passes re-crops around the previous pass's keypoints; boxes are smoothed by a
    running median over ``smooth`` frames before every pass."""
    info = video_info(video)  # VideoError naming the file when it cannot be opened
    T = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
    boxes, n_missing = background_boxes(video, T, background=background, margin=margin, threshold=threshold)
    if n_missing:
        log.info("%s: %d of %d frames had no foreground blob (took the nearest frame's box)", video, n_missing, T)
    boxes = smooth_boxes(boxes, smooth)
    pts, scs, best = None, None, None
    for f in np.atleast_1d(first_scale):  # per frame, the scale whose 2D scores highest
        b = scale_boxes(boxes, float(f))
        p, s = detect_in_boxes(model, video, b, crop_size, batch_size, progress, f"2d (box x{float(f):g})", **predict_kw)
        if pts is None:
            pts, scs, best = p, s, s.mean(1)
        else:
            take = s.mean(1) > best
            pts[take], scs[take], best[take] = p[take], s[take], s.mean(1)[take]
    for k in range(int(refine)):
        kp = np.where((scs >= refine_min_score)[..., None], pts, np.nan)
        new = square_box(kp, margin)
        ok = np.isfinite(new).all(1)
        boxes = smooth_boxes(np.where(ok[:, None], new, boxes), smooth)
        pts, scs = detect_in_boxes(model, video, boxes, crop_size, batch_size, progress, f"2d (refined boxes {k + 1})",
                                    **predict_kw)
    return Keypoints2D(pts, scs, boxes, info.width, info.height, info.fps, f"pose_resnet on {video}")
