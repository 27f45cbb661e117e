"""Real-mocap lifting data (pose3d.tasks.lifting.realmocap) and ``p3d train-lifter``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from pose3d.app import main as p3d
from pose3d.data.io import DataError, load_cameras, read_mocap
from pose3d.tasks.footage.lift import load_temporal
from pose3d.skeleton import FLIP_PERM, PARENTS
from pose3d.tasks.lifting.realmocap import (h36m_like_rig, mixed_dataset, proportion_copies, real_mocap_sequences,
                                            rescale_bones, scaled_copies)

from test_lifting import _one_thread, studio, synthetic_motion  # noqa: F401  (fixtures)


def write_npz(path, subjects=("a1", "b2"), clips=2, T=20):
    """An npz in the real-mocap layout: millimetres, Z up, clips out of order by frame."""
    rng = np.random.default_rng(1)
    pos, cid, subj, act, fic = [], [], [], [], []
    for s, name in enumerate(subjects):
        for c in range(clips):
            p = synthetic_motion(T, rng) * 1000 + np.array([500.0 * s, -300.0, 0.0], np.float32)
            order = rng.permutation(T)  # rows shuffled: the reader sorts by frame_in_clip
            pos.append(p[order])
            fic.append(order)
            cid += [s * clips + c] * T
            subj += [name] * T
            act += ["walk"] * T
    np.savez(path, positions=np.concatenate(pos).astype(np.float32), clip_id=np.asarray(cid),
             subject=np.asarray(subj), activity=np.asarray(act), frame_in_clip=np.concatenate(fic),
             fps=np.float32(30.0))
    return path


def test_real_mocap_sequences_metres_sorted_centred(tmp_path):
    npz = write_npz(tmp_path / "real.npz")
    seqs = real_mocap_sequences(npz, ["b2"])
    assert [(q.subject, q.split, q.action) for q in seqs] == [
        ("a1", "train", "walk_000"), ("a1", "train", "walk_001"), ("b2", "test", "walk_002"), ("b2", "test", "walk_003")]
    d = np.load(npz)
    rows = np.flatnonzero(d["clip_id"] == 2)
    want = d["positions"][rows][np.argsort(d["frame_in_clip"][rows])] / 1000.0
    want[..., :2] -= want[:, 0, :2].mean(0)
    np.testing.assert_allclose(seqs[2].positions_world, want, atol=1e-6)
    assert seqs[2].fps == 30.0
    with pytest.raises(DataError, match=r"real.npz: subject\(s\) \['zz'\] not in the file"):
        real_mocap_sequences(npz, ["zz"])


def test_mixed_dataset_keeps_studio_cameras_and_names_the_rig_alike(tmp_path, studio):  # noqa: F811
    npz = write_npz(tmp_path / "real.npz")
    mocap, cams = mixed_dataset(tmp_path / "mixed", npz, ["a1"], studio / "mocap.h5", studio / "cameras.json")
    splits = {(q.subject, q.split) for q in read_mocap(mocap)}
    assert splits == {("S1", "train"), ("S5", "train"), ("S9", "test"), ("a1", "test"), ("b2", "train")}
    got, studio_cams = load_cameras(cams), load_cameras(studio / "cameras.json")
    assert sorted(got["a1"]) == sorted(studio_cams["S1"]) == ["c0", "c1"]
    np.testing.assert_array_equal(got["S5"]["c1"].R, studio_cams["S5"]["c1"].R)
    rig = h36m_like_rig(2)
    np.testing.assert_allclose(got["b2"]["c1"].t, rig["cam1"].t)
    assert got["b2"]["c1"].name == "c1"


def test_scaled_copies_scale_train_clips_about_the_floor_and_keep_test_clips(tmp_path):
    seqs = real_mocap_sequences(write_npz(tmp_path / "real.npz"), ["b2"])
    assert scaled_copies(seqs) == seqs  # the default: no copies, the same clips
    out = scaled_copies(seqs, (0.9, 1.0, 1.1))
    assert [(q.subject, q.action, q.split) for q in out] == [
        ("a1", "walk_000_x0.900", "train"), ("a1", "walk_000_x1.000", "train"), ("a1", "walk_000_x1.100", "train"),
        ("a1", "walk_001_x0.900", "train"), ("a1", "walk_001_x1.000", "train"), ("a1", "walk_001_x1.100", "train"),
        ("b2", "walk_002", "test"), ("b2", "walk_003", "test")]
    src = seqs[0].positions_world
    np.testing.assert_array_equal(out[1].positions_world, src)
    np.testing.assert_array_equal(out[2].positions_world, src * np.float32(1.1))
    assert out[0].positions_world.dtype == np.float32 and out[0].fps == 30.0
    # bone lengths scale by the factor; the floor (z = 0) and the clip's centre stay where they were
    bone = lambda p: np.linalg.norm(p[:, 1] - p[:, 0], axis=-1)  # noqa: E731
    np.testing.assert_allclose(bone(out[0].positions_world), 0.9 * bone(src), rtol=1e-6)
    np.testing.assert_allclose(out[0].positions_world[:, 0, :2].mean(0), 0.0, atol=1e-6)
    assert out[6] is seqs[2]
    with pytest.raises(DataError, match=r"real-mocap scales \(0\.9, 3\.0\): need one or more factors in \[0\.5, 2\]"):
        scaled_copies(seqs, (0.9, 3))


def _bones(p):
    return np.stack([np.linalg.norm(p[:, j] - p[:, PARENTS[j]], axis=-1) for j in range(1, 17)], -1)


def test_rescale_bones_scales_each_bone_keeps_directions_root_and_lowest_ankle(tmp_path):
    pos = real_mocap_sequences(write_npz(tmp_path / "real.npz"))[0].positions_world
    f = np.linspace(0.8, 1.2, 17)
    out = rescale_bones(pos, f)
    np.testing.assert_allclose(_bones(out), _bones(pos) * f[1:], rtol=1e-5)
    unit = lambda p: (p[:, 1:] - p[:, list(PARENTS[1:])]) / _bones(p)[..., None]  # noqa: E731
    np.testing.assert_allclose(unit(out), unit(pos), atol=1e-5)
    dz = out[:, 0, 2] - pos[:, 0, 2]  # one vertical shift for the whole clip; x, y of the root kept
    np.testing.assert_allclose(dz, dz[0], atol=1e-6)
    np.testing.assert_array_equal(out[:, 0, :2], pos[:, 0, :2])
    assert out[:, [3, 6], 2].min() == pytest.approx(pos[:, [3, 6], 2].min(), abs=1e-6)
    np.testing.assert_allclose(rescale_bones(pos, np.ones(17)), pos, atol=1e-6)


def _drawn_factors(seed, clip, spread):
    """The documented draw of a clip's first copy, per bone (joints 1..16): g ~ U(1 - spread,
    1 + spread), u ~ U(1 - spread, 1 + spread)^17 with a right bone taking its left mirror's u."""
    rng = np.random.default_rng([seed, clip])
    g, u = rng.uniform(1 - spread, 1 + spread), rng.uniform(1 - spread, 1 + spread, 17)
    return (g * np.where(np.arange(17) <= np.asarray(FLIP_PERM), u, u[list(FLIP_PERM)]))[1:]


