"""Pictures for reports: 2D overlays, 3D skeletons, bar charts, an animation, training curves.

Drawing helpers other stages can import:
* :func:`draw_skeleton_2d` draws keypoints ``(J, 2)`` pixels on a BGR image with OpenCV; bones
  come from joint *names* (any layout whose names are H36M-17 names), left limbs blue, right
  limbs red, torso green.
* :func:`plot_skeleton_3d` draws a pose ``(J, 3)`` metres on a matplotlib 3D axis and returns
  the line artists, which :func:`update_skeleton_3d` moves (for animations).

Figure writers take plain arrays / tables and a path; they use matplotlib's Agg backend and
write atomically (a failed render leaves no half-written file).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot
import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pose3d.data.io import DataError, atomic_path  # noqa: E402
from pose3d.skeleton import BONES, JOINT_INDEX, JOINT_NAMES, ROOT  # noqa: E402

log = logging.getLogger(__name__)

#: BGR colours for the 2D overlay (OpenCV): left limbs, right limbs, torso/head.
BGR_LEFT, BGR_RIGHT, BGR_CENTER = (230, 120, 30), (40, 40, 230), (60, 190, 60)
#: one matplotlib colour per method, in a stable order; ground truth is black.
GT_COLOR = "black"


def _side(name: str) -> str:
    return name[:2] if name[:2] in ("l_", "r_") else ""


def bones_for(joint_names: Sequence[str] = JOINT_NAMES) -> list[tuple[int, int, str]]:
    """H36M-17 bones present in a layout, as (i, j, side) indices into ``joint_names``.

    side is 'l_', 'r_' or '' from the child's name. Joints not named in H36M-17 are ignored.
    """
    pos = {n: i for i, n in enumerate(joint_names)}
    out = []
    for p, c in BONES:
        pn, cn = JOINT_NAMES[p], JOINT_NAMES[c]
        if pn in pos and cn in pos:
            out.append((pos[pn], pos[cn], _side(cn)))
    return out


def draw_skeleton_2d(img: np.ndarray, kp: np.ndarray, scores: np.ndarray | None = None,
                     joint_names: Sequence[str] = JOINT_NAMES, min_score: float = 0.0,
                     thickness: int = 2, radius: int = 3, color: tuple[int, int, int] | None = None
                     ) -> np.ndarray:
    """Draw one skeleton on a copy of ``img`` (H, W, 3) uint8 BGR and return it.

    kp (J, 2) pixels in ``joint_names`` order (NaN = missing); scores (J,) optional, joints
    below ``min_score`` are skipped. ``color`` (BGR) overrides the left/right/torso colours.
    """
    kp = np.asarray(kp, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] != 2 or kp.shape[0] != len(joint_names):
        raise ValueError(f"kp: expected shape ({len(joint_names)}, 2), got {kp.shape}")
    out = np.ascontiguousarray(img).copy()
    ok = np.isfinite(kp).all(1)
    if scores is not None:
        ok &= np.asarray(scores, dtype=np.float64) >= min_score
    side_color = {"l_": BGR_LEFT, "r_": BGR_RIGHT, "": BGR_CENTER}
    for i, j, side in bones_for(joint_names):
        if ok[i] and ok[j]:
            p1 = tuple(int(round(v)) for v in kp[i])
            p2 = tuple(int(round(v)) for v in kp[j])
            cv2.line(out, p1, p2, color or side_color[side], thickness, cv2.LINE_AA)
    for k, name in enumerate(joint_names):
        if ok[k]:
            c = color or side_color[_side(name)]
            cv2.circle(out, tuple(int(round(v)) for v in kp[k]), radius, c, -1, cv2.LINE_AA)
    return out


def up_axis(poses: np.ndarray) -> int:
    """The world axis that points up (0, 1 or 2) for poses (..., J, 3), from pelvis -> head_top."""
    d = np.nanmean((poses[..., JOINT_INDEX["head_top"], :] - poses[..., ROOT, :]).reshape(-1, 3), 0)
    return int(np.nanargmax(np.abs(d)))


def _to_plot(joints: np.ndarray, up: int) -> np.ndarray:
    """World (..., J, 3) -> matplotlib (x, y, z) with z = the world's up axis (sign kept up)."""
    others = [a for a in range(3) if a != up]
    return joints[..., [others[0], others[1], up]]


