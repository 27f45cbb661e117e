"""Decode the frames of a video file or an image folder, one at a time (memory stays flat).

A source is either a video file (``<subject>/<action>.<camera>.mp4``, decoded by OpenCV's
FFmpeg backend) or a folder of images ``<subject>/<action>.<camera>/`` whose sorted file names
give the frame order (0-based). Frames come out as RGB uint8 (H, W, 3) with their 0-based index.

A source that cannot be opened, or that ends before the frames it promises (the container's
frame count, or ``expected_frames`` from mocap.h5), raises :class:`VideoError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pose3d.data.io import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


class VideoError(DataError):
    """A missing, unreadable, corrupt or truncated video / image folder; names the file."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    num_frames: int  # as promised by the container / the folder listing
    width: int
    height: int
    fps: float  # 0 for image folders


def find_source(videos_dir: str | os.PathLike, subject: str, action: str, camera: str) -> Path:
    """The video file or image folder of (subject, action, camera) in the studio layout.

    Raises VideoError naming the expected path when neither exists.
    """
    base = Path(videos_dir) / subject
    stem = f"{action}.{camera}"
    folder = base / stem
    if folder.is_dir():
        return folder
    for ext in VIDEO_EXTENSIONS:
        p = base / f"{stem}{ext}"
        if p.exists():
            return p
    raise VideoError(f"{base / (stem + '.mp4')}: no video file or image folder for "
                     f"{subject}/{action}/{camera}")


def _folder_images(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Frame count and size of a video file or image folder, without decoding it all."""
    path = Path(path)
    if path.is_dir():
        files = _folder_images(path)
        if not files:
            raise VideoError(f"{path}: image folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        img = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
        if img is None:
            raise VideoError(f"{files[0]}: unreadable image")
        return VideoInfo(path, len(files), img.shape[1], img.shape[0], 0.0)
    if not path.exists():
        raise VideoError(f"{path}: file not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"{path}: cannot open video (corrupt, truncated or unknown format)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    if n <= 0 or w <= 0 or h <= 0:
        raise VideoError(f"{path}: video reports {n} frames of {w}x{h} (corrupt header?)")
    return VideoInfo(path, n, w, h, fps)


def iter_frames(path: str | os.PathLike, stride: int = 1, expected_frames: int | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame_index, rgb (H, W, 3) uint8)`` for frames 0, stride, 2*stride, ...

    ``expected_frames``: the number of frames the source must hold (e.g. T of the mocap
    sequence); defaults to the container's count. Fewer decodable frames -> VideoError.
    Frames beyond ``expected_frames`` are not read.
    """
    if stride < 1:
        raise ValueError(f"iter_frames: stride = {stride}: must be >= 1")
    path = Path(path)
    info = video_info(path)
    n = info.num_frames if expected_frames is None else int(expected_frames)
    if path.is_dir():
        files = _folder_images(path)
        if len(files) < n:
            raise VideoError(f"{path}: image folder holds {len(files)} images, expected {n}")
        for k in range(0, n, stride):
            img = cv2.imread(str(files[k]), cv2.IMREAD_COLOR)
            if img is None:
                raise VideoError(f"{files[k]}: unreadable image (frame {k} of {path})")
            yield k, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"{path}: cannot open video (corrupt, truncated or unknown format)")
        for k in range(n):
            if k % stride:
                ok = cap.grab()  # decode-and-drop: cheaper than read()
                img = None
            else:
                ok, img = cap.read()
                ok = ok and img is not None
            if not ok:
                raise VideoError(f"{path}: decoding stopped at frame {k} of {n} "
                                 f"(truncated or corrupt video)")
            if img is not None:
                if img.shape[0] != info.height or img.shape[1] != info.width:
                    raise VideoError(f"{path}: frame {k} is {img.shape[1]}x{img.shape[0]}, "
                                     f"expected {info.width}x{info.height}")
                yield k, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