def test_proportion_copies_seeded_mirrored_and_train_only(tmp_path):
    seqs = real_mocap_sequences(write_npz(tmp_path / "real.npz"), ["b2"])
    assert proportion_copies(seqs) == seqs
    out = proportion_copies(seqs, 2, spread=0.1, size=0.1, seed=3)
    assert [(q.subject, q.action) for q in out] == [
        ("a1", "walk_000"), ("a1", "walk_000_b0"), ("a1", "walk_000_b1"),
        ("a1", "walk_001"), ("a1", "walk_001_b0"), ("a1", "walk_001_b1"), ("b2", "walk_002"), ("b2", "walk_003")]
    ratio = _bones(out[1].positions_world)[0] / _bones(seqs[0].positions_world)[0]
    np.testing.assert_allclose(ratio, _drawn_factors(3, 0, 0.1), rtol=1e-5)
    mirror = [FLIP_PERM[j] for j in range(1, 17)]
    np.testing.assert_allclose(ratio, ratio[np.asarray(mirror) - 1], rtol=1e-6)  # left = right
    # a clip's copies depend on its own index only; test clips are never copied
    again = proportion_copies(seqs[:1], 2, seed=3)
    np.testing.assert_array_equal(again[2].positions_world, out[2].positions_world)
    assert out[6] is seqs[2] and out[7] is seqs[3]
    with pytest.raises(DataError, match=r"proportion copies -1, spread 0.1, size 0.1: need copies >= 0"):
        proportion_copies(seqs, -1)