def plot_skeleton_3d(ax, joints: np.ndarray, color: str = GT_COLOR, joint_names: Sequence[str] = JOINT_NAMES,
                     lw: float = 2.0, up: int = 2, center: bool = True, radius: float | None = None):
    """Draw a pose (J, 3) metres on a 3D axis; returns the artists (one line, bones split by NaN).

    ``up``: the world axis drawn vertically; ``center``: subtract the pelvis; ``radius``: set
    equal axis limits of +-radius (metres) around the origin. One artist per skeleton keeps
    animations fast (matplotlib's 3D drawing cost is per artist).
    """
    (ln,) = ax.plot([0.0], [0.0], [0.0], color=color, lw=lw)
    lines = [ln]
    update_skeleton_3d(lines, joints, joint_names, up=up, center=center)
    if radius is not None:
        for setter in (ax.set_xlim3d, ax.set_ylim3d, ax.set_zlim3d):
            setter(-radius, radius)
        ax.set_box_aspect((1, 1, 1), zoom=1.4)
    return lines


def update_skeleton_3d(lines, joints: np.ndarray, joint_names: Sequence[str] = JOINT_NAMES,
                       up: int = 2, center: bool = True) -> None:
    """Move the artists of :func:`plot_skeleton_3d` to a new pose (NaN joints hide their bones)."""
    j = np.asarray(joints, dtype=np.float64)
    if center and "pelvis" in joint_names:
        r = list(joint_names).index("pelvis")
        j = j - j[r]
    p = _to_plot(j, up)
    bones = bones_for(joint_names)
    seg = np.full((len(bones), 3, 3), np.nan)  # (bone, [parent, child, gap], xyz)
    seg[:, 0] = p[[a for a, _, _ in bones]]
    seg[:, 1] = p[[b for _, b, _ in bones]]
    seg = seg.reshape(-1, 3)
    lines[0].set_data_3d(seg[:, 0], seg[:, 1], seg[:, 2])


def method_colors(methods: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _save(fig, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip("."))
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- bar charts
def bar_methods(summary: Mapping[str, Mapping[str, float]], path: str | Path,
                keys: Sequence[str] = ("mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "mpjve_mm"),
                marked: Sequence[str] = ()) -> Path:
    """Grouped bars: one group per method, one bar per metric key (mm). ``marked`` methods get a †."""
    methods = list(summary)
    x = np.arange(len(methods))
    w = 0.8 / len(keys)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(methods) + 2), 3.8))
    for k, key in enumerate(keys):
        vals = [summary[m].get(key, np.nan) for m in methods]
        vals = [np.nan if v is None else v for v in vals]
        bars = ax.bar(x + (k - (len(keys) - 1) / 2) * w, vals, w, label=key)
        ax.bar_label(bars, fmt="%.0f", fontsize=6, padding=1)
    ax.set_xticks(x, [m + (" †" if m in marked else "") for m in methods], rotation=25, ha="right")
    ax.set_ylabel("error (mm; MPJVE in mm/frame)")
    ax.set_title("Error per method (frame-wise mean over test frames)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def bar_grouped(table: pd.DataFrame, category: str, path: str | Path, metric: str = "mpjpe_mm",
                title: str = "", ylabel: str = "MPJPE (mm)") -> Path:
    """Grouped bars from a long table (method, <category>, metric): groups = categories."""
    wide = table.pivot(index=category, columns="method", values=metric)
    if category == "joint":
        wide = wide.reindex([n for n in JOINT_NAMES if n in wide.index])
    methods = [m for m in table["method"].drop_duplicates()]
    wide = wide[methods]
    colors = method_colors(methods)
    x = np.arange(len(wide))
    w = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(wide) * max(1, len(methods) / 3) + 2), 3.8))
    for k, m in enumerate(methods):
        ax.bar(x + (k - (len(methods) - 1) / 2) * w, wide[m].to_numpy(), w, label=m, color=colors[m])
    ax.set_xticks(x, list(wide.index), rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never over bars
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- animation
def animate_skeletons(gt: np.ndarray, poses: Mapping[str, np.ndarray], path: str | Path,
                      fps: float = 10.0, dpi: int = 70, title: str = "",
                      radius: float | None = None, frame_labels: Sequence[int] | None = None) -> Path:
    """GIF: ground truth and every method's pose side by side, frame by frame.

    gt (T, J, 3) world metres; poses {method: (T, J, 3)} in the same world frame (NaN = missing).
    Each panel is centred on its own pelvis; the vertical axis is the world's up axis.
    ``frame_labels`` (T,): the source frame numbers shown in the title.
    """
    from PIL import Image  # matplotlib's own dependency

    T = gt.shape[0]
    up = up_axis(gt)
    c = gt - gt[:, ROOT:ROOT + 1]
    if radius is None:
        radius = float(np.nanmax(np.abs(c))) * 1.05 if np.isfinite(c).any() else 1.0
    floor = float(np.nanmin(c[..., up])) if np.isfinite(c).any() else -radius  # pelvis-relative
    labels = list(frame_labels) if frame_labels is not None else list(range(T))
    panels = [("ground truth", gt, GT_COLOR)]
    colors = method_colors(list(poses))
    panels += [(m, p, colors[m]) for m, p in poses.items()]
    n = len(panels)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = plt.figure(figsize=(2.2 * cols, 2.3 * rows + 0.3), dpi=dpi)
    artists = []
    for k, (name, seq, color) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        ax.view_init(elev=12, azim=-70)
        ax.set_axis_off()  # panes and ticks cost most of the drawing time
        ax.set_title(name, fontsize=8)
        lines = plot_skeleton_3d(ax, seq[0], color=color, up=up, radius=radius, lw=1.5)
        f = radius * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]]) * 0.8
        # a floor square at the lowest ground-truth joint, for depth cues
        ax.plot(f[:, 0], f[:, 1], np.full(5, floor), color="0.7", lw=0.8)
        artists.append((lines, seq))
    label = fig.suptitle(f"{title} frame {labels[0]}", fontsize=9)
    fig.tight_layout()

    def step(t):
        for lines, seq in artists:
            update_skeleton_3d(lines, seq[t], up=up)  # a missing (NaN) frame draws nothing
        label.set_text(f"{title} frame {labels[t]}")

    # one draw per frame (FuncAnimation + PillowWriter draws each frame three times)
    images = []
    for t in range(T):
        step(t)
        fig.canvas.draw()
        images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()))
    plt.close(fig)
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:  # Pillow picks the format by suffix
        pal = [im.quantize(colors=64, method=Image.Quantize.MEDIANCUT) for im in images]
        pal[0].save(tmp, save_all=True, append_images=pal[1:], duration=int(round(1000 / fps)), loop=0,
                    optimize=False)
    return path


