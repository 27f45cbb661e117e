"""The ground-truth view: its three ways in agree with each other and with OpenCV, and unknown
keys are errors naming the file."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from pose3d.data.io import DataError, save_cameras, write_mocap
from pose3d.data.views import GroundTruth
from tests.test_export import studio_like


@pytest.fixture()
def truth(tmp_path):
    seqs, cams = studio_like()
    write_mocap(tmp_path / "mocap.h5", seqs)
    save_cameras(tmp_path / "cameras.json", cams)
    return GroundTruth.load(tmp_path / "mocap.h5", tmp_path / "cameras.json")


def test_sequence_view_matches_opencv_and_the_camera_frame(truth):
    seq = truth.sequence("S1", "walk")
    v = truth.view(seq, "cam1")
    cam = truth.camera("S1", "cam1")
    ref, _ = cv2.projectPoints(seq.positions_world.reshape(-1, 3).astype(np.float64),
                               cv2.Rodrigues(cam.R)[0], cam.t, cam.K, cam.dist)
    np.testing.assert_allclose(v.pixels.reshape(-1, 2), ref.reshape(-1, 2), atol=1e-9)
    np.testing.assert_allclose(v.cam, v.world @ cam.R.T + cam.t, atol=1e-12)
    assert v.world.dtype == v.cam.dtype == v.pixels.dtype == np.float64


def test_multiview_and_rows_agree_with_the_sequence_view(truth):
    mv = truth.multiview("S1")
    assert mv.camera_names == ["cam0", "cam1"]
    assert mv.actions == ["jump"] * 5 + ["walk"] * 7  # file order
    assert mv.frames.tolist() == list(range(5)) + list(range(7))
    assert tuple(mv.pixels.shape) == (12, 2, 17, 2)
    walk = truth.view(truth.sequence("S1", "walk"), "cam1")
    assert np.array_equal(mv.pixels[5:, 1].numpy(), walk.pixels)  # the same projection, bit for bit
    jump = truth.view(truth.sequence("S1", "jump"), "cam0")
    keys = pd.DataFrame({"subject": ["S1", "S9", "S1"], "action": ["jump", "walk", "jump"],
                         "camera": ["cam0", "cam1", "cam0"], "frame": [4, 0, 1]})
    np.testing.assert_array_equal(truth.world(keys)[[0, 2]], jump.world[[4, 1]])
    x_cam = truth.in_cameras(truth.world(keys), keys["subject"], keys["camera"])
    np.testing.assert_allclose(x_cam[0], jump.cam[4], atol=1e-12)
    assert truth.split_of(keys).tolist() == ["train", "test", "train"]
    assert truth.camera_arrays(keys["subject"], keys["camera"])["K"].shape == (3, 3, 3)


def test_load_filters_by_split_and_subject(tmp_path, truth):
    test = GroundTruth.load(tmp_path / "mocap.h5", tmp_path / "cameras.json", split="test")
    assert [(s.subject, s.action) for s in test.sequences] == [("S9", "walk")]
    assert GroundTruth.load(tmp_path / "mocap.h5", tmp_path / "cameras.json", subjects=["S1"]).subjects == ["S1"]
    with pytest.raises(DataError, match=r"mocap.h5: no sequences for subjects \['S7'\]"):
        GroundTruth.load(tmp_path / "mocap.h5", tmp_path / "cameras.json", subjects=["S7"])


def test_unknown_keys_name_the_file(tmp_path, truth):
    with pytest.raises(DataError, match=r"cameras.json: no camera 'cam9' for subject 'S1' \(has \['cam0', 'cam1'\]\)"):
        truth.camera("S1", "cam9")
    with pytest.raises(DataError, match="cameras.json: no cameras for subject 'S5'"):
        truth.cameras_of("S5")
    with pytest.raises(DataError, match="mocap.h5: no sequence S1/run"):
        truth.sequence("S1", "run")
    bad = pd.DataFrame({"subject": ["S1"], "action": ["walk"], "frame": [7]})
    with pytest.raises(DataError, match="preds.parquet: 1 rows have frames outside their sequence"):
        truth.world(bad, "preds.parquet")
    bad = pd.DataFrame({"subject": ["S1"], "action": ["run"], "frame": [0]})
    with pytest.raises(DataError, match=r"preds.parquet: 1 rows name sequences absent .*\['S1/run'\]"):
        truth.world(bad, "preds.parquet")
