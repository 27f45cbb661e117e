"""The 3D skeleton video: each input frame with its 2D overlay, beside the 3D skeleton (mp4).

VideoPose3D's ``--viz-output`` is the anchor: input on the left, the 3D pose on the right. Several
views are tiled (up to four, 2 x 2). The 3D panel is matplotlib's (the drawing helpers of
:mod:`pose3d.viz`), centred on the pelvis, Y up, with the same axis limits in every frame.
Frames are decoded one at a time (memory stays flat); the file is written with OpenCV's
``mp4v`` codec (OpenCV's FFmpeg cannot write H.264) to a temporary name and renamed at the end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

from pose3d.data.io import DataError, atomic_path
from pose3d.data.video import iter_frames
from pose3d.viz import draw_skeleton_2d, plot_skeleton_3d, update_skeleton_3d

PANEL = 480  # px, height of the output


def _tile(images: list[np.ndarray], size: int) -> np.ndarray:
    """BGR images -> one (size, size * cols / rows, 3) mosaic, each image letterboxed."""
    n = len(images)
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    cell = size // rows
    out = np.zeros((cell * rows, cell * cols, 3), np.uint8)
    for k, img in enumerate(images):
        h, w = img.shape[:2]
        s = cell / max(h, w)
        r = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        y0, x0 = (k // cols) * cell + (cell - r.shape[0]) // 2, (k % cols) * cell + (cell - r.shape[1]) // 2
        out[y0:y0 + r.shape[0], x0:x0 + r.shape[1]] = r
    return out


def render_video(path: str | Path, videos: Sequence[str | Path] | None, points_2d: np.ndarray,
                 scores: np.ndarray, joints_y_up: np.ndarray, fps: float, image_size: Sequence[tuple[int, int]],
                 title: str = "", progress: bool = True, png_frame: str | Path | None = None) -> Path:
    """Write the skeleton video.

    videos: one per view (None or empty: a black frame of ``image_size`` under the overlay);
    points_2d (V, T, J, 2) px, scores (V, T, J), joints_y_up (T, J, 3) metres (NaN = missing),
    fps of the output. ``png_frame``: also save the middle frame as a PNG there.
    """
    V, T = points_2d.shape[:2]
    iters = [iter_frames(v, 1, T) for v in videos] if videos else None
    c = joints_y_up - joints_y_up[:, :1]
    radius = float(np.nanmax(np.abs(c))) * 1.35 if np.isfinite(c).any() else 1.0
    floor = float(np.nanmin(c[..., 1])) if np.isfinite(c).any() else -radius
    fig = plt.figure(figsize=(PANEL / 100, PANEL / 100), dpi=100)
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    ax.view_init(elev=15, azim=-60)
    ax.set_axis_off()
    # _to_plot of pose3d.viz puts world axis `up` on matplotlib's z: Y up -> up=1
    lines = plot_skeleton_3d(ax, np.nan_to_num(joints_y_up[0]), color="tab:blue", up=1, radius=radius, lw=2.5)
    f = radius * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]]) * 0.8
    ax.plot(f[:, 0], f[:, 1], np.full(5, floor), color="0.7", lw=0.8)
    fig.subplots_adjust(0, 0, 1, 1)
    label = fig.text(0.02, 0.96, "", fontsize=9)
    path = Path(path)
    mid = T // 2
    bar = tqdm(total=T, desc="video", unit="frame", disable=not progress, mininterval=2.0)
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = None
        try:
            for t in range(T):
                views = []
                for v in range(V):
                    if iters is not None:
                        _, rgb = next(iters[v])
                        img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
                    else:
                        w, h = image_size[v]
                        img = np.zeros((h, w, 3), np.uint8)
                    views.append(draw_skeleton_2d(img, points_2d[v, t], scores[v, t], min_score=0.1,
                                                  thickness=max(2, img.shape[1] // 300),
                                                  radius=max(3, img.shape[1] // 200)))
                left = _tile(views, PANEL)
                update_skeleton_3d(lines, joints_y_up[t], up=1)
                label.set_text(f"{title} frame {t}")
                fig.canvas.draw()
                right = cv2.cvtColor(np.asarray(fig.canvas.buffer_rgba())[..., :3], cv2.COLOR_RGB2BGR)
                right = cv2.resize(right, (PANEL, PANEL)) if right.shape[:2] != (PANEL, PANEL) else right
                frame = np.concatenate([left, right], 1)
                if writer is None:
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps),
                                             (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise DataError(f"{path}: OpenCV cannot write mp4 here")
                writer.write(frame)
                if png_frame is not None and t == mid:
                    with atomic_path(png_frame) as ptmp:
                        ptmp.write_bytes(cv2.imencode(".png", frame)[1].tobytes())
                bar.update(1)
        finally:
            if writer is not None:
                writer.release()
            plt.close(fig)
            bar.close()
    return path
