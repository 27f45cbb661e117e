"""BlazePose for real footage: a person detector and a 33-landmark model, run by ``ai-edge-litert``.

Re-implemented from the BlazePose paper (Bazarevsky et al. 2020, "BlazePose: On-device Real-time
Body Pose tracking") and the model cards of MediaPipe Pose; the weights are the two ``.tflite``
files of the ``mediapipe==0.10.21`` wheel (Apache-2.0), fetched by ``p3d fetch-models``
(:func:`fetch_models`) into ``$POSE3D_CACHE`` or ``~/.cache/pose3d`` and checked against the
sha256 pinned in :data:`MODELS`. ``ai-edge-litert`` (Google's TFLite runtime; numpy, flatbuffers,
protobuf, ml_dtypes) runs them: no mediapipe, OpenCV-free model code, no hand-written parsing.

Pipeline per frame (``BlazePose.track``):

1. **Person detector** (``pose_detection.tflite``, 224 x 224, RGB in [-1, 1], the frame
   letterboxed): an SSD head over 2254 anchors (:func:`ssd_anchors`: strides 8, 16, 32, 32, 32,
   two unit-size anchors per layer and cell, the layers of one stride sharing a grid). Each anchor
   regresses a box and 4 keypoints as offsets in input pixels (:func:`decode_detections`); the
   score is the sigmoid of the clipped logit. Overlapping detections (IoU > 0.3) of the best one
   are averaged weighted by their scores (weighted NMS), one person kept.
2. **Alignment** (the model card's keypoint ROI): keypoint 0 is the hip centre, keypoint 1 a
   point whose distance to it is the radius of the circle around the whole body, and the line
   from 0 to 1 gives the body's incline. ROI: a square of side 2 x radius x 1.25 centred on the
   hips and rotated so that hips -> point 1 points up in the crop (:func:`roi_from_points`).
3. **Landmarks** (``pose_landmark_full.tflite``, 256 x 256, RGB in [0, 1]): 39 points (33 body
   landmarks + 6 auxiliary: 33/34 are the alignment pair for the next frame) as x, y (crop px),
   z, visibility and presence logits; a pose-presence score. Points go back to the image through
   the ROI's affine (:func:`roi_affine`).
4. **Tracking** (as BlazePose does for video): the next frame's ROI comes from this frame's
   landmarks 33 / 34; the detector runs again only on the first frame and when the presence
   score drops below ``presence_threshold``.

The 33 landmarks map to H36M-17 by :func:`landmarks_to_h36m`: either by name (the rules of
:mod:`.keypoints`, the one place the import route uses too) or by the affine combination fitted
on the studio's train subjects (``blazepose_h36m.json`` beside this module, fitted by
``benchmarks/blazepose.py fit``; the default).

Glossary: N anchors, T frames, S crop size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tqdm.auto import tqdm

from pose3d.data.crops import apply_affine, invert_affine, warp_crop
from pose3d.data.io import DataError
from pose3d.data.video import iter_frames, video_info
from pose3d.skeleton import JOINT_NAMES
from pose3d.tasks.footage.detect import Keypoints2D
from pose3d.tasks.footage.keypoints import MEDIAPIPE33, mapping_matrix

log = logging.getLogger(__name__)

#: the wheel the weights come from (any platform's wheel holds the same files; a fixed one is asked for)
WHEEL = "mediapipe==0.10.21"
WHEEL_PLATFORM = ("manylinux_2_28_x86_64", "3.11")
#: name in the cache -> (member of the wheel, sha256)
MODELS: dict[str, tuple[str, str]] = {
    "pose_detection.tflite": ("mediapipe/modules/pose_detection/pose_detection.tflite",
                              "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "pose_landmark_full.tflite": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
                                  "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
}
FETCH_HINT = "run `p3d fetch-models` (downloads the mediapipe 0.10.21 wheel with pip and extracts the two models)"
MAPPING_FILE = Path(__file__).with_name("blazepose_h36m.json")

DETECTOR_SIZE = 224
LANDMARK_SIZE = 256
STRIDES = (8, 16, 32, 32, 32)
ROI_SCALE = 1.25


# --------------------------------------------------------------------------- weights
def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where the models live: ``cache``, else ``$POSE3D_CACHE``, else ``~/.cache/pose3d``; + ``blazepose``."""
    root = Path(cache) if cache else Path(os.environ.get("POSE3D_CACHE") or Path.home() / ".cache" / "pose3d")
    return root / "blazepose"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_paths(cache: str | os.PathLike | None = None) -> dict[str, Path]:
    """{name: path} of the two models, checked; a DataError naming the file and ``p3d fetch-models``
    when one is missing or its sha256 is not the pinned one."""
    folder = cache_dir(cache)
    out = {}
    for name, (_, digest) in MODELS.items():
        p = folder / name
        if not p.is_file():
            raise DataError(f"{p}: BlazePose model not found; {FETCH_HINT}")
        if sha256(p) != digest:
            raise DataError(f"{p}: sha256 is not the pinned {digest[:12]}...; delete it and {FETCH_HINT}")
        out[name] = p
    return out