# --------------------------------------------------------------------------- 2D overlay
def read_video_frame(video: str | Path, frame: int) -> np.ndarray:
    """One frame (H, W, 3) uint8 BGR from a video file (or a folder of numbered images)."""
    video = Path(video)
    if video.is_dir():
        files = sorted(p for p in video.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if frame >= len(files):
            raise DataError(f"{video}: no image for frame {frame} ({len(files)} images)")
        img = cv2.imread(str(files[frame]))
        if img is None:
            raise DataError(f"{files[frame]}: unreadable image")
        return img
    if not video.exists():
        raise DataError(f"{video}: video not found")
    cap = cv2.VideoCapture(str(video))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, frame)
        ok, img = cap.read()
    finally:
        cap.release()
    if not ok or img is None:
        raise DataError(f"{video}: cannot read frame {frame}")
    return img


def overlay_2d(img: np.ndarray, kp: np.ndarray, path: str | Path, scores: np.ndarray | None = None,
               gt_kp: np.ndarray | None = None, joint_names: Sequence[str] = JOINT_NAMES,
               title: str = "", max_width: int = 640) -> Path:
    """PNG of detections (left blue, right red, torso green) on a frame; ground truth as white dots."""
    out = draw_skeleton_2d(img, kp, scores, joint_names)
    if gt_kp is not None:
        for p in np.asarray(gt_kp, dtype=np.float64):
            if np.isfinite(p).all():
                cv2.circle(out, (int(round(p[0])), int(round(p[1]))), 2, (255, 255, 255), -1, cv2.LINE_AA)
    if title:
        cv2.putText(out, title, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    if out.shape[1] > max_width:
        s = max_width / out.shape[1]
        out = cv2.resize(out, (max_width, int(round(out.shape[0] * s))), interpolation=cv2.INTER_AREA)
    path = Path(path)
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(path.suffix or ".png", out)
        if not ok:
            raise DataError(f"{path}: PNG encoding failed")
        tmp.write_bytes(buf.tobytes())
    return path


# --------------------------------------------------------------------------- curves
def plot_curves(csv_paths: Sequence[str | Path], path: str | Path) -> Path:
    """One panel per training-curve CSV: every numeric column against epoch/step (or row), but
    the schedule's (learning rates ``lr*``) and counts (``*num_*``): losses and accuracies only."""
    csv_paths = [Path(p) for p in csv_paths]
    n = max(len(csv_paths), 1)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat[len(csv_paths):]:
        ax.axis("off")
    for ax, p in zip(axes.flat, csv_paths):
        try:
            df = pd.read_csv(p)
        except Exception as e:
            raise DataError(f"{p}: not a readable CSV ({e})") from e
        xcol = next((c for c in ("epoch", "step", "iteration") if c in df.columns), None)
        x = df[xcol] if xcol else np.arange(len(df))
        num = [c for c in df.columns if c != xcol and pd.api.types.is_numeric_dtype(df[c])
               and not c.startswith("lr") and "num_" not in c]
        for c in num:
            ax.plot(x, df[c], label=c, lw=1.2)
        ax.set_title(p.stem.removeprefix("curves_"), fontsize=9)
        ax.set_xlabel(xcol or "row")
        if num and (df[num] > 0).all().all() and df[num].max().max() / max(df[num].min().min(), 1e-12) > 50:
            ax.set_yscale("log")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