def test_mixed_dataset_writes_the_scaled_copies(tmp_path):
    npz = write_npz(tmp_path / "real.npz")
    mocap, _ = mixed_dataset(tmp_path / "mixed", npz, ["b2"], real_scales=(0.95, 1.05))
    got = {(q.subject, q.action, q.split): q.positions_world for q in read_mocap(mocap)}
    assert sorted(got) == [("a1", "walk_000_x0.950", "train"), ("a1", "walk_000_x1.050", "train"),
                           ("a1", "walk_001_x0.950", "train"), ("a1", "walk_001_x1.050", "train"),
                           ("b2", "walk_002", "test"), ("b2", "walk_003", "test")]
    plain = {(q.subject, q.action): q.positions_world for q in real_mocap_sequences(npz, ["b2"])}
    np.testing.assert_allclose(got[("a1", "walk_001_x1.050", "train")], plain[("a1", "walk_001")] * 1.05, rtol=1e-6)
    np.testing.assert_array_equal(got[("b2", "walk_003", "test")], plain[("b2", "walk_003")])


def test_mixed_dataset_bone_copies_draw_from_the_given_spread(tmp_path):
    npz = write_npz(tmp_path / "real.npz")
    mocap, _ = mixed_dataset(tmp_path / "mixed", npz, ["b2"], bone_copies=1, seed=3, bone_spread=0.2)
    got = {(q.subject, q.action): q.positions_world for q in read_mocap(mocap)}
    assert sorted(got) == [("a1", "walk_000"), ("a1", "walk_000_b0"), ("a1", "walk_001"), ("a1", "walk_001_b0"),
                           ("b2", "walk_002"), ("b2", "walk_003")]
    ratio = _bones(got[("a1", "walk_000_b0")])[0] / _bones(got[("a1", "walk_000")])[0]
    np.testing.assert_allclose(ratio, _drawn_factors(3, 0, 0.2), rtol=1e-5)


def test_train_lifter_writes_a_lifter_infer_loads(tmp_path, studio, capsys):  # noqa: F811
    npz = write_npz(tmp_path / "real.npz")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"temporal": {"channels": 16, "traj_channels": 8, "epochs": 1,
                                                   "batch_size": 32, "input_2d": "detections"}}))
    out = tmp_path / "lifter"
    assert p3d(["-q", "train-lifter", "--mocap", str(npz), "--studio", str(studio), "--out", str(out),
                "--params", str(params), "--stride", "2", "--threads", "1", "--bone-spread", "0.15"]) == 0
    assert "temporal lifter; test subjects S9 (GT 2D): P1" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["params"]["input_2d"] == "gt" and cfg["params"]["train_stride"] == 2
    assert cfg["model_kwargs"]["channels"] == 16
    model = load_temporal(out)
    y = model(torch.zeros(1, 9, 17, 2))
    assert y.shape == (1, 9, 17, 3)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.pt"]


def test_train_lifter_bad_npz_names_the_key_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, positions=np.zeros((4, 17, 3), np.float32))
    out = tmp_path / "lifter"
    assert p3d(["train-lifter", "--mocap", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "p3d train-lifter: error:" in err and "bad.npz: missing array(s) ['clip_id'" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_train_lifter_defaults_are_the_validated_recipe():
    from pose3d.app import build_parser

    args = build_parser().parse_args(["train-lifter", "--mocap", "real.npz", "--out", "lifter"])
    # 8 bone copies at spread 0.15 on every 3rd window, the section's epochs: reports/benchmarks/lifting.md
    assert (args.epochs, args.bone_copies, args.bone_spread, args.stride) == (None, 8, 0.15, 3)
