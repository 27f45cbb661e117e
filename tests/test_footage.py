"""The footage route (pose3d.tasks.footage, `p3d infer`): exports read back by independent
readers, keypoint import by name, the reference-camera mapping, the command end to end on a tiny
studio with random-weight models, and its bad-input errors. No DAG output is needed."""

from __future__ import annotations

import csv
import json
from importlib.metadata import entry_points
from pathlib import Path

import cv2
import ezc3d
import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from scipy.spatial.transform import Rotation

from pose3d import app
from pose3d.data.io import DataError, load_cameras, read_mocap, save_cameras
from pose3d.data.mocap_readers import read_bvh
from pose3d.geometry.camera import Camera, project_camera
from pose3d.models.pose_resnet import PoseResNet, PoseResNetConfig
from pose3d.models.temporal import TemporalLifter
from pose3d.skeleton import COCO17_NAMES, JOINT_INDEX, JOINT_NAMES, PARENTS, to_coco17
from pose3d.tasks.footage import exports, infer
from pose3d.tasks.footage.keypoints import (MEDIAPIPE33, OPENPOSE_BODY25, canonical_name, derive_missing_joints,
                                            read_keypoints, read_pandas_h5)
from pose3d.tasks.footage.lift import reference_camera, to_reference_pixels, user_intrinsics
from pose3d.tasks.footage.pipeline import match_cameras
from pose3d.runtime.train import save_model

from test_video_crops import H, W, make_studio  # noqa: E402


def rigid_motion(T: int = 12, seed: int = 0) -> np.ndarray:
    """(T, 17, 3) metres: a skeleton with constant bones (and rigid pelvis / shoulder triangles)
    moved by random joint rotations, built by its own forward kinematics."""
    rng = np.random.default_rng(seed)
    rest = rng.normal(size=(17, 3)) * 0.15
    G = np.zeros((T, 17, 3, 3))
    X = np.zeros((T, 17, 3))
    for j, p in enumerate(PARENTS):
        R = Rotation.from_rotvec(rng.normal(size=(T, 3)) * 0.4).as_matrix()
        if p < 0:
            G[:, j], X[:, j] = R, rng.normal(size=(T, 3))
        else:
            G[:, j] = G[:, p] @ R
            X[:, j] = X[:, p] + np.einsum("tij,j->ti", G[:, p], rest[j])
    return X


# --------------------------------------------------------------------------- exports
def test_bvh_forward_kinematics_reproduces_the_joints(tmp_path):
    X = rigid_motion()
    exports.write_bvh(tmp_path / "a.bvh", X, fps=25.0)
    m = read_bvh(tmp_path / "a.bvh")  # the studio's BVH reader: its own parser and FK
    assert m.fps == pytest.approx(25.0, rel=1e-6)
    got = m.positions[:, [m.names.index(n) for n in JOINT_NAMES]] / 100.0  # cm -> m
    assert np.abs(got - X).max() < 1e-3
    # rest offsets have the median bone lengths
    off = exports.rest_offsets(X)
    bones = np.linalg.norm(X[:, 1:] - X[:, [p for p in PARENTS[1:]]], axis=-1)
    np.testing.assert_allclose(np.linalg.norm(off[1:], axis=-1), np.median(bones, 0), atol=1e-9)


