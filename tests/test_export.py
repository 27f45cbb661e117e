"""VideoPose3D-compatible export: reads back to the same arrays, and prepares back (layout vp3d)
to the same studio data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pose3d.data import export, h36m
from pose3d.data.contracts import read_detections
from pose3d.data.io import DataError, Sequence, read_mocap, read_table, write_table
from pose3d.data.views import GroundTruth
from pose3d.geometry.camera import Camera, quaternion_to_matrix
from pose3d.skeleton import H36M32_NAMES, JOINT_NAMES, h36m32_indices_of_17

import torch


def studio_like(seed=0):
    """Two subjects, two cameras each ('cam0', 'cam1', shared intrinsics), world poses in metres."""
    rng = np.random.default_rng(seed)
    K = np.array([[900.0, 0, 320], [0, 905, 240], [0, 0, 1]])
    dist = np.array([-0.1, 0.02, 0.001, -0.0005, 0.0])
    cams = {}
    for s in ("S1", "S9"):
        cams[s] = {}
        for k, name in enumerate(("cam0", "cam1")):
            th = 0.3 + k * 1.4
            R = np.array([[np.cos(th), 0, -np.sin(th)], [0, 1, 0], [np.sin(th), 0, np.cos(th)]]) @ \
                np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # z up world -> y down camera, turned
            C = -R.T @ np.array([0.0, 0.0, 4.0])
            cams[s][name] = Camera(K=K, dist=dist, R=R, t=-R @ C, width=640, height=480, name=name)
    seqs = [Sequence(s, a, (rng.normal(0, 0.3, (T, 17, 3)) + [0, 0, 1]).astype(np.float32), 50.0,
                     "test" if s == "S9" else "train")
            for s, a, T in (("S1", "walk", 7), ("S1", "jump", 5), ("S9", "walk", 6))]
    return seqs, cams


def detections_table(path, seqs, cams):
    rng = np.random.default_rng(1)
    cols = {k: [] for k in ("subject", "action", "camera", "frame")}
    kps = []
    for s in seqs:
        for c in cams[s.subject]:
            T = len(s.positions_world)
            cols["subject"] += [s.subject] * T
            cols["action"] += [s.action] * T
            cols["camera"] += [c] * T
            cols["frame"].append(np.arange(T))
            kps.append(rng.uniform(0, 640, (T, 17, 2)))
    kps = np.concatenate(kps).astype(np.float32)
    write_table(path, {"subject": cols["subject"], "action": cols["action"], "camera": cols["camera"],
                       "frame": np.concatenate(cols["frame"]), "keypoints_px": kps,
                       "scores": np.ones(kps.shape[:2], np.float32)}, {"model_hash": "abc"})
    return kps


def test_export_reads_back_same_arrays(tmp_path):
    seqs, cams = studio_like()
    kps = detections_table(tmp_path / "det.parquet", seqs, cams)
    det = read_detections(tmp_path / "det.parquet")
    paths = export.export_vp3d(tmp_path / "out", "studio", GroundTruth(seqs, cams), detections=det, detections_source="resnet")
    assert sorted(p.name for p in paths.values()) == ["data_2d_studio_gt.npz", "data_2d_studio_resnet.npz",
                                                      "data_3d_studio.npz"]
    with pytest.raises(DataError, match="prepare.allow_pickle"):
        export.read_vp3d_export(tmp_path / "out", "studio", allow_pickle=False)
    back = export.read_vp3d_export(tmp_path / "out", "studio", ("gt", "resnet"), allow_pickle=True)
    for s in seqs:
        np.testing.assert_array_equal(back["positions_3d"][s.subject][s.action], s.positions_world)
        for i, c in enumerate(sorted(cams[s.subject])):
            np.testing.assert_allclose(back["2d"]["gt"][0][s.subject][s.action][i],
                                       cams[s.subject][c].project(s.positions_world.astype(np.float64)), atol=1e-3)
    # detections: row order of the table is (sequence, camera, frame)
    np.testing.assert_array_equal(back["2d"]["resnet"][0]["S1"]["jump"][1], kps[14 + 5:14 + 10])
    meta = back["2d"]["gt"][1]
    assert meta["num_joints"] == 17 and meta["camera_names"]["S1"] == ["cam0", "cam1"]
    left, right = meta["keypoints_symmetry"]
    assert [JOINT_NAMES[i] for i in left][:3] == ["l_hip", "l_knee", "l_ankle"]
    assert [JOINT_NAMES[i] for i in right][:3] == ["r_hip", "r_knee", "r_ankle"]
    # cameras in VideoPose3D's form convert back to the same cameras
    c = back["cameras"]["S9"][1]
    R = quaternion_to_matrix(torch.tensor(c["orientation"])).numpy().T
    np.testing.assert_allclose(R, cams["S9"]["cam1"].R, atol=1e-9)
    np.testing.assert_allclose(np.array(c["translation"]) / 1000, cams["S9"]["cam1"].center, atol=1e-9)


def test_export_32_joint_slots(tmp_path):
    seqs, cams = studio_like()
    export.export_vp3d(tmp_path, "studio", GroundTruth(seqs, cams), joints="h36m32", gt_2d=False)
    back = export.read_vp3d_export(tmp_path, "studio", (), allow_pickle=True)
    x = back["positions_3d"]["S1"]["walk"]
    assert x.shape == (7, 32, 3)
    np.testing.assert_array_equal(x[:, h36m32_indices_of_17()], seqs[0].positions_world)
    assert np.isnan(x[:, H36M32_NAMES.index("LeftToeBase")]).all()
    # VideoPose3D's Human36mDataset drops exactly these 15 static joints
    kept = sorted(set(range(32)) - {4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31})
    assert kept == sorted(h36m32_indices_of_17())


def test_export_prepares_back_to_the_same_data(tmp_path):
    """Export -> layout 'vp3d' (with the exported cameras) -> studio layout: same poses, same 2D."""
    seqs, cams = studio_like()
    paths = export.export_vp3d(tmp_path, "studio", GroundTruth(seqs, cams))
    back = export.read_vp3d_export(tmp_path, "studio", allow_pickle=True)
    (tmp_path / "cams.json").write_text(json.dumps(export.vp3d_camera_json(back["cameras"])))
    ds = h36m.load_layout("vp3d", paths["3d"], source_2d=paths["gt"], cameras=tmp_path / "cams.json",
                          allow_pickle=True)
    # the exported camera json carries image sizes: no Human3.6M table needed
    h36m.write_prepared(tmp_path / "prepared", ds)
    got = {(s.subject, s.action): s for s in read_mocap(tmp_path / "prepared" / "mocap.h5")}
    for s in seqs:
        np.testing.assert_allclose(got[(s.subject, s.action)].positions_world, s.positions_world, atol=1e-6)
    det = read_table(tmp_path / "prepared" / "detections_2d.parquet")[0].to_pandas()
    assert len(det) == sum(len(s.positions_world) for s in seqs) * 2


def test_matrix_to_quaternion_round_trip():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(50, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    for qi in q:
        R = quaternion_to_matrix(torch.tensor(qi)).numpy()
        np.testing.assert_allclose(export.matrix_to_quaternion(R), qi, atol=1e-9)
    # 180-degree turns (trace < 0 branch)
    for R in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        qq = export.matrix_to_quaternion(R)
        np.testing.assert_allclose(quaternion_to_matrix(torch.tensor(qq)).numpy(), R, atol=1e-12)


def test_export_rejects_bad_names_and_uncalibrated_cameras(tmp_path):
    seqs, cams = studio_like()
    with pytest.raises(DataError, match="without '/' or '_'"):
        export.export_vp3d(tmp_path, "my_data", GroundTruth(seqs, cams))
    with pytest.raises(DataError, match="cameras.json: no cameras for subject 'S9' of mocap.h5"):
        export.export_vp3d(tmp_path, "studio", GroundTruth(seqs, {"S1": cams["S1"]}))
