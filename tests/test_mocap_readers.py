"""Mocap importers: real files against the shared converted npz, bad input, resampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pose3d.data import mocap_readers as mr
from pose3d.data.io import DataError
from pose3d.skeleton import JOINT_INDEX

LEGS_PELVIS = [JOINT_INDEX[n] for n in ("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle")]


@pytest.fixture(scope="module")
def real(shared_data):
    root = shared_data / "real-mocap"
    if not (root / "raw").is_dir():
        pytest.skip("real-mocap/raw not found")
    z = np.load(root / "real_mocap_h36m17.npz", allow_pickle=False)
    clips = {c["name"]: c for c in json.loads((root / "real_mocap_h36m17.json").read_text())["clips"]}
    return root, z, clips


def _clip(z, clips, name):
    c = clips[name]
    m = z["clip_id"] == c["clip_id"]
    return z["positions"][m].astype(np.float64), z["reliable_joint_mask"]


@pytest.mark.parametrize("take", ["kickLFront1Reps_001", "jogLeftCircle4StepsRstart_001"])
def test_hdm05_asf_amc_matches_npz(real, take):
    root, z, clips = real
    sk = mr.read_asf(root / "raw/hdm05/HDM_bd.asf")
    mo = mr.read_amc(root / f"raw/hdm05/HDM_bd_{take}_120.amc", sk, fps=120.0)
    mine = mr.to_h36m17(mo, mr.acclaim_unit_m(sk)) * 1000.0  # mm
    ref, reliable = _clip(z, clips, f"HDM05_bd_{take}")
    got = mine[::4][: len(ref)]  # npz frame k = source frame 4k
    assert got.shape == ref.shape
    err = np.linalg.norm(got - ref, axis=-1)  # (T, 17) mm
    assert err[:, reliable].max() < 1.0
    assert err.max() < 1.0  # HDM05 is exact on all 17 joints


@pytest.mark.parametrize("name,clip", [("01_01", "CMU_01_01"), ("131_01", "CMU_131_01")])
def test_cmu_bvh_legs_pelvis_match_npz(real, name, clip):
    root, z, clips = real
    mo = mr.read_bvh(root / f"raw/cmu/{name}.bvh")
    assert abs(mo.fps - 120.0) < 0.01
    mine = mr.to_h36m17(mo, 0.0254 / 0.45) * 1000.0
    ref, _ = _clip(z, clips, clip)
    got = mine[::4][: len(ref)]
    err = np.linalg.norm(got - ref, axis=-1)
    assert err[:, LEGS_PELVIS].max() < 1.0
    # the upper body differs by the re-inserted thorax segment (JSON notes): a few cm, not 0
    assert err[:, JOINT_INDEX["head_top"]].max() > 10.0


def test_load_takes_folder_and_resample(real, tmp_path):
    root, z, clips = real
    (tmp_path / "bd").mkdir()
    for f in ("HDM_bd.asf", "HDM_bd_kickLFront1Reps_001_120.amc"):
        (tmp_path / "bd" / f).symlink_to(root / "raw/hdm05" / f)
    takes = mr.load_takes(tmp_path, subjects=["bd"])
    assert [t.action for t in takes] == ["HDM_bd_kickLFront1Reps_001_120"]
    t = takes[0]
    res = mr.resample(t.positions, t.fps, 30.0)
    ref, _ = _clip(z, clips, "HDM05_bd_kickLFront1Reps_001")
    assert np.abs(res[: len(ref)] * 1000 - ref).max() < 1.0
    with pytest.raises(DataError, match="no takes for subject"):
        mr.load_takes(tmp_path, subjects=["bd", "nobody"])


def test_npz_takes(real_mocap_npz):
    takes = mr.read_npz_takes(real_mocap_npz, subjects=["hdm05_bd"])
    assert takes and all(t.subject == "hdm05_bd" and t.fps == 30.0 for t in takes)
    assert all(t.positions.shape[1:] == (17, 3) for t in takes)
    # metres: a standing person's pelvis is around 1 m high, not 1000
    assert 0.5 < np.median(takes[0].positions[:, 0, 2]) < 1.5


# --------------------------------------------------------------------------- synthetic files
BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  JOINT Thigh
  {
    OFFSET 1 0 0
    CHANNELS 3 Zrotation Yrotation Xrotation
    End Site
    {
      OFFSET 0 -2 0
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.5
0 10 0 0 0 0 0 0 0
0 10 0 90 0 0 0 0 0
"""


def test_bvh_fk_hand_computed(tmp_path):
    p = tmp_path / "tiny.bvh"
    p.write_text(BVH)
    mo = mr.read_bvh(p)
    assert mo.names == ("Hips", "Thigh", "Thigh_end")
    assert mo.fps == 2.0
    np.testing.assert_allclose(mo.positions[0], [[0, 10, 0], [1, 10, 0], [1, 8, 0]], atol=1e-12)
    # root rotated 90 deg about z: x -> y, -y -> x
    np.testing.assert_allclose(mo.positions[1], [[0, 10, 0], [0, 11, 0], [2, 11, 0]], atol=1e-12)


def test_truncated_bvh(tmp_path):
    p = tmp_path / "cut.bvh"
    p.write_text(BVH.rsplit("\n", 2)[0])  # drop the last frame line
    with pytest.raises(DataError, match=r"cut\.bvh: truncated"):
        mr.read_bvh(p)
    p.write_text(BVH.split("MOTION")[0])
    with pytest.raises(DataError, match=r"cut\.bvh: truncated"):
        mr.read_bvh(p)


def test_unknown_skeleton(tmp_path):
    p = tmp_path / "odd.bvh"
    p.write_text(BVH)
    with pytest.raises(DataError, match=r"odd\.bvh: unknown skeleton: no source joint for r_hip"):
        mr.to_h36m17(mr.read_bvh(p), 0.01)


def test_missing_file_and_bad_fps(tmp_path):
    with pytest.raises(DataError, match=r"nope\.bvh: file not found"):
        mr.read_bvh(tmp_path / "nope.bvh")
    with pytest.raises(DataError, match="file not found"):
        mr.load_takes(tmp_path / "nothing.npz")
    with pytest.raises(ValueError, match="fps must be positive"):
        mr.resample(np.zeros((4, 17, 3)), 0.0, 10.0)
    p = tmp_path / "zero.bvh"
    p.write_text(BVH.replace("Frame Time: 0.5", "Frame Time: 0"))
    with pytest.raises(DataError, match=r"zero\.bvh: Frame Time = 0.0: must be positive"):
        mr.read_bvh(p)


def test_resample_exact_and_linear():
    x = np.arange(9, dtype=float)[:, None, None] * np.ones((1, 17, 3))
    np.testing.assert_allclose(mr.resample(x, 120, 30)[:, 0, 0], [0, 4, 8])
    np.testing.assert_allclose(mr.resample(x, 10, 25)[:, 0, 0], np.arange(21) * 0.4)