def fetch_models(cache: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None,
                 force: bool = False) -> dict[str, Path]:
    """Put the two models into :func:`cache_dir`: ``pip download`` the mediapipe wheel (or read the
    given ``wheel`` file), extract the members, check their sha256, write each atomically (a temp
    file renamed). Files already there with the right sha256 are kept unless ``force``."""
    folder = cache_dir(cache)
    if not force:
        try:
            return model_paths(cache)
        except DataError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pose3d_fetch.") as tmp:
        if wheel is None:
            plat, py = WHEEL_PLATFORM
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform", plat,
                   "--python-version", py, "-d", tmp, WHEEL]
            log.info("%s", " ".join(cmd))
            r = subprocess.run(cmd, capture_output=True, text=True)
            found = sorted(Path(tmp).glob("mediapipe-*.whl"))
            if r.returncode != 0 or not found:
                raise DataError(f"pip download {WHEEL} failed (exit {r.returncode}): {r.stderr.strip()[-500:]}; "
                                f"or download the wheel elsewhere and run `p3d fetch-models --wheel FILE`")
            wheel = found[0]
        wheel = Path(wheel)
        try:
            zf = zipfile.ZipFile(wheel)
        except (OSError, zipfile.BadZipFile) as e:
            raise DataError(f"{wheel}: not a readable wheel ({e})") from e
        with zf:
            for name, (member, digest) in MODELS.items():
                try:
                    data = zf.read(member)
                except KeyError as e:
                    raise DataError(f"{wheel}: has no {member} (need the {WHEEL} wheel)") from e
                got = hashlib.sha256(data).hexdigest()
                if got != digest:
                    raise DataError(f"{wheel}: {member} has sha256 {got[:12]}..., expected {digest[:12]}...")
                fd, part = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.chmod(part, 0o644)  # mkstemp makes it private; the cache may be shared
                os.replace(part, folder / name)
    return model_paths(cache)


# --------------------------------------------------------------------------- detector geometry
def ssd_anchors(input_size: int = DETECTOR_SIZE, strides=STRIDES, per_layer: int = 2) -> np.ndarray:
    """(N, 2) anchor centres, normalised to the input: consecutive layers of one stride share a
    ``ceil(input_size / stride)`` grid; per cell (rows, then columns) ``per_layer`` anchors of each
    of those layers, at the cell centre. Anchor sizes are all 1 (fixed-size anchors)."""
    out = []
    k = 0
    while k < len(strides):
        n = 1
        while k + n < len(strides) and strides[k + n] == strides[k]:
            n += 1
        fm = math.ceil(input_size / strides[k])
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        cell = np.stack([xs.ravel(), ys.ravel()], 1)
        out.append(np.repeat(cell, n * per_layer, axis=0))
        k += n
    return np.concatenate(out).astype(np.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -100, 100)))


