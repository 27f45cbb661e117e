"""Bad input is refused where it is read: one DataError naming the file and the value, never a
silent conversion, a NaN that travels on, or a raw traceback (issue 21, items 2 and 5)."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import pyarrow as pa
import pytest
import torch

from pose3d.data.contracts import read_detections
from pose3d.data.crops import read_crops
from pose3d.data.io import DataError, Sequence, load_cameras, read_mocap, save_cameras, write_mocap, write_table
from pose3d.geometry.camera import Camera
from pose3d.runtime.train import load_state

K = [[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]


def _cam(name, **kw):
    d = dict(K=K, dist=np.zeros(5), R=np.eye(3), t=[0.0, 0.0, 4.0], width=640, height=480, name=name)
    d.update(kw)
    return Camera(**d)


def test_a_nan_joint_in_mocap_names_sequence_frame_and_joint(tmp_path):
    pos = np.zeros((5, 17, 3), np.float32)
    pos[3, 7] = np.nan
    write_mocap(tmp_path / "mocap.h5", [Sequence("S1", "Walking", pos, 25.0, "train")])
    with pytest.raises(DataError, match=r"mocap.h5: S1/Walking: .* frame 3, joint spine"):
        read_mocap(tmp_path / "mocap.h5")


def test_a_file_that_is_not_hdf5_is_named(tmp_path):
    (tmp_path / "mocap.h5").write_text("not hdf5")
    with pytest.raises(DataError, match="mocap.h5: not a readable HDF5 file"):
        read_mocap(tmp_path / "mocap.h5")


def test_a_truncated_crops_file_is_named(tmp_path):
    with h5py.File(tmp_path / "crops.h5", "w") as f:
        f.create_dataset("crops", data=np.zeros((64, 32, 32, 3), np.uint8), chunks=(8, 32, 32, 3),
                         compression="gzip")
    data = (tmp_path / "crops.h5").read_bytes()
    (tmp_path / "crops.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="crops.h5"):
        read_crops(tmp_path / "crops.h5", np.arange(64))


@pytest.mark.parametrize("change, message", [
    (lambda d: d["subjects"]["S1"]["c0"]["K"][0].__setitem__(0, 0.0), "S1/c0: .*fx = 0"),
    (lambda d: d["subjects"]["S5"].pop("c1"), "subject S5 lacks camera.*c1"),
    (lambda d: d["subjects"]["S1"]["c0"]["K"][1].__setitem__(1, float("nan")), "S1/c0: .*K has non-finite"),
])
def test_bad_cameras_are_refused_with_subject_and_camera(tmp_path, change, message):
    save_cameras(tmp_path / "cameras.json", {s: {"c0": _cam("c0"), "c1": _cam("c1")} for s in ("S1", "S5")})
    d = json.loads((tmp_path / "cameras.json").read_text())
    change(d)
    (tmp_path / "cameras.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match=message):
        load_cameras(tmp_path / "cameras.json")


def _detections(path, keypoints):
    write_table(path, {"subject": ["S1"], "action": ["Walking"], "camera": ["c0"],
                       "frame": np.array([0], np.int64), "keypoints_px": keypoints})


def test_detections_stored_as_strings_are_refused(tmp_path):
    kp = pa.array([[str(v) for v in range(34)]], type=pa.list_(pa.string()))
    _detections(tmp_path / "det.parquet", kp)
    with pytest.raises(DataError, match="det.parquet: column keypoints_px is list<.*string>, expected a list of floats"):
        read_detections(tmp_path / "det.parquet")


def test_detections_with_the_wrong_joint_count_are_refused(tmp_path):
    _detections(tmp_path / "det.parquet", np.zeros((1, 16, 2), np.float32))
    with pytest.raises(DataError, match="det.parquet: keypoints_px / scores do not hold 17 joints"):
        read_detections(tmp_path / "det.parquet")


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


def test_a_model_file_with_code_is_refused_with_its_name(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2), "x": _Evil()}, path)
    with pytest.raises(DataError, match="model.pt: not loadable as plain weights"):
        load_state(path)
    assert "executed" not in capsys.readouterr().out
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DataError, match="junk.pt: not loadable"):
        load_state(tmp_path / "junk.pt")


def test_a_disk_without_room_for_the_crops_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from pose3d.data import crops

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 9 << 20, 1 << 20))
    with pytest.raises(DataError, match=r"crops.h5: needs up to 32 MB, .* has 1 MB free"):
        crops.check_free_space(tmp_path / "crops.h5", 12_000 * 96 * 96 * 3 // 10)
    assert not (tmp_path / "crops.h5").exists()


def test_a_failed_crops_write_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    from pose3d.data import crops

    w = crops.CropWriter(tmp_path / "crops.h5", tmp_path / "crops.parquet", 8)

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    with pytest.raises(DataError, match=r"crops.h5: could not be written .*No space left"):
        with w:
            monkeypatch.setattr(w._ds, "resize", full_disk)
            w.add(np.zeros((3, 8, 8, 3), np.uint8), "S1", "Walking", "c0", np.arange(3), "train",
                  np.zeros((3, 4)), np.zeros((3, 2, 3)), np.zeros((3, 17, 2)))
            w._flush()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
