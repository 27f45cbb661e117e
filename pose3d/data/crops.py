"""Person boxes, affine crops, the crops.h5 / crops.parquet pair, and a torch Dataset.

Conventions. Pixel centres are at integer coordinates (OpenCV), so pixel i covers [i - 0.5,
i + 0.5]. A box ``bbox_xyxy`` uses the same continuous coordinates; the square crop of size S
maps the box extent onto the crop extent [-0.5, S - 0.5], so crop pixel centre ``i`` sits at
image coordinate ``x0 + (i + 0.5) * side / S``.
Affines are 2x3 matrices acting on column vectors ``(x, y, 1)``: ``image_to_crop`` and its
inverse ``crop_to_image`` (stored row-major in crops.parquet).

Files (written by stage ``extract``):
  * ``crops.h5``: dataset ``crops`` (N, S, S, 3) uint8 RGB, one crop per gzip-compressed chunk
    (random reads decode only the crops asked for: :class:`CropStore`), written in blocks so
    memory does not grow with the number of videos; attrs ``crop_size``, ``layout`` = "N H W C RGB".
  * ``crops.parquet``: one row per crop (see :data:`INDEX_COLUMNS`); metadata ``crop_size``,
    ``joint_names``, ``box_source``.

Glossary: N crops, J joints, S crop size.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pose3d.data.io import DataError, atomic_path, column_points, read_table, write_table
from pose3d.data.video import VideoError, find_source, iter_frames, video_info
from pose3d.data.views import GroundTruth
from pose3d.skeleton import FLIP_PERM, JOINT_NAMES, NUM_JOINTS

INDEX_COLUMNS = ("index", "subject", "action", "camera", "frame", "split", "bbox_xyxy",
                 "crop_to_image", "gt_2d")
#: ImageNet statistics, the usual normalisation for ResNets (RGB, 0..1 scale).
MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
STD_RGB = np.array([0.229, 0.224, 0.225], np.float32)


# --------------------------------------------------------------------------- boxes
def square_box(points_px: np.ndarray, margin: float) -> np.ndarray:
    """Square boxes around points (N, J, 2) -> (N, 4) xyxy, side = max(w, h) * (1 + margin).

    NaN points are ignored; a frame without any finite point gets a NaN box.
    """
    p = np.asarray(points_px, np.float64)
    if p.ndim != 3 or p.shape[-1] != 2:
        raise ValueError(f"square_box: points_px has shape {p.shape}, expected (N, J, 2)")
    with np.errstate(all="ignore"), _nan_ok():
        lo = np.nanmin(p, axis=1)
        hi = np.nanmax(p, axis=1)
    return box_from_extent(lo, hi, margin)


def box_from_extent(lo: np.ndarray, hi: np.ndarray, margin: float) -> np.ndarray:
    """(N, 2) min and max corners -> square (N, 4) xyxy boxes with ``margin`` around them."""
    c = (lo + hi) / 2
    side = np.maximum(hi - lo, 1.0).max(-1) * (1 + margin)
    return np.concatenate([c - side[:, None] / 2, c + side[:, None] / 2], -1)


class _nan_ok:
    def __enter__(self):
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *a):
        self._w.__exit__(*a)


def median_background(frames: list[np.ndarray]) -> np.ndarray:
    """Per-pixel median of frames (K, H, W, 3) of a static camera -> (H, W, 3) uint8."""
    if not frames:
        raise ValueError("median_background: no frames")
    return np.median(np.stack(frames), axis=0).astype(np.uint8)


def foreground_box(frame: np.ndarray, background: np.ndarray, threshold: float, margin: float,
                   min_area: int = 64, *, close: bool = True, match_light: bool = False,
                   grow: float | None = None) -> np.ndarray | None:
    """Square box (4,) xyxy around the person, or None when there is no foreground blob.

    Foreground = max over channels of |frame - background| > threshold, cleaned by a 5x5
    opening (then a closing with ``close``); the largest 8-connected component is the person
    (one person per frame). ``match_light``: first scale the background's channels so that their
    medians match the frame's (a global change of light or white balance between them; the
    person covers a small part of the image). ``grow``: a person whose clothes match the
    background breaks into several blobs, so the box spans the largest blob and every blob of
    >= 10 % of its area that touches the largest blob's box grown by ``grow`` x its size on
    each side. The extract stage uses the plain form, the footage route both options.
    """
    if match_light:
        gain = (np.median(frame.reshape(-1, 3), 0) + 1) / (np.median(background.reshape(-1, 3), 0) + 1)
        background = np.clip(background.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    diff = cv2.absdiff(frame, background).max(-1)
    mask = (diff > threshold).astype(np.uint8)
    kernel = np.ones((5, 5), np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    if close:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return None
    area = stats[1:, cv2.CC_STAT_AREA]
    k = int(np.argmax(area))
    if area[k] < min_area:
        return None
    x0, y0 = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[1:, cv2.CC_STAT_WIDTH], y0 + stats[1:, cv2.CC_STAT_HEIGHT]
    keep = np.arange(len(area)) == k
    if grow is not None:
        gw, gh = grow * (x1[k] - x0[k]), grow * (y1[k] - y0[k])
        keep = ((area >= 0.1 * area[k]) & (x1 > x0[k] - gw) & (x0 < x1[k] + gw)
                & (y1 > y0[k] - gh) & (y0 < y1[k] + gh))
    # pixel-edge extent of the kept blobs
    lo = np.array([[x0[keep].min() - 0.5, y0[keep].min() - 0.5]], np.float64)
    hi = np.array([[x1[keep].max() - 0.5, y1[keep].max() - 0.5]], np.float64)
    return box_from_extent(lo, hi, margin)[0]


# --------------------------------------------------------------------------- affines
def crop_affine(bbox_xyxy: np.ndarray, size: int) -> np.ndarray:
    """Square boxes (*, 4) xyxy -> image_to_crop affines (*, 2, 3) (float64).

    ``x_crop = (x_img - x0) * S / side - 0.5``; same for y with the box's y0. Boxes are
    assumed square; a non-square box is scaled by its larger side (aspect preserved).
    """
    b = np.asarray(bbox_xyxy, np.float64)
    side = np.maximum(b[..., 2] - b[..., 0], b[..., 3] - b[..., 1])
    cx, cy = (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2
    s = size / side
    A = np.zeros(b.shape[:-1] + (2, 3))
    A[..., 0, 0] = s
    A[..., 1, 1] = s
    # centre of the box -> centre of the crop ((S - 1) / 2 in pixel-centre coords)
    A[..., 0, 2] = (size - 1) / 2 - s * cx
    A[..., 1, 2] = (size - 1) / 2 - s * cy
    return A


def invert_affine(A: np.ndarray) -> np.ndarray:
    """Inverse of 2x3 affines (*, 2, 3)."""
    A = np.asarray(A, np.float64)
    M = A[..., :2]
    Minv = np.linalg.inv(M)
    t = -(Minv @ A[..., 2:3])
    return np.concatenate([Minv, t], -1)


def apply_affine(A, points):
    """2x3 affines (*, 2, 3) applied to points (*, J, 2) -> (*, J, 2) (numpy or torch)."""
    if isinstance(points, torch.Tensor):
        A = torch.as_tensor(A, dtype=points.dtype, device=points.device)
        return points @ A[..., :2].transpose(-1, -2) + A[..., 2].unsqueeze(-2)
    A = np.asarray(A)
    return points @ np.swapaxes(A[..., :2], -1, -2) + A[..., None, :, 2]


def compose_affine(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The affine ``A o B`` (apply B first), both (2, 3)."""
    A3 = np.vstack([A, [0, 0, 1]])
    B3 = np.vstack([B, [0, 0, 1]])
    return (A3 @ B3)[:2]


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, size, size, 3), by area interpolation when shrinking (no
    aliasing) and bilinear when enlarging; points follow with :func:`resize_points`. Returns
    ``crops`` itself when the size is already ``size``."""
    if crops.shape[1] == size:
        return crops
    interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_LINEAR
    out = np.empty((len(crops), size, size, 3), np.uint8)
    for i, c in enumerate(crops):
        out[i] = cv2.resize(c, (size, size), interpolation=interp)
    return out


def resize_points(points, from_size: int, to_size: int):
    """Crop pixels of an S = ``from_size`` crop -> pixels of the same crop resampled to
    ``to_size``, with the pixel-centre convention of :func:`crop_affine`:
    ``x_to = (x_from + 0.5) * to_size / from_size - 0.5`` (numpy or torch, any shape (..., 2))."""
    if from_size == to_size:
        return points
    return (points + 0.5) * (to_size / from_size) - 0.5


def warp_crop(image: np.ndarray, image_to_crop: np.ndarray, size: int,
              interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Cut an S x S crop out of ``image`` (H, W, C) through a 2x3 affine; outside = black."""
    return cv2.warpAffine(image, np.asarray(image_to_crop, np.float64), (size, size),
                          flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


# --------------------------------------------------------------------------- files
def create_crops_dataset(f: h5py.File, size: int, compression_level: int = 1) -> h5py.Dataset:
    """The empty, growable ``crops`` dataset (0, S, S, 3) uint8 of crops.h5: one crop per gzip
    chunk, so that a shuffled training batch decodes only its own crops (~12 ms for 32 crops of
    96 px vs ~0.5 s from chunks of 64, for +5.5 % disk; lzf would read them in ~7 ms for +29 %
    more disk; reports/benchmarks/scale.md, "Streaming crops")."""
    S = int(size)
    ds = f.create_dataset("crops", shape=(0, S, S, 3), maxshape=(None, S, S, 3), dtype=np.uint8,
                          chunks=(1, S, S, 3), compression="gzip", compression_opts=compression_level,
                          shuffle=False)
    ds.attrs["crop_size"] = S
    ds.attrs["layout"] = "N H W C RGB"
    return ds


class CropWriter:
    """Stream crops into ``crops.h5`` and collect their index rows; both files appear atomically
    on :meth:`close` (nothing is left behind if the block raises).

    >>> with CropWriter(h5, parquet, size=128, metadata={}) as w:   # doctest: +SKIP
    ...     w.add(crops, subject=..., action=..., camera=..., frames=..., split=..., ...)
    """
    def __init__(self, h5_path: str | os.PathLike, parquet_path: str | os.PathLike, size: int,
                 metadata: dict | None = None, block: int = 64, compression_level: int = 1):
        self.h5_path, self.parquet_path = Path(h5_path), Path(parquet_path)
        self.size, self.block, self.level = int(size), int(block), compression_level
        self.metadata = metadata if metadata is not None else {}  # read at close()
        self._rows: dict[str, list] = {k: [] for k in INDEX_COLUMNS}
        self._buf: list[np.ndarray] = []
        self.count = 0

    def __enter__(self):
        self._ctx = atomic_path(self.h5_path)
        tmp = self._ctx.__enter__()
        self._file = h5py.File(tmp, "w")
        self._ds = create_crops_dataset(self._file, self.size, self.level)
        return self

    def add(self, crops: np.ndarray, subject: str, action: str, camera: str, frames: np.ndarray,
            split: str, bbox_xyxy: np.ndarray, crop_to_image: np.ndarray, gt_2d: np.ndarray) -> None:
        """Append n crops (n, S, S, 3) uint8 with their frames (n,), boxes (n, 4), affines
        (n, 2, 3) crop->image and GT 2D (n, J, 2) image px (NaN when unknown)."""
        S = self.size
        crops = np.asarray(crops)
        n = len(crops)
        if crops.shape[1:] != (S, S, 3) or crops.dtype != np.uint8:
            raise ValueError(f"CropWriter.add: crops {crops.shape} {crops.dtype}, expected (n, {S}, {S}, 3) uint8")
        self._buf.extend(crops)
        self._rows["index"].extend(range(self.count, self.count + n))
        self._rows["subject"].extend([subject] * n)
        self._rows["action"].extend([action] * n)
        self._rows["camera"].extend([camera] * n)
        self._rows["frame"].extend(np.asarray(frames, np.int64).tolist())
        self._rows["split"].extend([split] * n)
        self._rows["bbox_xyxy"].append(np.asarray(bbox_xyxy, np.float32).reshape(n, 4))
        self._rows["crop_to_image"].append(np.asarray(crop_to_image, np.float32).reshape(n, 6))
        self._rows["gt_2d"].append(np.asarray(gt_2d, np.float32).reshape(n, -1))
        self.count += n
        if len(self._buf) >= self.block:
            self._flush()

    def _flush(self):
        if not self._buf:
            return
        a = np.stack(self._buf)
        n0 = self._ds.shape[0]
        try:
            self._ds.resize(n0 + len(a), axis=0)
            self._ds[n0:] = a
        except OSError as e:  # e.g. no space left on the device
            raise DataError(f"{self.h5_path}: could not be written ({e})") from None
        self._buf = []

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._flush()
        finally:
            self._file.close()
        if exc_type is not None:
            self._ctx.__exit__(exc_type, exc, tb)
            return False
        try:
            cols = {k: self._rows[k] for k in ("subject", "action", "camera", "split")}
            cols["index"] = np.asarray(self._rows["index"], np.int64)
            cols["frame"] = np.asarray(self._rows["frame"], np.int64)
            J2 = 2 * NUM_JOINTS
            for k, w in (("bbox_xyxy", 4), ("crop_to_image", 6), ("gt_2d", J2)):
                parts = self._rows[k]
                cols[k] = np.concatenate(parts) if parts else np.zeros((0, w), np.float32)
            meta = {"crop_size": self.size, "joint_names": list(JOINT_NAMES), "units": "px",
                    "affine": "crop_to_image: 2x3 row-major, crop px -> image px (pixel centres at integers)"}
            meta.update(self.metadata)
            write_table(self.parquet_path, {k: cols[k] for k in INDEX_COLUMNS}, meta)
        except BaseException as e:
            self._ctx.__exit__(type(e), e, e.__traceback__)
            raise
        self._ctx.__exit__(None, None, None)
        return False


@dataclass
class CropIndex:
    """crops.parquet in memory: ``keys`` (DataFrame: index, subject, action, camera, frame,
    split) and arrays ``bbox_xyxy`` (N, 4), ``crop_to_image`` (N, 2, 3), ``gt_2d`` (N, J, 2)."""

    keys: pd.DataFrame
    bbox_xyxy: np.ndarray
    crop_to_image: np.ndarray
    gt_2d: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def crop_size(self) -> int:
        return int(self.meta["crop_size"])

    def select(self, mask: np.ndarray) -> "CropIndex":
        """Rows by boolean mask or integer positions."""
        mask = np.asarray(mask)
        return CropIndex(self.keys.iloc[mask].reset_index(drop=True), self.bbox_xyxy[mask],
                         self.crop_to_image[mask], self.gt_2d[mask], self.meta)

    def image_to_crop(self) -> np.ndarray:
        return invert_affine(self.crop_to_image)


def read_crop_index(path: str | os.PathLike) -> CropIndex:
    """Read crops.parquet; errors name the file and the missing column or key."""
    table, meta = read_table(path)
    missing = [c for c in INDEX_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    if "crop_size" not in meta:
        raise DataError(f"{path}: metadata lacks 'crop_size'")
    J = len(meta.get("joint_names", JOINT_NAMES))
    keys = table.select(["index", "subject", "action", "camera", "frame", "split"]).to_pandas()
    return CropIndex(keys, column_points(table, "bbox_xyxy", (4,)),
                     column_points(table, "crop_to_image", (2, 3)),
                     column_points(table, "gt_2d", (J, 2)), meta)


def _open_crops(path: Path) -> h5py.File:
    """crops.h5 opened for reading; a missing, unreadable or crop-less file is a DataError."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
    if "crops" not in f:
        f.close()
        raise DataError(f"{path}: no dataset 'crops'")
    return f


def _check_rows(path: Path, rows: np.ndarray, n: int) -> None:
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        bad = rows[(rows < 0) | (rows >= n)][0]
        raise DataError(f"{path}: row {bad} out of range (N = {n})")


def _read_rows(ds: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """``ds[rows]`` for any integer rows (any order, repeats allowed): each run of consecutive
    distinct rows is one slice read, in file order. With one crop per chunk (what
    :class:`CropWriter` writes), a shuffled batch decodes only its own crops."""
    rows = np.asarray(rows, np.int64)
    uniq, inverse = np.unique(rows, return_inverse=True)
    out = np.empty((len(uniq),) + ds.shape[1:], ds.dtype)
    breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
    for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(uniq)]):
        if hi > lo:
            out[lo:hi] = ds[uniq[lo]:uniq[hi - 1] + 1]
    return out if np.array_equal(uniq, rows) else out[inverse.reshape(-1)]


class CropStore:
    """The crops of crops.h5 at h5 rows ``rows`` (None = all), read from the file on demand:
    ``store[i]`` -> (s, s, 3), ``store[items]`` / ``store[a:b]`` -> (n, s, s, 3) uint8, the pixels
    ``read_crops(h5_path, rows)[items]`` would give (resampled to ``size`` by
    :func:`resize_crops` when given). Memory does not grow with the number of crops.

    The HDF5 handle is opened lazily, once per process (a forked DataLoader worker or a DDP
    rank opens its own; pickling drops it), so the store works with ``num_workers`` 0 and > 0.
    """

    def __init__(self, h5_path: str | os.PathLike, rows: np.ndarray | None = None, size: int | None = None):
        self.path = Path(h5_path)
        ds = self._open()["crops"]
        n, self.stored_size = ds.shape[0], int(ds.shape[1])
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, np.int64).reshape(-1)
        _check_rows(self.path, self.rows, n)
        self.size = self.stored_size if size is None else int(size)

    def _open(self) -> h5py.File:
        if getattr(self, "_file", None) is not None and self._pid == os.getpid():
            return self._file
        self._file, self._pid = _open_crops(self.path), os.getpid()
        return self._file

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_file", "_pid")}

    def close(self) -> None:
        if getattr(self, "_file", None) is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), self.size, self.size, 3)

    ndim = 4
    dtype = np.dtype(np.uint8)

    def resized(self, size: int) -> "CropStore":
        """The same crops resampled to ``size`` on read."""
        return CropStore(self.path, self.rows, size)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            if not -len(self) <= key < len(self):
                raise IndexError(f"{self.path}: item {key} of {len(self)} crops")
            return self.read([key])[0]
        if isinstance(key, slice):
            return self.read(np.arange(len(self))[key])
        return self.read(key)

    def read(self, items) -> np.ndarray:
        """Crops at positions ``items`` (any order) -> (n, s, s, 3) uint8."""
        rows = self.rows[np.asarray(items, np.int64).reshape(-1)]
        try:
            crops = _read_rows(self._open()["crops"], rows)
        except OSError as e:
            raise DataError(f"{self.path}: crops unreadable (truncated or damaged file? {e})") from None
        return resize_crops(crops, self.size)


def read_crops(h5_path: str | os.PathLike, rows: np.ndarray | None = None, block: int = 1024
               ) -> np.ndarray:
    """Crops (n, S, S, 3) uint8 at h5 rows ``rows`` (any order; None = all), read block-wise
    (row-wise from a file of one crop per chunk, where whole blocks would decode every chunk)."""
    path = Path(h5_path)
    f = _open_crops(path)
    try:
        with f:
            ds = f["crops"]
            if rows is None:
                return ds[()]
            rows = np.asarray(rows, np.int64)
            _check_rows(path, rows, ds.shape[0])
            if ds.chunks is not None and ds.chunks[0] == 1:
                return _read_rows(ds, rows)
            out = np.empty((len(rows),) + ds.shape[1:], np.uint8)
            order = np.argsort(rows, kind="stable")
            sorted_rows = rows[order]
            for start in range(0, ds.shape[0], block):
                lo, hi = np.searchsorted(sorted_rows, [start, start + block])
                if lo == hi:
                    continue
                chunk = ds[start:min(start + block, ds.shape[0])]
                out[order[lo:hi]] = chunk[sorted_rows[lo:hi] - start]
            return out
    except OSError as e:  # a truncated or damaged file fails only when its chunks are read
        raise DataError(f"{path}: crops unreadable (truncated or damaged file? {e})") from None


def iter_crop_blocks(h5_path: str | os.PathLike, block: int = 256):
    """Yield ``(start, crops (n, S, S, 3) uint8)`` over the whole file, in order (streaming)."""
    path = Path(h5_path)
    f = _open_crops(path)
    try:
        with f:
            ds = f["crops"]
            for start in range(0, ds.shape[0], block):
                yield start, ds[start:start + block]
    except OSError as e:
        raise DataError(f"{path}: crops unreadable (truncated or damaged file? {e})") from None


def normalize_images(crops) -> torch.Tensor:
    """uint8 RGB (B, S, S, 3) (numpy or tensor) -> float32 (B, 3, S, S), ImageNet-normalised."""
    x = torch.as_tensor(crops)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.as_tensor(MEAN_RGB, device=x.device).view(1, 3, 1, 1)
    std = torch.as_tensor(STD_RGB, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------- dataset
@dataclass(frozen=True)
class Augmentation:
    """Training augmentation (Xiao et al. 2018 Sec. 4 plus colour): scale s ~ 1 + N(0, scale)
    clipped to +-scale, rotation ~ N(0, rotation) deg clipped to +-2 rotation (with probability
    ``rotation_prob``), horizontal flip with left/right swapped (``flip_prob``), per-channel
    gain and contrast in 1 +- ``color``, brightness shift +- ``brightness`` (of 255). Values come
    from params ``pose2d.aug_*`` (:func:`pose3d.tasks.pose2d.augmentation_of`); Xiao et al. use
    scale 0.25, rotation 30."""

    scale: float
    rotation: float
    rotation_prob: float
    flip_prob: float
    color: float
    brightness: float
    shift: float  # random translation, fraction of the crop size


NO_AUGMENTATION = Augmentation(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def augment_affine(rng: np.random.Generator, size: int, aug: Augmentation) -> tuple[np.ndarray, bool]:
    """A random crop->crop affine (2, 3) about the crop centre, and whether to flip after it."""
    s = float(np.clip(1 + rng.normal() * aug.scale, 1 - aug.scale, 1 + aug.scale))
    r = float(np.clip(rng.normal() * aug.rotation, -2 * aug.rotation, 2 * aug.rotation)) \
        if rng.random() < aug.rotation_prob else 0.0
    t = rng.uniform(-aug.shift, aug.shift, 2) * size if aug.shift > 0 else np.zeros(2)
    flip = bool(rng.random() < aug.flip_prob)
    c = (size - 1) / 2
    a = np.deg2rad(r)
    R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    A = np.concatenate([R, (np.array([c, c]) + t - R @ np.array([c, c]))[:, None]], 1)
    return A, flip


class CropDataset(torch.utils.data.Dataset):
    """Crops -> (image (3, S, S) float32 normalised, joints (J, 2) crop px, weights (J,) 1 inside
    the crop, else 0). ``crops``: an in-memory array (N, S, S, 3) uint8, or a :class:`CropStore`
    that reads them from crops.h5 on demand (the training stages: memory does not grow with
    the data; :meth:`batch` reads its crops in one pass over the file, in row order). The two
    give the same samples, bit for bit.

    Augmentation is deterministic given (seed, epoch, item): call :meth:`set_epoch` each epoch.
    ``set_epoch(epoch, size)`` also sets the output size: crops (and joints) are resampled
    from S to ``size`` after the augmentation (area interpolation), for a warm-up at a lower
    resolution; the default is the stored size S.
    """
    def __init__(self, crops: "np.ndarray | CropStore", joints_crop: np.ndarray,
                 aug: Augmentation = NO_AUGMENTATION, seed: int = 0):
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
            raise ValueError(f"CropDataset: crops has shape {crops.shape}, expected (N, S, S, 3)")
        if joints_crop.shape[0] != crops.shape[0] or joints_crop.shape[-1] != 2:
            raise ValueError(f"CropDataset: joints {joints_crop.shape} do not match crops {crops.shape}")
        self.crops, self.joints = crops, np.asarray(joints_crop, np.float32)
        self.aug, self.seed, self.epoch = aug, int(seed), 0
        self.size = crops.shape[1]
        self.out_size = self.size

    def __len__(self) -> int:
        return len(self.crops)

    def set_epoch(self, epoch: int, size: int | None = None) -> None:
        self.epoch = int(epoch)
        self.out_size = self.size if size is None else int(size)

    def sample(self, i: int, img: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item i as numpy: (image (s, s, 3) uint8, joints (J, 2) px of that image, weights (J,)),
        s = the output size of the current epoch (S unless :meth:`set_epoch` said otherwise).
        ``img``: crop i's pixels when already read."""
        S, joints = self.size, self.joints[i].astype(np.float64)
        img = self.crops[i] if img is None else img
        if self.aug != NO_AUGMENTATION:
            rng = np.random.default_rng([self.seed, self.epoch, int(i)])
            A, flip = augment_affine(rng, S, self.aug)
            if flip:
                A = compose_affine(np.array([[-1.0, 0, S - 1], [0, 1.0, 0]]), A)
            img = warp_crop(img, A, S)
            joints = apply_affine(A, joints)
            if flip:
                joints = joints[list(FLIP_PERM)]
            if self.aug.color > 0 or self.aug.brightness > 0:
                c, b = self.aug.color, self.aug.brightness
                gain = rng.uniform(1 - c, 1 + c, 3).astype(np.float32)
                contrast = np.float32(rng.uniform(1 - c, 1 + c))
                shift = np.float32(rng.uniform(-b, b) * 255)
                f = img.astype(np.float32)
                mean = f.mean()
                f = (f - mean) * contrast + mean
                f = f * gain + shift
                img = np.clip(f, 0, 255).astype(np.uint8)
        if self.out_size != S:
            img = resize_crops(img[None], self.out_size)[0]
            joints = resize_points(joints, S, self.out_size)
            S = self.out_size
        finite = np.isfinite(joints).all(-1)
        inside = finite & (joints >= -0.5).all(-1) & (joints < S - 0.5).all(-1)
        return img, joints.astype(np.float32), inside.astype(np.float32)

    def __getitem__(self, i: int):
        img, joints, w = self.sample(i)
        return normalize_images(img[None])[0], torch.from_numpy(joints), torch.from_numpy(w)

    def batch(self, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Collate items -> (images (B, 3, S, S), joints (B, J, 2), weights (B, J))."""
        items = np.asarray(items, np.int64)
        pixels = self.crops[items]  # one read of the batch (a CropStore: sorted, per run of rows)
        imgs, joints, ws = zip(*(self.sample(int(i), img) for i, img in zip(items, pixels)))
        return (normalize_images(np.stack(imgs)), torch.from_numpy(np.stack(joints)),
                torch.from_numpy(np.stack(ws)))


# --------------------------------------------------------------------------- extraction
def _camera_background(videos_dir, sequences, camera: str, n_frames: int) -> np.ndarray:
    """Median of ``n_frames`` frames sampled evenly over all sequences filmed by one static
    camera (a subject's session): the person stands at different places in different
    sequences, so the median sees the background even where one sequence barely moves."""

    per_seq = max(1, -(-n_frames // len(sequences)))
    frames = []
    for seq in sequences:
        T = len(seq.positions_world)
        keep = set(np.linspace(0, T - 1, min(per_seq, T)).round().astype(int).tolist())
        src = find_source(videos_dir, seq.subject, seq.action, camera)
        frames += [img for k, img in iter_frames(src, 1, T) if k in keep]
    return median_background(frames)


def check_free_space(path: str | os.PathLike, need_bytes: int) -> None:
    """Refuse to start writing ``path`` when its disk has less room than ``need_bytes`` (the
    uncompressed size: an upper bound) needs: h5py can crash, not raise, on a full disk."""
    folder = Path(path).resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise DataError(f"{path}: needs up to {need_bytes / 2**20:.0f} MB, {folder} has {free / 2**20:.0f} MB free")


def extract_crops(mocap_path: str | os.PathLike, cameras_path: str | os.PathLike,
                  videos_dir: str | os.PathLike, out_h5: str | os.PathLike,
                  out_index: str | os.PathLike, *, crop_size: int, frame_stride: int = 1,
                  box_source: str = "gt", box_margin: float = 0.25, bg_frames: int = 25,
                  bg_threshold: float = 30.0, on_error: str = "raise", compression: int = 1,
                  progress: bool = True) -> dict:
    """Crop every (subject, action, camera) video of the studio layout into crops.h5 + parquet.

    GT 2D = the ground truth's pixels (:meth:`pose3d.data.views.GroundTruth.view`: distorted,
    as in the video). Boxes come from
    the GT (``box_source="gt"``) or from a per-video median background + largest foreground
    blob (``"background"``; a frame without a blob reuses the previous box). Frames are decoded
    one at a time and crops are flushed in blocks, so memory does not grow with the number of
    videos. Returns counts: crops, videos, skipped videos (``on_error="skip"``), frames whose
    background box fell back, seconds.
    """
    log = logging.getLogger(__name__)
    t0 = time.perf_counter()
    truth = GroundTruth.load(mocap_path, cameras_path)
    jobs = [(seq, cam_name) for seq in truth.sequences for cam_name in sorted(truth.cameras_of(seq.subject))]
    stats = {"crops": 0, "videos": 0, "skipped_videos": [], "background_fallbacks": 0}
    image_size: dict[str, list[int]] = {}
    meta = {"box_source": box_source, "box_margin": box_margin, "frame_stride": frame_stride,
            "image_size": image_size}
    jobs.sort(key=lambda sc: (sc[0].subject, sc[1]))  # group by (subject, camera) for backgrounds
    backgrounds: dict[tuple[str, str], np.ndarray] = {}
    total_frames = sum(-(-len(s.positions_world) // frame_stride) for s, _ in jobs)
    check_free_space(out_h5, total_frames * crop_size * crop_size * 3)
    bar = tqdm(total=total_frames, desc="extract", unit="frame", disable=not progress, mininterval=2.0)
    with CropWriter(out_h5, out_index, crop_size, metadata=meta, compression_level=compression) as w:
        for seq, cam_name in jobs:
            view = truth.view(seq, cam_name)
            cam, gt = view.camera, view.pixels  # gt: (T, J, 2) px
            T = len(gt)
            try:
                src = find_source(videos_dir, seq.subject, seq.action, cam_name)
                info = video_info(src)
                if (info.width, info.height) != (cam.width, cam.height):
                    raise VideoError(f"{src}: frames are {info.width}x{info.height} but "
                                     f"{cameras_path} says {cam.width}x{cam.height} for "
                                     f"{seq.subject}/{cam_name}")
                if info.num_frames < T:
                    raise VideoError(f"{src}: holds {info.num_frames} frames but mocap "
                                     f"{seq.subject}/{seq.action} has {T}")
                background = None
                if box_source == "background":
                    key = (seq.subject, cam_name)
                    if key not in backgrounds:
                        backgrounds.clear()  # one (subject, camera) at a time: memory stays flat
                        backgrounds[key] = _camera_background(
                            videos_dir, [s for s, c in jobs if (s.subject, c) == key], cam_name, bg_frames)
                    background = backgrounds[key]
                crops, frames, boxes, affines = [], [], [], []
                prev_box = None
                gt_boxes = square_box(gt, box_margin)
                for k, img in iter_frames(src, frame_stride, T):
                    if background is None:
                        box = gt_boxes[k]
                    else:
                        box = foreground_box(img, background, bg_threshold, box_margin)
                        if box is None:
                            stats["background_fallbacks"] += 1
                            box = prev_box if prev_box is not None else box_from_extent(
                                np.array([[-0.5, -0.5]]), np.array([[img.shape[1] - 0.5, img.shape[0] - 0.5]]), 0)[0]
                        prev_box = box
                    A = crop_affine(box, crop_size)
                    crops.append(warp_crop(img, A, crop_size))
                    frames.append(k)
                    boxes.append(box)
                    affines.append(invert_affine(A))
                    bar.update(1)
            except VideoError as e:
                if on_error != "skip":
                    raise
                log.warning("skipping %s", e)
                stats["skipped_videos"].append(str(e))
                continue
            frames = np.asarray(frames, np.int64)
            w.add(np.stack(crops), seq.subject, seq.action, cam_name, frames, seq.split,
                  np.stack(boxes), np.stack(affines), gt[frames])
            image_size[cam_name] = [int(cam.width), int(cam.height)]
            stats["videos"] += 1
        stats["crops"] = w.count
        if stats["crops"] == 0:
            raise DataError(f"{videos_dir}: no crops extracted (all videos skipped?)")
        meta["skipped_videos"] = len(stats["skipped_videos"])
    bar.close()
    stats["seconds"] = time.perf_counter() - t0
    return stats