def test_trc_c3d_npz_round_trip(tmp_path):
    X = rigid_motion(T=7)
    X[3, JOINT_INDEX["l_wrist"]] = np.nan
    exports.write_trc(tmp_path / "a.trc", X, fps=30.0)
    rows = list(csv.reader((tmp_path / "a.trc").open(), delimiter="\t"))
    assert rows[2][:5] == ["30", "30", "7", "17", "m"]
    assert [n for n in rows[3][2:] if n] == list(JOINT_NAMES)
    data = np.array([[float(v) if v else np.nan for v in r[2:2 + 51]] for r in rows[6:]]).reshape(7, 17, 3)
    np.testing.assert_allclose(data, X, atol=1e-3)
    assert np.isnan(data[3, JOINT_INDEX["l_wrist"]]).all()

    exports.write_c3d(tmp_path / "a.c3d", X, fps=30.0)
    c = ezc3d.c3d(str(tmp_path / "a.c3d"))  # an independent (C++) reader
    assert c["parameters"]["POINT"]["LABELS"]["value"] == list(JOINT_NAMES)
    assert c["parameters"]["POINT"]["UNITS"]["value"][0].strip() == "mm"
    assert c["parameters"]["POINT"]["RATE"]["value"][0] == pytest.approx(30.0)
    pts = c["data"]["points"][:3].transpose(2, 1, 0) / 1000.0  # (4, J, T) mm -> (T, J, 3) m
    ok = np.isfinite(X).all(-1)
    np.testing.assert_allclose(pts[ok], X[ok], atol=1e-3)
    assert np.isnan(pts[3, JOINT_INDEX["l_wrist"]]).all()  # residual -1: ezc3d reads an invalid point as NaN

    uv = np.random.default_rng(0).uniform(0, 100, (2, 7, 17, 2))
    exports.write_vp3d_npz(tmp_path / "a.npz", X, uv, 30.0, "world", [(100, 80), (100, 80)], ["a", "b"])
    z = np.load(tmp_path / "a.npz", allow_pickle=False)
    np.testing.assert_allclose(z["positions_3d"], X, atol=1e-6, equal_nan=True)
    assert z["positions_2d"].shape == (2, 7, 17, 2) and list(z["joint_names"]) == list(JOINT_NAMES)
    left, right = z["keypoints_symmetry"]
    assert [JOINT_NAMES[i] for i in left] == [n.replace("r_", "l_") for n in (JOINT_NAMES[i] for i in right)]


def test_y_up_rotation_is_proper_and_points_the_head_up():
    X = rigid_motion(T=3)
    X[..., 2] += np.where(np.arange(17) == JOINT_INDEX["head_top"], 5.0, 0.0)[None]  # head far along +z
    R = exports.y_up_rotation(X)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R @ [0, 0, 1.0], [0, 1.0, 0], atol=1e-12)
    cam = np.zeros((1, 17, 3))
    cam[0, JOINT_INDEX["head_top"], 1] = -1.0  # camera frame: y down
    np.testing.assert_allclose(exports.y_up_rotation(cam) @ [0, -1.0, 0], [0, 1.0, 0], atol=1e-12)


# --------------------------------------------------------------------------- keypoint import
def test_canonical_names():
    for n in ("LeftShoulder", "left_shoulder", "shoulder_left", "L.Shoulder", "lshoulder", "l_shoulder"):
        assert canonical_name(n) == "l_shoulder", n
    assert canonical_name("RightAnkle") == "r_ankle" and canonical_name("Nose") == "nose"


def _pose_2d(T=5):
    rng = np.random.default_rng(1)
    return rng.uniform(50, 400, (T, 17, 2))


def test_derived_joints_in_one_place():
    h = _pose_2d()
    p = h.copy()
    for n in ("pelvis", "thorax", "spine", "neck_nose", "head_top"):
        p[:, JOINT_INDEX[n]] = np.nan
    s = np.ones((5, 17))
    th = (h[:, JOINT_INDEX["l_shoulder"]] + h[:, JOINT_INDEX["r_shoulder"]]) / 2
    ears = np.concatenate([th + [0, -40], np.ones((5, 1))], 1)
    out, sc = derive_missing_joints(p, s, {"l_ear": ears, "r_ear": ears})
    np.testing.assert_allclose(out[:, 0], (h[:, JOINT_INDEX["l_hip"]] + h[:, JOINT_INDEX["r_hip"]]) / 2)
    np.testing.assert_allclose(out[:, JOINT_INDEX["thorax"]], th)
    np.testing.assert_allclose(out[:, JOINT_INDEX["spine"]], (out[:, 0] + th) / 2)
    np.testing.assert_allclose(out[:, JOINT_INDEX["head_top"]], th + [0, -60])  # mid-ears + half of thorax->ears
    np.testing.assert_allclose(out[:, JOINT_INDEX["neck_nose"]], th + [0, -40])


