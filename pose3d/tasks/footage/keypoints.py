"""2D keypoints from other tools -> H36M-17, by joint name.

Formats (:func:`read_keypoints` tells them apart by content; every error names the file):

* **COCO-17 JSON** as mmpose writes it (``--save-predictions``: ``{"meta_info", "instance_info":
  [{"frame_id", "instances": [{"keypoints": [[x, y] * 17], "keypoint_scores": [17]}]}]}``) or as a
  COCO results list (``[{"image_id", "keypoints": [x, y, v] * 17, "score"}]``, what rtmlib users
  dump); one person per frame: the highest-scoring instance.
* **OpenPose** per-frame JSON: a folder of ``*_keypoints.json`` (``{"people":
  [{"pose_keypoints_2d": [x, y, c] * 25 (BODY_25) or * 18 (COCO-18)}]}``), one file per frame in
  name order; the person with the highest mean confidence.
* **MediaPipe Pose** 33 landmarks: ``.npy`` / ``.npz`` (array ``landmarks``) / ``.json`` (a list of
  frames, each 33 ``{"x", "y", "z", "visibility"}``) of shape (T, 33, >= 2), x and y *normalised*
  to [0, 1] by the image width and height (MediaPipe's NormalizedLandmark); visibility is the score.
* **DeepLabCut** ``.csv`` (header rows scorer / bodyparts / coords, coords x, y, likelihood; a
  multi-animal file's first individual) or ``.h5`` (the same table as pandas writes it, "table" or
  "fixed" format, read with h5py: PyTables is not needed).
  Body-part names are the user's own: they are matched by :func:`canonical_name`.

Every source layout maps to H36M-17 by name (:data:`ALIASES`); the joints H36M-17 has and
those layouts lack are derived in one place, :func:`derive_missing_joints`.
"""

from __future__ import annotations

import io
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pose3d.data.io import DataError
from pose3d.skeleton import COCO17_NAMES, JOINT_INDEX, JOINT_NAMES

#: OpenPose BODY_25 and COCO-18 keypoint orders (OpenPose's output docs).
OPENPOSE_BODY25 = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
                   "mid_hip", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye",
                   "r_ear", "l_ear", "l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel")
OPENPOSE_COCO18 = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
                   "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
#: MediaPipe Pose's 33 landmarks (mediapipe PoseLandmark order).
MEDIAPIPE33 = ("nose", "l_eye_inner", "l_eye", "l_eye_outer", "r_eye_inner", "r_eye", "r_eye_outer", "l_ear",
               "r_ear", "mouth_left", "mouth_right", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist",
               "r_wrist", "l_pinky", "r_pinky", "l_index", "r_index", "l_thumb", "r_thumb", "l_hip", "r_hip",
               "l_knee", "r_knee", "l_ankle", "r_ankle", "l_heel", "r_heel", "l_foot_index", "r_foot_index")

#: canonical source joint name -> H36M-17 name (sources name joints as in the tuples above, or
#: as :func:`canonical_name` makes of a DeepLabCut body part). ``mid_hip``/``neck`` of OpenPose
#: are H36M's pelvis/thorax (OpenPose's neck is the mid-shoulder point).
ALIASES: dict[str, str] = {
    **{n: n for n in JOINT_NAMES}, "nose": "neck_nose", "mid_hip": "pelvis", "neck": "thorax",
    "head": "head_top", "headtop": "head_top", "top_of_head": "head_top", "hips": "pelvis",
}
#: the auxiliary (non-H36M) points :func:`derive_missing_joints` may use
AUX = ("l_eye", "r_eye", "l_ear", "r_ear")

_SIDES = {"left": "l", "l": "l", "right": "r", "r": "r"}


def canonical_name(name: str) -> str:
    """A body-part name in any common spelling -> ``l_<part>`` / ``r_<part>`` / ``<part>``, lower case:
    'LeftShoulder', 'left_shoulder', 'shoulder_left', 'L.Shoulder', 'lshoulder' -> 'l_shoulder'."""
    s = re.sub(r"([a-z])([A-Z])", r"\1_\2", name.strip())
    words = [w for w in re.split(r"[^a-zA-Z0-9]+", s.lower()) if w]
    side = ""
    for i in (0, len(words) - 1):
        if words and words[i] in _SIDES:
            side = _SIDES[words.pop(i)]
            break
    part = "_".join(words)
    if not side and len(part) > 1 and part[0] in "lr" and part[1:] in {
            "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye", "ear"}:
        side, part = part[0], part[1:]
    return f"{side}_{part}" if side else part


