"""Procedural motion: constant bones, anatomical limits, feet on the floor, smoothness, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from pose3d.data.io import write_mocap
from pose3d.data.studio import anthropometry as A
from pose3d.data.studio import dataset
from pose3d.data.studio import motion as M
from pose3d.skeleton import JOINT_INDEX as J
from pose3d.skeleton import PARENTS

ACTIONS = list(M.ACTIONS)
STANDING = [a for a in ACTIONS if a not in M.WALKING_ACTIONS]


@pytest.fixture(scope="module")
def subject():
    return A.make_subject("S9", 0)


@pytest.fixture(scope="module")
def motions(subject):
    return {a: M.generate(subject, a, 4.0, 25.0, 0) for a in ACTIONS}


def _angle_deg(a, b, c):
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
    return np.rad2deg(np.arccos(np.clip(cos, -1, 1)))


def test_at_least_ten_distinct_actions(motions):
    assert len(motions) >= 10
    # kinematically distinct: root-relative poses differ between every pair of actions
    rel = {a: (m.positions - m.positions[:, :1]).reshape(len(m.positions), -1) for a, m in motions.items()}
    names = list(rel)
    for i in range(len(names)):
        for k in range(i + 1, len(names)):
            d = np.abs(rel[names[i]].mean(0) - rel[names[k]].mean(0)).max() + \
                np.abs(rel[names[i]].std(0) - rel[names[k]].std(0)).max()
            assert d > 0.02, (names[i], names[k])


def test_bone_lengths_constant(motions, subject):
    ref = A.bone_lengths_of(subject)[1:]
    for a, m in motions.items():
        p = m.positions.astype(np.float32).astype(np.float64)  # as stored in mocap.h5
        bl = np.linalg.norm(p[:, 1:] - p[:, list(PARENTS[1:])], axis=-1)
        assert np.abs(bl - ref).max() < 1e-6, a


def test_joint_angles_within_limits(motions):
    for a, m in motions.items():
        for jn, lims in M.LIMITS.items():
            for dof, (lo, hi) in enumerate(lims):
                v = m.angles[:, J[jn], dof]
                assert v.min() >= lo - 1e-6 and v.max() <= hi + 1e-6, (a, jn, dof, v.min(), v.max())
        p = m.positions
        for s in ("l", "r"):  # geometric check: knee and elbow flexion from the positions
            knee = 180 - _angle_deg(p[:, J[f"{s}_hip"]], p[:, J[f"{s}_knee"]], p[:, J[f"{s}_ankle"]])
            elbow = 180 - _angle_deg(p[:, J[f"{s}_shoulder"]], p[:, J[f"{s}_elbow"]], p[:, J[f"{s}_wrist"]])
            assert knee.min() > -1e-3 and knee.max() < 150 + 1e-3, a
            assert elbow.min() > -1e-3 and elbow.max() < 150 + 1e-3, a


def test_standing_feet_planted(motions, subject):
    """Standing/sitting actions: between its footsteps an ankle moves < 0.1 mm and sits at
    ankle height; during a step it lifts and lands elsewhere. Some actions do step."""
    n_steps = 0
    for a in STANDING:
        m = motions[a]
        p = m.positions
        for k, s in enumerate(("l", "r")):
            ank = p[:, J[f"{s}_ankle"]]
            planted = m.stance[:, k] >= 0.5
            edges = np.flatnonzero(np.diff(planted.astype(int))) + 1
            for seg in np.split(np.arange(len(planted)), edges):
                if planted[seg[0]]:
                    assert np.ptp(ank[seg], axis=0).max() < 1e-4, (a, s)
                    assert np.abs(ank[seg, 2] - subject.ankle_height).max() < 1e-6, (a, s)
                else:
                    n_steps += 1
                    assert ank[seg, 2].max() > subject.ankle_height + 0.01, (a, s)
    assert n_steps >= 5


def test_walking_stance_sliding_and_floor(motions, subject):
    """Walking: while a foot bears most of the weight its ankle moves < 2 cm (stated bound) in
    x-y over the whole stance phase; no ankle sinks more than 2 cm below its standing height."""
    for a in M.WALKING_ACTIONS:
        m = motions[a]
        p = m.positions
        for k, s in enumerate(("l", "r")):
            ank = p[:, J[f"{s}_ankle"]]
            assert ank[:, 2].min() > subject.ankle_height - 0.02, a
            st = m.stance[:, k] > 0.5
            edges = np.flatnonzero(np.diff(st.astype(int))) + 1
            n_phases = 0
            for seg in np.split(np.arange(len(st)), edges):
                if st[seg[0]] and len(seg) > 2:
                    assert np.ptp(ank[seg, :2], axis=0).max() < 0.02, (a, s)
                    n_phases += 1
            assert n_phases >= 2
        # root translation and turning
        root = p[:, 0, :2]
        assert np.linalg.norm(np.diff(root, axis=0), axis=-1).sum() > 2.0
        hips = p[:, J["l_hip"], :2] - p[:, J["r_hip"], :2]
        heading = np.unwrap(np.arctan2(hips[:, 1], hips[:, 0]))
        assert abs(heading[-1] - heading[0]) > np.deg2rad(45)


def test_sitting_lowers_pelvis(motions):
    stand = motions["Waiting"].positions[:, 0, 2].mean()
    assert motions["Sitting"].positions[:, 0, 2].max() < 0.65 * stand
    sd = motions["SittingDown"].positions[:, 0, 2]
    assert sd.max() > 0.9 * stand and sd.min() < 0.65 * stand


@pytest.mark.parametrize("action", ["Walking", "Greeting", "SittingDown"])
def test_velocities_continuous(subject, action):
    """A velocity jump makes the finite-difference acceleration grow as 1/dt; smooth motion
    converges. Peak acceleration at 200 fps stays within 30 % of that at 100 fps."""
    amax = []
    for fps in (100.0, 200.0):
        # same seconds and seed -> the same curves sampled finer
        p = M.generate(subject, action, 3.0, fps, 0).positions
        acc = np.diff(p, 2, axis=0) * fps * fps
        amax.append(np.linalg.norm(acc, axis=-1).max())
    assert amax[1] < 1.3 * amax[0]


def test_subjects_vary_and_are_reproducible():
    subs = [A.make_subject(s, 0) for s in ("S1", "S5", "S6", "S7", "S8", "S9", "S11")]
    statures = [s.stature for s in subs]
    assert all(1.5 <= h <= 1.95 for h in statures)
    assert np.ptp(statures) > 0.05
    assert len({s.colors["shirt"] for s in subs}) == len(subs)
    assert A.make_subject("S1", 0) == A.make_subject("S1", 0)
    assert A.make_subject("S1", 0) != A.make_subject("S1", 1)
    m1 = M.generate(subs[0], "Walking", 1.0, 10, 0).positions
    m2 = M.generate(subs[0], "Walking", 1.0, 10, 0).positions
    m3 = M.generate(subs[0], "Walking", 1.0, 10, 1).positions
    assert np.array_equal(m1, m2) and not np.allclose(m1, m3)


def test_mocap_h5_deterministic_bytes(tmp_path):
    subs = {"S1": "train", "S9": "test"}
    for k in range(2):
        takes = dataset.procedural_sequences(subs, ["Walking", "Eating"], 1.0, 10.0, 0)
        write_mocap(tmp_path / f"m{k}.h5", [t.sequence for t in takes])
    assert (tmp_path / "m0.h5").read_bytes() == (tmp_path / "m1.h5").read_bytes()
    takes = dataset.procedural_sequences(subs, ["Walking"], 1.0, 10.0, 1)
    write_mocap(tmp_path / "m2.h5", [t.sequence for t in takes])
    assert (tmp_path / "m2.h5").read_bytes() != (tmp_path / "m0.h5").read_bytes()


def test_bad_fps():
    with pytest.raises(ValueError, match="fps"):
        M.generate(A.make_subject("S1", 0), "Walking", 1.0, 0.0, 0)