def test_read_every_keypoint_format(tmp_path):
    h = _pose_2d()
    coco = to_coco17(h)  # eyes/ears NaN
    coco[:, [1, 2, 3, 4]] = h[:, [JOINT_INDEX["head_top"]]]
    mm = {"meta_info": {}, "instance_info": [
        {"frame_id": t, "instances": [{"keypoints": coco[t].tolist(), "keypoint_scores": [0.9] * 17}]}
        for t in range(5)]}
    (tmp_path / "mm.json").write_text(json.dumps(mm))
    pts, sc, fmt = read_keypoints(tmp_path / "mm.json")
    assert fmt == "coco17" and pts.shape == (5, 17, 2)
    for n in ("l_wrist", "r_ankle", "l_hip"):
        np.testing.assert_allclose(pts[:, JOINT_INDEX[n]], h[:, JOINT_INDEX[n]], atol=1e-4)
    np.testing.assert_allclose(pts[:, JOINT_INDEX["neck_nose"]], h[:, JOINT_INDEX["neck_nose"]], atol=1e-4)

    results = [{"image_id": t, "category_id": 1, "keypoints": np.concatenate([coco[t], np.ones((17, 1))], 1).ravel().tolist(),
                "score": 0.8} for t in range(5)]
    (tmp_path / "res.json").write_text(json.dumps(results))
    np.testing.assert_allclose(read_keypoints(tmp_path / "res.json")[0], pts, atol=1e-4)

    op = tmp_path / "openpose"
    op.mkdir()
    name_pos = {n: i for i, n in enumerate(OPENPOSE_BODY25)}
    for t in range(5):
        a = np.zeros((25, 3))
        for n in ("r_shoulder", "l_shoulder", "r_elbow", "l_elbow", "r_wrist", "l_wrist", "r_hip", "l_hip", "r_knee",
                  "l_knee", "r_ankle", "l_ankle"):
            a[name_pos[n]] = [*h[t, JOINT_INDEX[n]], 0.9]
        a[name_pos["mid_hip"]] = [*h[t, 0], 0.9]
        a[name_pos["neck"]] = [*h[t, JOINT_INDEX["thorax"]], 0.9]
        a[name_pos["nose"]] = [*h[t, JOINT_INDEX["neck_nose"]], 0.9]
        a[name_pos["l_ear"]] = a[name_pos["r_ear"]] = [*h[t, JOINT_INDEX["head_top"]], 0.9]
        (op / f"clip_{t:012d}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": a.ravel().tolist()}]}))
    p2, _, fmt = read_keypoints(op)
    assert fmt.startswith("openpose")
    np.testing.assert_allclose(p2[:, 0], h[:, 0], atol=1e-4)  # OpenPose's MidHip is the pelvis
    np.testing.assert_allclose(p2[:, JOINT_INDEX["thorax"]], h[:, JOINT_INDEX["thorax"]], atol=1e-4)

    mp = np.zeros((5, 33, 4))
    for k, n in enumerate(MEDIAPIPE33):
        if n in JOINT_INDEX:
            mp[:, k, :2] = h[:, JOINT_INDEX[n]] / [640, 480]
        mp[:, k, 3] = 0.7
    mp[:, MEDIAPIPE33.index("nose"), :2] = h[:, JOINT_INDEX["neck_nose"]] / [640, 480]
    np.save(tmp_path / "mp.npy", mp)
    with pytest.raises(DataError, match="mp.npy.*image"):
        read_keypoints(tmp_path / "mp.npy")
    p3, s3, fmt = read_keypoints(tmp_path / "mp.npy", image_size=(640, 480))
    assert fmt == "mediapipe33"
    np.testing.assert_allclose(p3[:, JOINT_INDEX["r_knee"]], h[:, JOINT_INDEX["r_knee"]], atol=1e-3)
    assert s3[0, JOINT_INDEX["r_knee"]] == pytest.approx(0.7)

    parts = ["LeftShoulder", "RightShoulder", "LeftElbow", "RightElbow", "LeftWrist", "RightWrist", "LeftHip", "RightHip",
             "LeftKnee", "RightKnee", "LeftAnkle", "RightAnkle", "Nose", "LeftEar", "RightEar"]
    h36 = ["l_shoulder", "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee",
           "l_ankle", "r_ankle", "neck_nose", "head_top", "head_top"]
    with (tmp_path / "dlc.csv").open("w") as f:
        f.write("scorer," + ",".join(["DLC_resnet50"] * 3 * len(parts)) + "\n")
        f.write("bodyparts," + ",".join(p for p in parts for _ in range(3)) + "\n")
        f.write("coords," + ",".join(["x", "y", "likelihood"] * len(parts)) + "\n")
        for t in range(5):
            f.write(f"{t}," + ",".join(f"{h[t, JOINT_INDEX[n], 0]},{h[t, JOINT_INDEX[n], 1]},0.95" for n in h36) + "\n")
    p4, s4, fmt = read_keypoints(tmp_path / "dlc.csv")
    assert fmt == "deeplabcut"
    np.testing.assert_allclose(p4[:, JOINT_INDEX["l_elbow"]], h[:, JOINT_INDEX["l_elbow"]], atol=1e-4)
    assert s4[2, JOINT_INDEX["l_elbow"]] == pytest.approx(0.95)