def derive_missing_joints(points: np.ndarray, scores: np.ndarray, aux: dict[str, np.ndarray]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Fill the H36M-17 joints that other layouts lack, from the joints they have. The one place.

    points (T, 17, 2) H36M-17 order, NaN where the source has no such joint; scores (T, 17);
    aux {name: (T, 3) x, y, score} for the names in :data:`AUX`. Rules (in this order, each only
    where the joint is missing):
      * pelvis = mid-point of the hips;
      * thorax = mid-point of the shoulders;
      * spine = mid-point of pelvis and thorax (H36M's spine sits about there);
      * neck_nose = the nose (sources without one: mid-point of the eyes, else of the ears);
      * head_top = the centre of the head (mid-ears, else mid-eyes) moved away from the thorax by
        half the thorax -> head-centre distance (the crown is about that far above the ears).
    A derived joint's score is the minimum of the scores it came from.
    """
    p, s = np.array(points, np.float64, copy=True), np.array(scores, np.float64, copy=True)
    J = JOINT_INDEX

    def missing(j):
        return ~np.isfinite(p[:, J[j]]).all(-1)

    def put(j, xy, sc):
        m = missing(j) & np.isfinite(xy).all(-1)
        p[m, J[j]], s[m, J[j]] = xy[m], sc[m]

    def mid(a, b):
        return (p[:, J[a]] + p[:, J[b]]) / 2, np.minimum(s[:, J[a]], s[:, J[b]])

    put("pelvis", *mid("l_hip", "r_hip"))
    put("thorax", *mid("l_shoulder", "r_shoulder"))
    put("spine", *mid("pelvis", "thorax"))

    def aux_mid(a, b):
        if a in aux and b in aux:
            return (aux[a][:, :2] + aux[b][:, :2]) / 2, np.minimum(aux[a][:, 2], aux[b][:, 2])
        return None

    eyes, ears = aux_mid("l_eye", "r_eye"), aux_mid("l_ear", "r_ear")
    for c in (eyes, ears):
        if c is not None:
            put("neck_nose", *c)
    for c in (ears, eyes):
        if c is not None:
            centre, sc = c
            up = centre - p[:, J["thorax"]]
            put("head_top", centre + 0.5 * up, np.minimum(sc, s[:, J["thorax"]]))
    return p, s


def _to_h36m(points: np.ndarray, scores: np.ndarray, names, path) -> tuple[np.ndarray, np.ndarray]:
    """(T, K, 2) + (T, K) in a source layout named by ``names`` -> H36M-17 (derived joints filled)."""
    T = len(points)
    out = np.full((T, len(JOINT_NAMES), 2), np.nan)
    sc = np.zeros((T, len(JOINT_NAMES)))
    aux = {}
    for k, raw in enumerate(names):
        n = canonical_name(raw) if raw not in ALIASES else raw
        if n in ALIASES:
            out[:, JOINT_INDEX[ALIASES[n]]] = points[:, k]
            sc[:, JOINT_INDEX[ALIASES[n]]] = scores[:, k]
        elif n in AUX:
            aux[n] = np.concatenate([points[:, k], scores[:, k, None]], -1)
    out, sc = derive_missing_joints(out, sc, aux)
    lack = [n for j, n in enumerate(JOINT_NAMES) if not np.isfinite(out[:, j]).any()]
    if lack:
        raise DataError(f"{path}: the file's joints {list(names)} give no {lack} (H36M-17 needs them; "
                        f"name them as in docs/footage.md)")
    return out, sc


def mapping_matrix(names) -> np.ndarray:
    """The by-name mapping of a layout (``names``, K joints) to H36M-17 as a (17, K) matrix: joint
    j = sum_k W[j, k] * source joint k. Every rule of :func:`_to_h36m` /
    :func:`derive_missing_joints` is an affine combination of source joints, so the matrix is read
    off by mapping one-hot inputs (source k at x = 1, all others at 0); rows sum to 1."""
    K = len(names)
    pts = np.zeros((K, K, 2))
    pts[np.arange(K), np.arange(K), 0] = 1.0
    out, _ = _to_h36m(pts, np.ones((K, K)), names, "mapping_matrix")
    return out[..., 0].T


# --------------------------------------------------------------------------- readers
def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable as JSON ({e})") from e


def _flat_xy(kp, n: int, path: Path, where: str) -> tuple[np.ndarray, np.ndarray | None]:
    a = np.asarray(kp, np.float64)
    if a.ndim == 2 and a.shape[0] == n and a.shape[1] in (2, 3):
        return a[:, :2], (a[:, 2] if a.shape[1] == 3 else None)
    if a.ndim == 1 and a.size in (2 * n, 3 * n):
        a = a.reshape(n, -1)
        return a[:, :2], (a[:, 2] if a.shape[1] == 3 else None)
    raise DataError(f"{path}: {where}: keypoints of shape {a.shape}, expected {n} joints x (x, y[, score])")


def read_coco_json(path: Path, data) -> tuple[np.ndarray, np.ndarray]:
    """mmpose ``instance_info`` or a COCO results list -> (T, 17, 2), (T, 17) in COCO-17 order."""
    frames: dict[int, list] = {}
    if isinstance(data, dict) and "instance_info" in data:
        for i, fr in enumerate(data["instance_info"]):
            fid = int(fr.get("frame_id", i))
            for inst in fr.get("instances", []):
                xy, c = _flat_xy(inst["keypoints"], 17, path, f"frame {fid}")
                sc = np.asarray(inst.get("keypoint_scores", c if c is not None else np.ones(17)), np.float64)
                frames.setdefault(fid, []).append((xy, sc.reshape(17)))
            frames.setdefault(fid, [])
    elif isinstance(data, list) and data and isinstance(data[0], dict) and "keypoints" in data[0]:
        for d in data:
            fid = int(d.get("image_id", d.get("frame_id", 0)))
            xy, c = _flat_xy(d["keypoints"], 17, path, f"image_id {fid}")
            sc = c if c is not None else np.full(17, float(d.get("score", 1.0)))
            frames.setdefault(fid, []).append((xy, sc))
    else:
        raise DataError(f"{path}: JSON is neither mmpose predictions (instance_info) nor a COCO results list")
    ids = sorted(frames)
    T = len(ids)
    pts, scs = np.full((T, 17, 2), np.nan), np.zeros((T, 17))
    for t, fid in enumerate(ids):
        if frames[fid]:
            xy, sc = max(frames[fid], key=lambda x: float(np.mean(x[1])))
            pts[t], scs[t] = xy, sc
    return pts, scs


def read_openpose_dir(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    files = sorted(path.glob("*_keypoints.json")) or sorted(path.glob("*.json"))
    if not files:
        raise DataError(f"{path}: folder holds no OpenPose *_keypoints.json files")
    per = []
    layout = None
    for f in files:
        d = _load_json(f)
        if not isinstance(d, dict) or "people" not in d:
            raise DataError(f"{f}: not an OpenPose keypoints file (no 'people')")
        best = None
        for person in d["people"]:
            a = np.asarray(person.get("pose_keypoints_2d", []), np.float64)
            n = a.size // 3
            if a.size % 3 or n not in (25, 18):
                raise DataError(f"{f}: pose_keypoints_2d holds {a.size} values; expected 25 (BODY_25) or 18 "
                                f"(COCO-18) joints x 3")
            if layout is not None and n != layout:
                raise DataError(f"{f}: {n} joints, earlier files have {layout}")
            layout = n
            a = a.reshape(n, 3)
            if best is None or a[:, 2].mean() > best[:, 2].mean():
                best = a
        per.append(best)
    if layout is None:
        raise DataError(f"{path}: no person in any OpenPose file")
    out = np.stack([p if p is not None else np.full((layout, 3), np.nan) for p in per])
    xy = np.where(out[..., 2:3] > 0, out[..., :2], np.nan)  # OpenPose writes 0, 0, 0 for a missing joint
    return xy, np.nan_to_num(out[..., 2]), OPENPOSE_BODY25 if layout == 25 else OPENPOSE_COCO18


def read_mediapipe(path: Path, image_size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".json":
        d = _load_json(path)
        try:
            a = np.asarray([[[lm["x"], lm["y"], lm.get("z", 0.0), lm.get("visibility", 1.0)] for lm in fr] for fr in d],
                           np.float64)
        except (TypeError, KeyError) as e:
            raise DataError(f"{path}: not a list of frames of MediaPipe landmarks {{x, y, z, visibility}} ({e})") from e
    else:
        try:
            z = np.load(path, allow_pickle=False)
            a = z["landmarks"] if isinstance(z, np.lib.npyio.NpzFile) else z
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{path}: not a .npy array or an .npz with 'landmarks' ({e})") from e
        a = np.asarray(a, np.float64)
    if a.ndim != 3 or a.shape[1] != 33 or a.shape[2] < 2:
        raise DataError(f"{path}: MediaPipe landmarks of shape {a.shape}; expected (T, 33, >= 2)")
    if image_size is None:
        raise DataError(f"{path}: MediaPipe landmarks are normalised to [0, 1]; give the video or --image-size W H")
    w, h = image_size
    xy = a[..., :2] * np.array([w, h])
    sc = a[..., 3] if a.shape[2] >= 4 else np.ones(a.shape[:2])
    return xy, sc


class _NoGlobals(pickle.Unpickler):
    """Unpickles plain lists, tuples, dicts, strings and numbers only: any class or function
    reference is refused, so no code can run (pandas' HDF5 metadata needs nothing else)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused: {module}.{name}")


def _attr_object(group, key: str, path: Path):
    raw = group.attrs.get(key)
    if raw is None:
        raise DataError(f"{path}: /{group.name.strip('/')} lacks the pandas attribute {key!r}")
    try:
        return _NoGlobals(io.BytesIO(bytes(raw))).load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{path}: /{group.name.strip('/')} attribute {key!r} is not plain data ({e})") from e


def read_pandas_h5(path: Path, key: str = "df_with_missing") -> tuple[np.ndarray, list[tuple], list[str]]:
    """A DataFrame of floats with MultiIndex columns that pandas wrote to HDF5 (``to_hdf``, format
    "table" as DeepLabCut writes it, or "fixed"), read with h5py alone (no PyTables) ->
    (values (T, C) float64, column labels (C tuples), column level names). ``key``: the
    DataFrame's key, else the file's only top-level group."""
    import h5py

    with h5py.File(path, "r") as f:
        keys = [k for k in f if isinstance(f[k], h5py.Group)]
        if key not in keys and len(keys) != 1:
            raise DataError(f"{path}: no DataFrame key {key!r} and not exactly one group (groups: {keys})")
        g = f[key if key in keys else keys[0]]
        kind = bytes(g.attrs.get("pandas_type", b"")).decode()
        if kind == "frame_table":
            blocks = _attr_object(g, "values_cols", path)
            if blocks != ["values_block_0"] or "table" not in g:
                raise DataError(f"{path}: /{g.name.strip('/')} holds {blocks} value blocks; a keypoint table has "
                                "one block of floats")
            body = np.asarray(g["table"]["values_block_0"], np.float64)
            (axis, labels), = _attr_object(g, "non_index_axes", path)
            names = _attr_object(g, "info", path).get(axis, {}).get("names") or []
        elif kind == "frame":
            if int(g.attrs.get("nblocks", 0)) != 1:
                raise DataError(f"{path}: /{g.name.strip('/')} holds {int(g.attrs.get('nblocks', 0))} value blocks; "
                                "a keypoint table has one block of floats")
            body = np.asarray(g["block0_values"], np.float64)
            n = int(g.attrs.get("block0_items_nlevels", 1))
            levels = [[v.decode() for v in g[f"block0_items_level{i}"][()]] for i in range(n)]
            codes = [g[f"block0_items_label{i}"][()] for i in range(n)]
            names = [bytes(g[f"block0_items_level{i}"].attrs["name"]).decode() for i in range(n)]
            labels = [tuple(levels[i][c[k]] for i, c in enumerate(codes)) for k in range(len(codes[0]))]
        else:
            raise DataError(f"{path}: /{g.name.strip('/')} is not a pandas DataFrame (pandas_type {kind!r})")
    labels = [tuple(c) if isinstance(c, (tuple, list)) else (c,) for c in labels]
    if body.ndim != 2 or body.shape[1] != len(labels) or not all(len(c) == len(names) for c in labels):
        raise DataError(f"{path}: values {body.shape} do not match {len(labels)} column labels of levels {names}")
    return body, labels, list(names)


def read_dlc(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    try:
        if path.suffix == ".csv":
            df = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
            first = df.iloc[:, 0].tolist()
            heads = [i for i, v in enumerate(first[:4]) if v in ("scorer", "individuals", "bodyparts", "coords")]
            if "bodyparts" not in [first[i] for i in heads] or "coords" not in [first[i] for i in heads]:
                raise DataError(f"{path}: not a DeepLabCut CSV (no scorer/bodyparts/coords header rows)")
            hdr = {first[i]: df.iloc[i, 1:].tolist() for i in heads}
            body = df.iloc[len(heads):, 1:].replace("", "nan").astype(np.float64).to_numpy()
            cols = list(zip(hdr.get("individuals", [""] * len(hdr["coords"])), hdr["bodyparts"], hdr["coords"]))
        else:
            body, labels, levels = read_pandas_h5(path)
            cols = [(c[levels.index("individuals")] if "individuals" in levels else "",
                     c[levels.index("bodyparts")], c[levels.index("coords")]) for c in labels]
    except DataError:
        raise
    except Exception as e:  # pandas raises many types for a malformed table
        raise DataError(f"{path}: not a DeepLabCut table ({type(e).__name__}: {e})") from e
    first_ind = cols[0][0]
    parts: list[str] = []
    for ind, bp, _ in cols:
        if ind == first_ind and bp not in parts:
            parts.append(bp)
    col = {(ind, bp, c): i for i, (ind, bp, c) in enumerate(cols)}
    try:
        xy = np.stack([np.stack([body[:, col[(first_ind, bp, "x")]], body[:, col[(first_ind, bp, "y")]]], -1)
                       for bp in parts], 1)
        sc = np.stack([body[:, col[(first_ind, bp, "likelihood")]] for bp in parts], 1)
    except KeyError as e:
        raise DataError(f"{path}: body part {e.args[0][1]!r} lacks coordinate {e.args[0][2]!r}") from e
    return xy, sc, tuple(parts)


def read_keypoints(path: str | Path, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Any supported file (module docstring) -> (points (T, 17, 2) px, scores (T, 17), format name).
    Joints a frame lacks are NaN (score 0)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: keypoint file not found")
    if path.is_dir():
        xy, sc, names = read_openpose_dir(path)
        fmt = f"openpose ({len(names)} joints)"
    elif path.suffix.lower() in (".csv", ".h5", ".hdf5"):
        xy, sc, names = read_dlc(path)
        fmt = "deeplabcut"
    elif path.suffix.lower() in (".npy", ".npz"):
        xy, sc = read_mediapipe(path, image_size)
        names, fmt = MEDIAPIPE33, "mediapipe33"
    elif path.suffix.lower() == ".json":
        data = _load_json(path)
        if isinstance(data, dict) and "people" in data:
            raise DataError(f"{path}: one OpenPose frame; pass the folder of per-frame files")
        if isinstance(data, list) and data and isinstance(data[0], list):
            xy, sc = read_mediapipe(path, image_size)
            names, fmt = MEDIAPIPE33, "mediapipe33"
        else:
            xy, sc = read_coco_json(path, data)
            names, fmt = COCO17_NAMES, "coco17"
    else:
        raise DataError(f"{path}: unknown keypoint format {path.suffix!r} (COCO/MediaPipe .json, OpenPose folder, "
                        "MediaPipe .npy/.npz, DeepLabCut .csv/.h5)")
    if len(xy) == 0:
        raise DataError(f"{path}: no frames")
    sc = np.where(np.isfinite(xy).all(-1), np.nan_to_num(sc), 0.0)
    pts, scores = _to_h36m(xy, sc, names, path)
    return pts.astype(np.float32), scores.astype(np.float32), fmt