def decode_detections(raw: np.ndarray, logits: np.ndarray, anchors: np.ndarray, input_size: int = DETECTOR_SIZE
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regressors (N, 4 + 2K) and logits (N,) or (N, 1) -> boxes (N, 4) xyxy, keypoints (N, K, 2),
    scores (N,); coordinates normalised to the input (0..1). Box centre = anchor + offset / size,
    box side = regressed side / size (unit anchors), keypoint = anchor + offset / size; score =
    sigmoid(clip(logit, -100, 100))."""
    raw = np.asarray(raw, np.float64) / input_size
    a = np.asarray(anchors, np.float64)
    c = a + raw[:, :2]
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([c - half, c + half], 1)
    kps = raw[:, 4:].reshape(len(raw), -1, 2) + a[:, None]
    scores = _sigmoid(np.asarray(logits, np.float64).reshape(-1))
    return boxes, kps, scores


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), 1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), -1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def best_detection(boxes, kps, scores, threshold: float = 0.5, overlap: float = 0.3):
    """The highest-scoring detection above ``threshold``, averaged (weights = scores) with the
    detections overlapping it by IoU > ``overlap`` -> (box (4,), keypoints (K, 2), score) or None."""
    keep = np.flatnonzero(scores >= threshold)
    if not len(keep):
        return None
    top = keep[np.argmax(scores[keep])]
    group = keep[iou(boxes[top], boxes[keep]) > overlap]
    w = scores[group] / scores[group].sum()
    return (w @ boxes[group], np.einsum("n,nkc->kc", w, kps[group]), float(scores[top]))


# --------------------------------------------------------------------------- ROI
@dataclass(frozen=True)
class ROI:
    """A rotated square region of the image: centre (x, y) px, side px, angle (radians; the crop's
    up direction is the image's (sin a, -cos a))."""

    centre: tuple[float, float]
    side: float
    angle: float

    def box(self) -> np.ndarray:
        """(4,) xyxy axis-aligned square around the centre, side = the ROI's side."""
        cx, cy = self.centre
        h = self.side / 2
        return np.array([cx - h, cy - h, cx + h, cy + h])


def roi_from_points(centre, scale_point, scale: float = ROI_SCALE) -> ROI:
    """The alignment ROI (module docstring, step 2) from the hip centre and the scale/rotation point
    (both (2,) image px)."""
    c = np.asarray(centre, np.float64)
    d = np.asarray(scale_point, np.float64) - c
    return ROI((float(c[0]), float(c[1])), float(2 * np.hypot(*d) * scale), float(math.atan2(d[0], -d[1])))


def roi_affine(roi: ROI, size: int) -> np.ndarray:
    """(2, 3) image px -> crop px of an S x S crop of ``roi`` (pixel centres at integers, as
    :func:`pose3d.data.crops.crop_affine`): image = centre + (side / S) R(angle) (crop + 0.5 - S / 2)."""
    s = roi.side / size
    ca, sa = math.cos(roi.angle), math.sin(roi.angle)
    M = s * np.array([[ca, -sa], [sa, ca]])
    t = np.asarray(roi.centre) - M @ np.full(2, size / 2 - 0.5)
    return invert_affine(np.concatenate([M, t[:, None]], 1))


def letterbox_affine(width: int, height: int, size: int = DETECTOR_SIZE) -> np.ndarray:
    """(2, 3) image px -> detector input px: the whole frame scaled into the square, centred."""
    return roi_affine(ROI(((width - 1) / 2, (height - 1) / 2), float(max(width, height)), 0.0), size)


# --------------------------------------------------------------------------- H36M-17
def load_mapping(path: str | os.PathLike = MAPPING_FILE) -> np.ndarray:
    """The fitted (17, 33) landmark -> H36M-17 weights (rows sum to 1) of ``path``."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        W = np.asarray(d["weights"], np.float64)
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: not a landmark mapping file with 'weights' ({e})") from e
    if W.shape != (len(JOINT_NAMES), len(MEDIAPIPE33)) or list(d.get("joints", [])) != list(JOINT_NAMES) \
            or list(d.get("landmarks", [])) != list(MEDIAPIPE33):
        raise DataError(f"{path}: weights {W.shape} / joint or landmark names do not match H36M-17 x MediaPipe-33")
    return W


def landmarks_to_h36m(points: np.ndarray, visibility: np.ndarray, mapping: str | np.ndarray = "fitted"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(T, 33, 2) landmarks + (T, 33) visibility -> H36M-17 (T, 17, 2), scores (T, 17).

    ``mapping``: "names" (:func:`pose3d.tasks.footage.keypoints.mapping_matrix`, the import route's
    rules), "fitted" (:data:`MAPPING_FILE`) or a (17, 33) matrix. Each joint is the weighted sum
    of the landmarks (weights sum to 1: an affine combination, so it moves with the person);
    its score is the mean visibility of the landmarks it uses, weighted by |weight|."""
    if isinstance(mapping, str):
        if mapping not in ("names", "fitted"):
            raise ValueError(f"mapping {mapping!r}: choose 'names', 'fitted' or a (17, 33) matrix")
        W = mapping_matrix(MEDIAPIPE33) if mapping == "names" else load_mapping()
    else:
        W = np.asarray(mapping, np.float64)
    pts = np.einsum("jk,tkc->tjc", W, np.asarray(points, np.float64))
    A = np.abs(W) / np.abs(W).sum(1, keepdims=True)
    return pts, np.asarray(visibility, np.float64) @ A.T


#: landmarks each H36M-17 joint may combine in the fitted mapping (the by-name rule's landmarks
#: are added): the joint's own landmark and its neighbours on the body
_SIDE_CANDIDATES = {
    "hip": ("hip", "knee", "shoulder", "~hip"), "knee": ("knee", "hip", "ankle"),
    "ankle": ("ankle", "knee", "heel", "foot_index"), "shoulder": ("shoulder", "elbow", "hip", "~shoulder"),
    "elbow": ("elbow", "shoulder", "wrist"), "wrist": ("wrist", "elbow", "pinky", "index", "thumb"),
}
_TORSO = ("l_shoulder", "r_shoulder", "l_hip", "r_hip")
_HEAD = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "mouth_left", "mouth_right", "l_shoulder", "r_shoulder")
CANDIDATES: dict[str, tuple[str, ...]] = {
    "pelvis": _TORSO + ("l_knee", "r_knee"), "spine": _TORSO, "thorax": _TORSO + ("nose",),
    "neck_nose": _HEAD, "head_top": _HEAD,
    **{f"{s}_{part}": tuple(f"{o if n.startswith('~') else s}_{n.lstrip('~')}" for n in names)
       for part, names in _SIDE_CANDIDATES.items() for s, o in (("l", "r"), ("r", "l"))},
}


def fit_mapping(landmarks: np.ndarray, gt: np.ndarray, scale: np.ndarray, ridge: float = 1e-3,
                candidates: dict[str, tuple[str, ...]] = CANDIDATES) -> np.ndarray:
    """Least-squares (17, 33) landmark -> H36M-17 weights from landmarks (N, 33, 2) and ground
    truth (N, 17, 2) px of the same frames; residuals divided by ``scale`` (N,) (the person's
    size, so every frame counts alike). Per joint: weights only on its :data:`CANDIDATES` and the
    by-name rule's landmarks, summing to 1 (an affine combination: it moves, turns and scales with
    the person), pulled towards the by-name weights by ``ridge`` (per frame and coordinate)."""
    W0 = mapping_matrix(MEDIAPIPE33)
    X = np.asarray(landmarks, np.float64) / np.asarray(scale, np.float64)[:, None, None]
    G = np.asarray(gt, np.float64) / np.asarray(scale, np.float64)[:, None, None]
    ok = np.isfinite(X).all((1, 2))
    W = W0.copy()
    for j, name in enumerate(JOINT_NAMES):
        use = sorted({MEDIAPIPE33.index(n) for n in candidates[name]} | set(np.flatnonzero(W0[j]).tolist()))
        m = ok & np.isfinite(G[:, j]).all(-1)
        A = X[m][:, use].transpose(0, 2, 1).reshape(-1, len(use))  # (2N, C) rows: frame x coordinate
        b = G[m, j].reshape(-1)
        w0 = W0[j, use]
        # weights = w0 + B z with B an orthonormal basis of {v : sum(v) = 0}
        B = np.linalg.svd(np.ones((1, len(use))))[2][1:].T
        lhs = np.vstack([A @ B, math.sqrt(ridge * len(b)) * np.eye(B.shape[1])])
        rhs = np.concatenate([b - A @ w0, np.zeros(B.shape[1])])
        z = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
        W[j] = 0.0
        W[j, use] = w0 + B @ z
    return W


# --------------------------------------------------------------------------- models
def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"BlazePose takes RGB uint8 frames (H, W, 3), got {image.dtype} {image.shape}")