def write_pandas_table_h5(path, labels, names, values, key="df_with_missing", extra_attrs=None):
    """The HDF5 layout of ``DataFrame.to_hdf(path, key=key, format="table")`` (what DeepLabCut
    writes; PyTables stores the column labels as protocol-0 pickles of plain lists), via h5py."""
    import pickle

    with h5py.File(path, "w") as f:
        g = f.create_group(key)
        attrs = {"pandas_type": b"frame_table", "table_type": b"appendable_frame", "values_cols": ["values_block_0"],
                 "non_index_axes": [(1, [tuple(c) for c in labels])],
                 "info": {1: {"names": list(names), "type": "MultiIndex"}, "index": {}, "values_block_0": {}},
                 **(extra_attrs or {})}
        for k, v in attrs.items():
            g.attrs[k] = np.bytes_(v if isinstance(v, bytes) else pickle.dumps(v, protocol=0))
        rows = np.zeros(len(values), [("index", "<i8"), ("values_block_0", "<f8", (len(labels),))])
        rows["index"] = np.arange(len(values))
        rows["values_block_0"] = values
        g.create_dataset("table", data=rows)


def test_deeplabcut_h5_without_pytables(tmp_path):
    parts = ["LeftShoulder", "RightShoulder", "LeftElbow", "RightElbow", "LeftWrist", "RightWrist", "LeftHip",
             "RightHip", "LeftKnee", "RightKnee", "LeftAnkle", "RightAnkle", "Nose", "LeftEar", "RightEar"]
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 500, (6, 2, len(parts), 2))  # frames, individuals, parts, xy
    lik = rng.uniform(0.5, 1, (6, 2, len(parts), 1))
    values = np.concatenate([xy, lik], -1).reshape(6, -1)
    values[2, 3 * parts.index("LeftElbow"):3 * parts.index("LeftElbow") + 2] = np.nan  # DLC's missing value
    labels = [("DLC_x", ind, bp, c) for ind in ("mouse1", "mouse2") for bp in parts for c in ("x", "y", "likelihood")]
    write_pandas_table_h5(tmp_path / "dlc.h5", labels, ["scorer", "individuals", "bodyparts", "coords"], values)
    pts, sc, fmt = read_keypoints(tmp_path / "dlc.h5")
    assert fmt == "deeplabcut" and pts.shape == (6, 17, 2)
    le = JOINT_INDEX["l_elbow"]
    np.testing.assert_allclose(pts[[0, 1, 3, 4, 5], le], xy[[0, 1, 3, 4, 5], 0, parts.index("LeftElbow")], atol=1e-4)
    assert np.isnan(pts[2, le]).all() and sc[2, le] == 0  # the first individual, its NaN kept missing
    assert sc[4, JOINT_INDEX["r_knee"]] == pytest.approx(lik[4, 0, parts.index("RightKnee"), 0])
    # the same table through the CSV reader gives the same 2D
    with (tmp_path / "dlc.csv").open("w") as f:
        for i, name in enumerate(("scorer", "individuals", "bodyparts", "coords")):
            f.write(name + "," + ",".join(c[i] for c in labels) + "\n")
        for t in range(6):
            f.write(f"{t}," + ",".join("" if np.isnan(v) else repr(float(v)) for v in values[t]) + "\n")
    p2, s2, _ = read_keypoints(tmp_path / "dlc.csv")
    np.testing.assert_array_equal(p2, pts)
    np.testing.assert_array_equal(s2, sc)
    # metadata that would run code when unpickled is refused, not executed
    write_pandas_table_h5(tmp_path / "evil.h5", labels, ["scorer", "individuals", "bodyparts", "coords"], values,
                          extra_attrs={"non_index_axes": b"cos\nsystem\n(S'true'\ntR."})
    with pytest.raises(DataError, match=r"evil\.h5: /df_with_missing attribute 'non_index_axes' is not plain data "
                                        r"\(refused: os\.system\)"):
        read_keypoints(tmp_path / "evil.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("a"), f.create_group("b")
    with pytest.raises(DataError, match=r"empty\.h5: no DataFrame key 'df_with_missing' and not exactly one group"):
        read_keypoints(tmp_path / "empty.h5")


def test_deeplabcut_h5_written_by_pandas(tmp_path):
    import pandas as pd
    cols = pd.MultiIndex.from_product([["DLC_x"], ["LeftKnee", "RightKnee", "Nose"], ["x", "y", "likelihood"]],
                                      names=["scorer", "bodyparts", "coords"])
    df = pd.DataFrame(np.arange(36, dtype=float).reshape(4, 9), columns=cols)
    for fmt in ("table", "fixed"):
        try:  # the real writer, where a PyTables that pandas accepts is installed
            df.to_hdf(tmp_path / f"{fmt}.h5", key="df_with_missing", format=fmt, mode="w")
        except ImportError as e:
            pytest.skip(f"pandas cannot write HDF5 here: {e}")
        body, labels, names = read_pandas_h5(tmp_path / f"{fmt}.h5")
        np.testing.assert_array_equal(body, df.to_numpy())
        assert labels == list(df.columns) and names == ["scorer", "bodyparts", "coords"]


def test_keypoint_files_of_the_wrong_kind(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"instance_info": [{"frame_id": 0, "instances": [
        {"keypoints": [[1, 2]] * 25, "keypoint_scores": [1] * 25}]}]}))
    with pytest.raises(DataError, match=r"bad\.json.*expected 17 joints"):
        read_keypoints(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(DataError, match=r"other\.json.*neither"):
        read_keypoints(tmp_path / "other.json")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(DataError, match=r"x\.txt.*unknown keypoint format"):
        read_keypoints(tmp_path / "x.txt")
    np.save(tmp_path / "mp.npy", np.zeros((3, 21, 4)))
    with pytest.raises(DataError, match=r"mp\.npy.*\(T, 33"):
        read_keypoints(tmp_path / "mp.npy", image_size=(10, 10))
    (tmp_path / "dlc.csv").write_text("scorer,a,a,a\nbodyparts,tail,tail,tail\ncoords,x,y,likelihood\n0,1,2,0.9\n")
    with pytest.raises(DataError, match=r"dlc\.csv.*give no"):
        read_keypoints(tmp_path / "dlc.csv")


# --------------------------------------------------------------------------- the reference camera
def test_user_rays_reach_the_reference_camera():
    K_ref, dist_ref, _, _ = reference_camera()
    K = user_intrinsics(1920, 1080, 1500.0)
    X = torch.tensor([[0.3, -0.5, 4.0], [-0.2, 0.4, 3.0]], dtype=torch.float64)[None]  # (1, 2, 3)
    uv = project_camera(X, torch.as_tensor(K), None).numpy()
    want = project_camera(X, torch.as_tensor(K_ref), torch.as_tensor(dist_ref)).numpy()
    np.testing.assert_allclose(to_reference_pixels(uv, K, None), want, atol=1e-6)
    assert user_intrinsics(640, 480, None)[0, 0] == pytest.approx(1.2 * 640)


# --------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A tiny studio (2 cameras, 6 frames, 160 x 120) and random-weight models of the right kinds."""
    root = tmp_path_factory.mktemp("footage")
    studio = make_studio(root / "studio", subjects=(("S9", "test"),), frames=6)
    torch.manual_seed(0)
    cfg = PoseResNetConfig(depth=18, num_joints=17, deconv_channels=16, num_deconv=3)
    save_model(root / "pose2d", PoseResNet(cfg), {**cfg.to_dict(), "input_size": 64, "sigma": 1.5,
                                                  "architecture": "pose_resnet"})
    kw = {"filter_widths": [3], "causal": False, "dropout": 0.0, "channels": 16, "traj_channels": 8}
    lifter = TemporalLifter(filter_widths=(3,), dropout=0.0, channels=16, traj_channels=8)
    save_model(root / "temporal", lifter, {"model": "temporal", "model_kwargs": kw})
    return {"root": root, "studio": studio, "pose2d": root / "pose2d", "lifter": root / "temporal"}


def test_console_script_is_declared():
    eps = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert eps.get("p3d") == "pose3d.app:main"


def test_infer_one_camera(tiny, tmp_path):
    video = tiny["studio"] / "videos" / "S9" / "Walking.cam0.mp4"
    out = tmp_path / "out"
    r = infer([video], out, pose2d_dir=tiny["pose2d"], lifter_dir=tiny["lifter"], device="cpu", progress=False)
    assert r.joints.shape == (6, 17, 3) and r.coord_frame == "camera" and r.points_2d.shape == (1, 6, 17, 2)
    assert np.isfinite(r.joints).all()
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["keypoints_2d.parquet", "poses_3d.parquet", "poses_3d.bvh", "poses_3d.trc", "poses_3d.c3d",
                            "poses_3d_vp3d.npz", "skeleton.mp4", "skeleton.png", "summary.json"])
    t = pq.read_table(out / "poses_3d.parquet")  # pyarrow directly, not the contracts reader
    got = np.asarray(t.column("joints_3d").to_pylist(), np.float32).reshape(6, 17, 3)
    np.testing.assert_allclose(got, r.joints, atol=1e-6)
    meta = json.loads(pq.read_schema(out / "poses_3d.parquet").metadata[b"pose3d"])
    assert meta["coord_frame"] == "camera" and meta["joint_names"] == list(JOINT_NAMES) and meta["fps"] == 25.0
    root = np.asarray(t.column("root_3d").to_pylist())
    np.testing.assert_allclose(root, r.root, atol=1e-6)
    np.testing.assert_allclose(r.joints[:, 0], r.root, atol=1e-5)  # the pelvis rides on the trajectory
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 6 and s["focal_source"] == "assumed" and s["focal_px"] == pytest.approx(1.2 * W)
    cap = cv2.VideoCapture(str(out / "skeleton.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()
    # the BVH reproduces its (bone-length-normalised) input skeleton's structure: 17 joints + end sites
    m = read_bvh(out / "poses_3d.bvh")
    assert all(n in m.names for n in JOINT_NAMES) and m.positions.shape[0] == 6


def test_infer_two_calibrated_videos(tiny, tmp_path):
    """The video route with cameras: 2D per view, boxes re-made from the 3D's reprojection, 2D and
    RANSAC again (random weights: shapes, frame and files only)."""
    vids = [tiny["studio"] / "videos" / "S9" / f"Walking.{c}.mp4" for c in ("cam1", "cam0")]
    r = infer(vids, tmp_path / "out", cameras=tiny["studio"] / "cameras.json", pose2d_dir=tiny["pose2d"],
              score_threshold=0.0, device="cpu", progress=False, video=False, export=["parquet", "bvh"])
    assert r.coord_frame == "world" and r.joints.shape == (6, 17, 3) and r.points_2d.shape == (2, 6, 17, 2)
    assert r.views == ["Walking.cam1", "Walking.cam0"]
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["cameras"] == ["cam1", "cam0"] and 0.0 <= s["ransac_declined_joint_frac"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keypoints_2d.parquet", "poses_3d.bvh",
                                                                   "poses_3d.parquet", "summary.json"]


def test_infer_calibrated_cameras_from_imported_keypoints(tiny, tmp_path):
    """Two calibrated views of COCO keypoints (projections of the studio's mocap) triangulate back
    to the mocap's joints."""
    studio = tiny["studio"]
    cams = load_cameras(studio / "cameras.json")["S9"]
    P = read_mocap(studio / "mocap.h5")[0].positions_world.astype(np.float64)
    files = []
    for c in ("cam0", "cam1"):
        uv = to_coco17(cams[c].project(P))
        uv[:, 1:5] = uv[:, :1]  # eyes, ears at the nose
        d = {"instance_info": [{"frame_id": t, "instances": [{"keypoints": uv[t].tolist(), "keypoint_scores": [1.0] * 17}]}
                               for t in range(len(P))]}
        files.append(tmp_path / f"Walking.{c}.json")
        files[-1].write_text(json.dumps(d))
    r = infer([], tmp_path / "out", keypoints=files, cameras=studio / "cameras.json", image_size=(W, H),
              fps=25, device="cpu", progress=False, video=False)
    assert r.coord_frame == "world" and r.joints.shape == (len(P), 17, 3)
    direct = [JOINT_INDEX[n] for n in COCO17_NAMES if n in JOINT_INDEX and n != "nose"]
    np.testing.assert_allclose(r.joints[:, direct], P[:, direct], atol=1e-3)
    assert not (tmp_path / "out" / "skeleton.mp4").exists()


def test_cameras_must_match_the_views(tiny, tmp_path):
    studio = tiny["studio"]
    cams = load_cameras(studio / "cameras.json")
    three = {"S9": {**cams["S9"], "cam2": Camera(K=cams["S9"]["cam0"].K, dist=np.zeros(5), R=np.eye(3), t=np.zeros(3),
                                                 width=W, height=H, name="cam2")}}
    save_cameras(tmp_path / "three.json", three)
    with pytest.raises(DataError, match=r"three\.json: 3 cameras .* 2 views"):
        match_cameras(tmp_path / "three.json", ["a.mp4", "b.mp4"])
    # by name when every camera name is in one file name, whatever the order
    got = match_cameras(studio / "cameras.json", ["x/Walking.cam1.mp4", "x/Walking.cam0.mp4"])
    assert [c.name for c in got] == ["cam1", "cam0"]


def _run(argv) -> int:
    return app.main(argv)


def test_bad_inputs_exit_1_and_write_nothing(tiny, tmp_path, capsys):
    vids = tiny["studio"] / "videos" / "S9"
    models = ["--pose2d", str(tiny["pose2d"]), "--lifter", str(tiny["lifter"]), "--device", "cpu", "-q"]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    out = tmp_path / "out"
    assert _run(["-q", "infer", str(bad), "--out", str(out), *models[:-1]]) == 1
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "p3d infer: error:" in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))

    (tmp_path / "k.json").write_text(json.dumps([{"image_id": 0, "keypoints": [1, 2, 1] * 18}]))
    assert _run(["-q", "infer", "--keypoints", str(tmp_path / "k.json"), "--image-size", "10", "10", "--out", str(out),
                 *models[:-1]]) == 1
    assert "k.json" in capsys.readouterr().err and not out.exists()

    three = tmp_path / "cams.json"
    cams = load_cameras(tiny["studio"] / "cameras.json")["S9"]
    save_cameras(three, {"S9": {"a": cams["cam0"], "b": cams["cam1"], "c": cams["cam1"]}})
    assert _run(["-q", "infer", str(vids / "Walking.cam0.mp4"), str(vids / "Walking.cam1.mp4"), "--cameras", str(three),
                 "--out", str(out), *models[:-1]]) == 1
    assert "cams.json: 3 cameras" in capsys.readouterr().err and not out.exists()

    assert _run(["-q", "infer", str(vids / "Walking.cam0.mp4"), str(vids / "Walking.cam1.mp4"), "--out", str(out),
                 *models[:-1]]) == 1
    assert "need calibrated cameras" in capsys.readouterr().err and not out.exists()