class BlazePose:
    """The two models with one interpreter each (``threads`` CPU threads); see the module docstring."""

    def __init__(self, cache: str | os.PathLike | None = None, threads: int = 1, detect_threshold: float = 0.5,
                 presence_threshold: float = 0.5):
        paths = model_paths(cache)
        from ai_edge_litert.interpreter import Interpreter

        self.det = Interpreter(model_path=str(paths["pose_detection.tflite"]), num_threads=threads)
        self.lmk = Interpreter(model_path=str(paths["pose_landmark_full.tflite"]), num_threads=threads)
        for it in (self.det, self.lmk):
            it.allocate_tensors()
        self._det_in = self.det.get_input_details()[0]["index"]
        outs = {tuple(d["shape"][1:]): d["index"] for d in self.det.get_output_details()}
        self._det_reg, self._det_cls = outs[(2254, 12)], outs[(2254, 1)]
        self._lmk_in = self.lmk.get_input_details()[0]["index"]
        outs = {tuple(d["shape"][1:]): d["index"] for d in self.lmk.get_output_details()}
        self._lmk_pts, self._lmk_flag = outs[(195,)], outs[(1,)]
        self.anchors = ssd_anchors()
        self.detect_threshold = detect_threshold
        self.presence_threshold = presence_threshold

    def detect(self, image: np.ndarray) -> ROI | None:
        """The person's alignment ROI in an RGB uint8 frame (H, W, 3), or None."""
        _check_rgb(image)
        H, W = image.shape[:2]
        A = letterbox_affine(W, H)
        x = warp_crop(image, A, DETECTOR_SIZE).astype(np.float32) / 127.5 - 1.0
        self.det.set_tensor(self._det_in, x[None])
        self.det.invoke()
        boxes, kps, scores = decode_detections(self.det.get_tensor(self._det_reg)[0],
                                               self.det.get_tensor(self._det_cls)[0], self.anchors)
        best = best_detection(boxes, kps, scores, self.detect_threshold)
        if best is None:
            return None
        kp_img = apply_affine(invert_affine(A), best[1] * DETECTOR_SIZE - 0.5)  # normalised -> input px -> image
        return roi_from_points(kp_img[0], kp_img[1])

    def landmarks(self, image: np.ndarray, roi: ROI) -> tuple[np.ndarray, np.ndarray, float]:
        """Landmarks in ``roi`` -> (points (39, 2) image px, visibility (39,), presence score)."""
        _check_rgb(image)
        A = roi_affine(roi, LANDMARK_SIZE)
        x = warp_crop(image, A, LANDMARK_SIZE).astype(np.float32) / 255.0
        self.lmk.set_tensor(self._lmk_in, x[None])
        self.lmk.invoke()
        raw = self.lmk.get_tensor(self._lmk_pts)[0].reshape(39, 5).astype(np.float64)
        flag = float(self.lmk.get_tensor(self._lmk_flag).reshape(-1)[0])
        pts = apply_affine(invert_affine(A), raw[:, :2] - 0.5)  # continuous crop coords -> pixel centres
        return pts, _sigmoid(raw[:, 3]), flag

    def track(self, frames, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """RGB frames (an iterable of (k, image)) -> landmarks (T, 33, 2) px (NaN where no person),
        visibility (T, 33), boxes (T, 4) (the ROI's axis-aligned square; NaN where none), and the
        number of detector runs."""
        T = num_frames
        pts = np.full((T, 33, 2), np.nan)
        vis = np.zeros((T, 33))
        boxes = np.full((T, 4), np.nan)
        roi, runs = None, 0
        for k, img in frames:
            if k >= T:
                break
            got = None
            for _ in range(2):  # the tracked ROI, then (when it lost the person) a fresh detection
                fresh = roi is None
                if fresh:
                    roi = self.detect(img)
                    runs += 1
                    if roi is None:
                        break
                p, v, flag = self.landmarks(img, roi)
                if flag >= self.presence_threshold:
                    got = (p, v, roi)
                    break
                roi = None
                if fresh:
                    break
            if got is None:
                roi = None
                continue
            p, v, used = got
            pts[k], vis[k], boxes[k] = p[:33], v[:33], used.box()
            roi = roi_from_points(p[33], p[34])
        return pts, vis, boxes, runs


def blazepose_video(video: str | os.PathLike, *, max_frames: int | None = None, progress: bool = True,
                    cache: str | os.PathLike | None = None, mapping: str | np.ndarray = "fitted", threads: int = 1,
                    model: BlazePose | None = None) -> Keypoints2D:
    """Person boxes and H36M-17 2D for every frame of ``video`` with BlazePose (tracking, module
    docstring) -> :class:`~pose3d.tasks.footage.detect.Keypoints2D` (NaN / score 0 where no person
    was found). ``mapping``: see :func:`landmarks_to_h36m`."""
    info = video_info(video)  # VideoError naming the file when it cannot be opened
    T = info.num_frames if max_frames is None else min(info.num_frames, max_frames)
    model = model or BlazePose(cache, threads=threads)
    frames = tqdm(iter_frames(video, 1, info.num_frames), total=T, desc="2d (blazepose)", unit="frame",
                  disable=not progress, mininterval=2.0)
    lm, vis, boxes, runs = model.track(frames, T)
    lost = int((~np.isfinite(lm).all((1, 2))).sum())
    log.info("%s: BlazePose ran the person detector %d times; no person in %d of %d frames", video, runs, lost, T)
    pts, sc = landmarks_to_h36m(lm, vis, mapping)
    sc = np.where(np.isfinite(pts).all(-1), sc, 0.0)
    return Keypoints2D(pts.astype(np.float32), sc.astype(np.float32), boxes, info.width, info.height,
                       info.fps, f"blazepose on {video}")
