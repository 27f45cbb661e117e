"""Lifting data, augmentation, batching, training and the stage pipeline, on a tiny synthetic
studio (3 subjects x 2 actions x 2 cameras x 40 frames; no shared data needed)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pose3d.runtime import params as P
from pose3d.data.contracts import read_predictions
from pose3d.data.io import DataError, Sequence, read_table, save_cameras, write_mocap, write_table
from pose3d.geometry.camera import Camera, project_camera
from pose3d.geometry.rotations import look_at, rotation_about_axis
from pose3d.tasks.lifting.data import (Augment, build_frames, flip_pixels, make_batch,
                                 to_screen, window_indices)
from pose3d.tasks.lifting.pipeline import load_lifter, predict, run_lift
from pose3d.tasks.lifting.steps import (LIFTERS, LazyBatches, Setup, augment_of, bone_length_loss,
                                        register_lifter, repnet_batches, semi_reprojection_loss,
                                        setup_temporal_semi, two_d_only, unit_scale,
                                        unlabeled_batch, unpaired_pools, floor_contact_loss,
                                        floor_height, running_stats_frozen)
from pose3d.skeleton import JOINT_INDEX, NUM_JOINTS, PARENTS, bone_lengths, flip_poses
from pose3d.runtime.train import Trainer, TrainConfig

# a rest pose (metres, Z up, facing -y), joint offsets from the parent
_OFFSETS = {
    "pelvis": (0, 0, 0.95), "r_hip": (-0.12, 0, 0), "r_knee": (0, 0, -0.43), "r_ankle": (0, 0, -0.42),
    "l_hip": (0.12, 0, 0), "l_knee": (0, 0, -0.43), "l_ankle": (0, 0, -0.42),
    "spine": (0, 0, 0.23), "thorax": (0, 0, 0.25), "neck_nose": (0, -0.03, 0.12),
    "head_top": (0, 0.03, 0.12), "l_shoulder": (0.17, 0, 0), "l_elbow": (0, 0, -0.28),
    "l_wrist": (0, 0, -0.26), "r_shoulder": (-0.17, 0, 0), "r_elbow": (0, 0, -0.28),
    "r_wrist": (0, 0, -0.26),
}


def synthetic_motion(T: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """(T, J, 3) forward-kinematics motion: limbs swing sinusoidally, the body turns and walks."""
    t = np.arange(T) / 25.0
    f = rng.uniform(0.5, 1.2)
    ph = rng.uniform(0, 2 * np.pi, NUM_JOINTS)
    amp = rng.uniform(0.2, 0.8, NUM_JOINTS)
    rot = [np.eye(3)[None].repeat(T, 0) for _ in range(NUM_JOINTS)]
    pos = np.zeros((T, NUM_JOINTS, 3))
    for j in range(NUM_JOINTS):
        ang = torch.from_numpy(amp[j] * np.sin(2 * np.pi * f * t + ph[j]))
        local = rotation_about_axis(ang, "x").numpy()
        off = np.asarray(_OFFSETS[list(JOINT_INDEX)[j]]) * scale
        p = PARENTS[j]
        if p < 0:
            yaw = rotation_about_axis(torch.from_numpy(0.5 * t + ph[0]), "z").numpy()
            rot[j] = yaw
            pos[:, j] = off + np.stack([0.3 * np.sin(t), 0.2 * t, 0 * t], -1)
        else:
            rot[j] = rot[p] @ local
            pos[:, j] = pos[:, p] + np.einsum("tij,j->ti", rot[p], off)
    return pos.astype(np.float32)


def _rig() -> dict[str, Camera]:
    cams = {}
    K = np.array([[600.0, 0, 250], [0, 600.0, 245], [0, 0, 1]])
    for i, a in enumerate((0.3, 2.0)):
        R, t = look_at(torch.tensor([4 * np.cos(a), 4 * np.sin(a), 1.4], dtype=torch.float64),
                       torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
        cams[f"c{i}"] = Camera(K=K, dist=np.array([-0.1, 0.05, 0.001, -0.001, 0.0]), R=R.numpy(),
                               t=t.numpy(), width=500, height=500, name=f"c{i}")
    return cams


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: one thread is fastest, and spinning OpenMP threads on a shared 2-core
    # machine can make them 50x slower
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    d = tmp_path_factory.mktemp("studio")
    rng = np.random.default_rng(0)
    seqs = []
    for s, (subj, split) in enumerate((("S1", "train"), ("S5", "train"), ("S9", "test"))):
        for act in ("Walking", "Posing"):
            seqs.append(Sequence(subj, act, synthetic_motion(40, rng, 0.9 + 0.1 * s), 25.0, split))
    write_mocap(d / "mocap.h5", seqs)
    save_cameras(d / "cameras.json", {s: _rig() for s in ("S1", "S5", "S9")})
    return d


def _tiny(section, **kw):
    # tiny networks; the optimiser settings these tests were calibrated with (the full-size
    # defaults in params.yaml are tuned for the studio, e.g. repnet's lr 2e-4 over 30 epochs)
    opt = dict(lr=1e-3, lr_decay=0.95)
    small = {"martinez": dict(hidden=32, **opt),
             "repnet": dict(hidden=32, critic_hidden=16, critic_kcs_hidden=32, critic_lr=1e-4, **opt),
             "temporal": dict(filter_widths=(3, 3), channels=32, traj_channels=16, dropout=0.25,
                              velocity_weight=0.0, **opt)}
    cls = {"martinez": P.Martinez, "repnet": P.RepNet, "temporal": P.Temporal}[section]
    return dataclasses.replace(cls(), **{"input_2d": "gt", "batch_size": 32, "epochs": 3, **small[section], **kw})


# --------------------------------------------------------------------------- data
def test_build_frames_matches_projection(studio):
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json")
    assert len(fs) == 3 * 2 * 2 and fs.num_frames == 12 * 40
    np.testing.assert_array_equal(fs.up, [0, 0, 1])
    cam = _rig()[fs.camera[0]]
    np.testing.assert_allclose(fs.uv[:40], cam.project(fs.pos_world[:40]), atol=1e-3)
    np.testing.assert_array_equal(fs.uv, fs.uv_gt)
    noisy = build_frames(studio / "mocap.h5", studio / "cameras.json", noise_px=5.0)
    assert 4.0 < np.std(noisy.uv - noisy.uv_gt) < 6.0


def test_detections_input(studio, tmp_path):
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json")
    det = fs.uv_gt + 1.0
    write_table(tmp_path / "det.parquet", {
        "subject": np.repeat(fs.subject, fs.lengths).tolist(), "action": np.repeat(fs.action, fs.lengths).tolist(),
        "camera": np.repeat(fs.camera, fs.lengths).tolist(), "frame": fs.frame_index(),
        "keypoints_px": det, "scores": np.ones((fs.num_frames, NUM_JOINTS), np.float32)})
    d = build_frames(studio / "mocap.h5", studio / "cameras.json", input_2d="detections",
                     detections_path=tmp_path / "det.parquet")
    np.testing.assert_allclose(d.uv, det, atol=1e-4)
    sub = build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S9"])
    write_table(tmp_path / "part.parquet", {
        "subject": ["S9"], "action": ["Walking"], "camera": ["c0"], "frame": np.array([0]),
        "keypoints_px": det[:1]})
    with pytest.raises(ValueError, match="no detections for S9/Posing|has 1 frames"):
        build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S9"],
                     input_2d="detections", detections_path=tmp_path / "part.parquet")
    assert len(sub) == 4


def test_flip_2d_and_3d_agree_for_an_undistorted_camera():
    K = torch.tensor([[500.0, 0, 230], [0, 500, 250], [0, 0, 1]], dtype=torch.float64)
    X = torch.randn(4, 17, 3, dtype=torch.float64) * 0.3 + torch.tensor([0.2, 0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(project_camera(flip_poses(X), K), flip_pixels(project_camera(X, K), K))
    torch.testing.assert_close(flip_poses(flip_poses(X)), X)


def test_augmentation_reprojects_consistently(studio):
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json")
    rng = np.random.default_rng(0)
    idx = window_indices(fs, rng.integers(0, fs.num_frames, 16), 2, 2)
    b = make_batch(fs, idx, Augment(virtual_cameras=True, flip=True), rng, centre=2)
    plain = make_batch(fs, idx, Augment(), rng, centre=2)
    # rigid (+ mirror) augmentation: bone lengths unchanged, pose changed
    torch.testing.assert_close(bone_lengths(b["pose"]), bone_lengths(plain["pose"]), atol=1e-5, rtol=1e-5)
    assert (b["pose"] - plain["pose"]).abs().max() > 0.05
    # the 2D input is the camera's projection of the augmented 3D
    absolute = (b["pose"] + b["root"][..., None, :]).double()
    uv = project_camera(absolute, b["K"].double()[:, None], b["dist"].double()[:, None])
    torch.testing.assert_close(uv.float(), b["uv"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(to_screen(b["uv"].double(), b["wh"].double()[:, None]).float(), b["x2d"])
    # rotation about the vertical through the window's centre root keeps that root in place
    torch.testing.assert_close(b["root"][:, 2, 2].abs(), plain["root"][:, 2, 2].abs(), atol=1e-4, rtol=1e-4)


def test_windows_stay_inside_their_sequence(studio):
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json")
    w = window_indices(fs, np.array([0, 39, 40, fs.num_frames - 1]), 4, 4)
    assert w.shape == (4, 9)
    np.testing.assert_array_equal(w[0], [0, 0, 0, 0, 0, 1, 2, 3, 4])
    np.testing.assert_array_equal(w[1], [35, 36, 37, 38, 39, 39, 39, 39, 39])
    np.testing.assert_array_equal(w[2, :5], [40] * 5)
    assert np.all(fs.seq_of_frame[w] == fs.seq_of_frame[w[:, :1]])


# --------------------------------------------------------------------------- repnet batching
def test_critic_never_sees_a_generator_inputs_own_3d(studio):
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S1", "S5"])
    gen_rows, critic_rows = unpaired_pools(fs)
    key = lambda r: {(fs.subject[fs.seq_of_frame[i]], fs.action[fs.seq_of_frame[i]]) for i in r}  # noqa: E731
    assert not key(gen_rows) & key(critic_rows)
    assert len(gen_rows) and len(critic_rows)
    rng = np.random.default_rng(0)
    seen_gen, seen_critic = set(), set()
    for b in repnet_batches(fs, gen_rows, critic_rows, 16, Augment(), rng):
        assert set(b) == {"x2d", "real", "gen_rows", "critic_rows", "index"}  # no 3D of the 2D inputs
        seen_gen |= key(b["gen_rows"])
        seen_critic |= key(b["critic_rows"])
        # no real pose equals (up to camera rotation: compare bone lengths) any input's pose
        own = torch.from_numpy(fs.pos_world[b["gen_rows"]])
        real_bl = bone_lengths(b["real"][:, 0])
        d = (bone_lengths(own)[:, None] - real_bl[None]).abs().amax(-1)
        assert d.min() > 1e-4
    assert seen_gen and seen_critic and not seen_gen & seen_critic
    # one subject: split by action instead
    one = fs.select([s == "S1" for s in fs.subject])
    g, c = unpaired_pools(one)
    assert not key_of(one, g) & key_of(one, c)


def key_of(fs, rows):
    return {fs.action[fs.seq_of_frame[i]] for i in rows}


# --------------------------------------------------------------------------- training
def _fit(name, p, fs, epochs, ckpt=None, unl=None, precision="fp32"):
    setup = setup_temporal_semi(p, fs, 0, unl) if unl is not None else LIFTERS[name].setup(p, fs, 0)
    cfg = TrainConfig(epochs=epochs, device="cpu", cpu_precision=precision, seed=0, checkpoint=ckpt,
                      progress=False)
    tr = Trainer(setup.modules, setup.optimizers, setup.schedulers, config=cfg)
    return tr.fit(setup.step_fn, setup.train_batches, fingerprint="fp")


def test_repnet_trains_under_bf16_autocast(studio):
    """RepNet's step under bf16 autocast (the default where the CPU has native bf16): finite
    float32 losses, close to the fp32 run's after one epoch but not equal (bf16 did run)."""
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S1", "S5"])
    p = _tiny("repnet", epochs=1)
    h32, h16 = _fit("repnet", p, fs, 1), _fit("repnet", p, fs, 1, precision="bf16")
    for k in ("train_reproj", "train_camera", "train_loss_critic"):
        assert np.isfinite(h16[0][k])
    assert h16[0]["train_reproj"] == pytest.approx(h32[0]["train_reproj"], rel=0.1)
    assert h16[0]["train_reproj"] != h32[0]["train_reproj"]  # the matmuls did run in bf16


@pytest.mark.parametrize("name, key", [("martinez", "train_loss"), ("repnet", "train_reproj"),
                                       ("temporal", "train_mpjpe_mm")])
def test_tiny_training_lowers_the_loss(studio, name, key):
    torch.manual_seed(0)
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S1", "S5"])
    extra = dict(reproj_growth=1.0, reproj_weight=3.0) if name == "repnet" else {}
    p = _tiny(name, virtual_cameras=False, flip_aug=False, **extra)
    h = _fit(name, p, fs, 4)
    assert h[-1][key] < 0.8 * h[0][key], [r[key] for r in h]


def test_temporal_velocity_pairs_are_adjacent_frames_augmented_alike(studio):
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S1"])
    p = _tiny("temporal", velocity_weight=1.0, batch_size=16)
    setup = LIFTERS["temporal"].setup(p, fs, 0)
    b = next(iter(setup.train_batches(0)))
    n = len(b["x2d"]) // 2
    assert len(b["x2d"]) == 16 and n == 8
    # window of frame t + 1 = window of frame t shifted by one (same rotation and flip)
    torch.testing.assert_close(b["x2d"][n:, :-1], b["x2d"][:n, 1:])
    h = _fit("temporal", p, fs, 2)
    assert np.isfinite(h[-1]["train_mpjve_mm"])


def test_semi_supervised_temporal_step_runs_all_losses(studio):
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S1", "S5"])
    lab, unl = fs.select([s == "S1" for s in fs.subject]), fs.select([s == "S5" for s in fs.subject])
    p = _tiny("temporal", unlabeled_subjects=("S5",), gan_frames=7, semi_warmup_epochs=0, bone_weight=1.0,
              adv_weight=0.05)
    h = _fit("temporal", p, lab, 2, unl=unl)
    for k in ("train_reproj", "train_bone", "train_adv", "train_loss_critic"):
        assert np.isfinite(h[-1][k])
    assert h[-1]["train_reproj"] < h[0]["train_reproj"] * 1.5


def test_semi_supervised_batches_never_carry_the_unlabelled_3d(studio):
    """The unlabelled subject's 3D is NaN here: every loss stays finite (no 3D of it reaches a
    loss, not even through augmentation), its batch part is 2D + cameras only, the critic's real
    sequences are the labelled subject's, and the warm-up epochs have no unlabelled part."""
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S1", "S5"])
    lab = fs.select([s == "S1" for s in fs.subject])
    unl = two_d_only(fs.select([s == "S5" for s in fs.subject]))
    assert np.isnan(unl.pos_cam).all() and np.isnan(unl.pos_world).all()
    p = _tiny("temporal", unlabeled_subjects=("S5",), gan_frames=7, semi_warmup_epochs=1,
              velocity_weight=1.0, floor_weight=1.0, adv_weight=0.05)
    setup = setup_temporal_semi(p, lab, 0, unl)
    assert "ux2d" not in next(iter(setup.train_batches(0)))              # warm-up: labelled only
    b = next(iter(setup.train_batches(1)))
    assert set(b) == {"x2d", "pose", "root", "ux2d", "uuv", "uK", "udist", "uwh", "uR", "ut", "real_seq"}
    lab_bones = bone_lengths(torch.from_numpy(lab.pos_world).double())
    real_bones = bone_lengths(b["real_seq"].double()).reshape(-1, NUM_JOINTS - 1)
    # each real pose is one of the labelled subject's frames (bone lengths survive the augmentation)
    d = (real_bones[:, None] - lab_bones[None]).abs().amax(-1).amin(1)
    assert d.max() < 1e-4
    h = _fit("temporal", p, lab, 2, unl=unl)
    assert "train_reproj" not in h[0]
    for k in ("train_loss", "train_reproj", "train_bone", "train_floor", "train_adv", "train_loss_critic"):
        assert np.isfinite(h[1][k]), k


def test_unlabeled_batch_flips_in_2d_only(studio):
    fs = two_d_only(build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S5"]))
    idx = window_indices(fs, np.arange(0, fs.num_frames, 7), 2, 2)
    plain = unlabeled_batch(fs, idx, False, np.random.default_rng(0))
    torch.testing.assert_close(plain["uv"], torch.from_numpy(fs.uv[idx]))
    flipped = unlabeled_batch(fs, idx, True, np.random.default_rng(0))
    f = np.random.default_rng(0).random(len(idx)) < 0.5
    assert 0 < f.sum() < len(f)
    torch.testing.assert_close(flipped["uv"][~f], plain["uv"][~f])
    want = flip_pixels(plain["uv"][f].double(), plain["K"][f][:, None].double()).float()
    torch.testing.assert_close(flipped["uv"][f], want)
    torch.testing.assert_close(flipped["x2d"], to_screen(flipped["uv"], flipped["wh"][:, None]))


def test_semi_reprojection_loss_exact_value():
    """One frame, two joints at the root (0, 0, 2) and (0.2, 0, 2); f = 100 px, principal point
    (50, 50), no distortion, 100 x 100 px image: projections (50, 50) and (60, 50) px. Against
    inputs (50, 50) and (70, 50): errors 0 and 10 px = 0.2 screen units -> mean 0.1."""
    pose = torch.tensor([[[[0.0, 0, 0], [0.2, 0, 0]]]])                  # (1, 1, 2, 3)
    root = torch.tensor([[[0.0, 0, 2]]])                                   # (1, 1, 3)
    uv = torch.tensor([[[[50.0, 50], [70, 50]]]])
    K = torch.tensor([[[100.0, 0, 50], [0, 100, 50], [0, 0, 1]]])
    loss = semi_reprojection_loss(pose, root, uv, K, torch.zeros(1, 5), torch.tensor([[100.0, 100]]))
    assert loss.item() == pytest.approx(0.1, abs=1e-6)
    # a root behind the camera is clamped to 0.1 m depth instead of flipping the image
    behind = semi_reprojection_loss(pose, -root, uv, K, torch.zeros(1, 5), torch.tensor([[100.0, 100]]))
    assert behind.item() == pytest.approx((0 + abs(50 + 100 * 0.2 / 0.1 - 70) / 50) / 2, abs=1e-5)


def test_unit_scale_divides_each_sequence_by_its_mean_bone_length():
    rng = np.random.default_rng(1)
    seq = torch.from_numpy(rng.normal(size=(3, 4, NUM_JOINTS, 3)))
    out = unit_scale(seq)
    torch.testing.assert_close(bone_lengths(out).mean((1, 2)), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(unit_scale(2.5 * seq), out)                # no size cue left
    torch.testing.assert_close(out[1] * bone_lengths(seq[1]).mean(), seq[1])


def test_floor_contact_loss_exact_value():
    """A camera 2 m above the floor looking along world +y (x_c = R x_w + t): ankles placed in
    the camera frame come back to world heights 0.10 and 0.25 m (lower: 0.10); with the floor at
    0.07 the loss is 0.03 m; the same pose 0.05 m lower: 0.02 m."""
    R = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])           # world z up -> camera -y
    t = -R @ torch.tensor([0.0, 0, 2])                                    # camera centre (0, 0, 2)
    world = torch.zeros(1, 1, NUM_JOINTS, 3)
    world[..., :, 1] = 3.0                                                # 3 m in front
    world[0, 0, JOINT_INDEX["l_ankle"], 2] = 0.10
    world[0, 0, JOINT_INDEX["r_ankle"], 2] = 0.25
    world[0, 0, 0, 2] = 0.9                                               # pelvis
    cam = world @ R.T + t
    root, pose = cam[:, :, 0], cam - cam[:, :, :1]
    up = torch.tensor([0.0, 0, 1])
    loss = floor_contact_loss(pose, root, R[None], t[None], up, 0.07)
    assert loss.item() == pytest.approx(0.03, abs=1e-6)
    lower = root + torch.tensor([0.0, 0.05, 0])                           # camera y points down
    assert floor_contact_loss(pose, lower, R[None], t[None], up, 0.07).item() == pytest.approx(0.02, abs=1e-6)


def test_floor_height_is_the_median_lower_ankle(studio):
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S1"])
    low = np.minimum(fs.pos_world[:, JOINT_INDEX["l_ankle"]] @ fs.up, fs.pos_world[:, JOINT_INDEX["r_ankle"]] @ fs.up)
    assert floor_height(fs) == pytest.approx(float(np.median(low)))


def test_running_stats_frozen_keeps_batchnorm_running_stats_but_batch_normalises():
    torch.manual_seed(0)
    bn = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).train()
    x = torch.randn(16, 3) * 5 + 2
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    with running_stats_frozen(bn):
        y = bn(x)
    after = bn.state_dict()
    for k in ("1.running_mean", "1.running_var"):
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    assert bn[1].momentum == 0.1                                           # restored
    h = bn[0](x)                                                           # batch statistics used
    torch.testing.assert_close(y, (h - h.mean(0)) / (h.var(0, unbiased=False) + bn[1].eps).sqrt()
                               * bn[1].weight + bn[1].bias)
    bn(x)
    assert not torch.equal(bn.state_dict()["1.running_mean"], before["1.running_mean"])


def test_bone_length_loss_exact_value():
    """Bones of the unlabelled predictions 10 % longer than the labelled poses' on average:
    the loss is the mean over bones of |mean length difference| (metres)."""
    rng = np.random.default_rng(0)
    lab = torch.from_numpy(rng.normal(size=(4, NUM_JOINTS, 3)))
    pred = 1.1 * lab[:2][:, None].expand(2, 3, NUM_JOINTS, 3)             # (B, L, J, 3)
    want = (1.1 * bone_lengths(lab[:2]).mean(0) - bone_lengths(lab).mean(0)).abs().mean()
    assert bone_length_loss(pred, lab).item() == pytest.approx(want.item(), rel=1e-12)
    assert bone_length_loss(lab[:, None], lab).item() == 0.0


@pytest.mark.parametrize("name", ["martinez", "temporal"])
def test_checkpoint_resumes_to_the_same_next_epoch_loss(studio, tmp_path, name):
    fs = build_frames(studio / "mocap.h5", studio / "cameras.json", subjects=["S1", "S5"])
    p = _tiny(name)
    full = _fit(name, p, fs, 3)
    _fit(name, p, fs, 2, ckpt=tmp_path / "ck.pt")
    resumed = _fit(name, p, fs, 3, ckpt=tmp_path / "ck.pt")
    assert len(resumed) == 3
    assert resumed[2]["train_loss"] == pytest.approx(full[2]["train_loss"], rel=1e-5)


# --------------------------------------------------------------------------- the stage pipeline
def test_run_lift_writes_the_contract(studio, tmp_path):
    p = _tiny("temporal", epochs=1)
    res = run_lift("temporal", p, P.Base(mlflow=False, cpu_precision="fp32"),
                   mocap=studio / "mocap.h5", cameras=studio / "cameras.json",
                   out=tmp_path / "pred.parquet", model_dir=tmp_path / "model",
                   metrics_path=tmp_path / "m.json", curves=tmp_path / "c.csv", progress=False)
    table, meta = read_table(tmp_path / "pred.parquet")
    assert table.num_rows == 2 * 2 * 40  # S9: 2 actions x 2 cameras x 40 frames
    assert {"subject", "action", "camera", "frame", "joints_3d", "root_3d"} <= set(table.column_names)
    assert meta["coord_frame"] == "camera" and meta["root_relative"] is True and meta["units"] == "m"
    assert meta["method"] == "temporal" and len(meta["joint_names"]) == NUM_JOINTS
    assert set(table.column("subject").to_pylist()) == {"S9"}
    m = json.loads((tmp_path / "m.json").read_text())
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "mpjve_mm", "n_mpjpe_mm", "root_mm"):
        assert np.isfinite(m[k])
    assert (tmp_path / "model" / "checkpoint.pt").exists() and (tmp_path / "c.csv").exists()
    # model.pt + config.json rebuild the same predictions
    model = load_lifter(tmp_path / "model")
    pose, _ = predict(model, res.test, flip_tta=p.flip_tta)
    np.testing.assert_allclose(pose, res.pose, atol=1e-5)


@pytest.mark.parametrize("name", ["martinez", "repnet"])
def test_same_machine_same_params_same_metrics(studio, tmp_path, name):
    """Two runs of the lift stage's code path with the same params on the same machine give
    bit-identical metrics files and predictions (RepNet: the adversarial one, random
    interpolates and all)."""
    p = _tiny(name, epochs=1)
    outs = []
    for k in range(2):
        d = tmp_path / str(k)
        run_lift(name, p, P.Base(mlflow=False, cpu_precision="fp32"), mocap=studio / "mocap.h5",
                 cameras=studio / "cameras.json", out=d / "pred.parquet", metrics_path=d / "m.json",
                 progress=False)
        outs.append(((d / "m.json").read_text(), read_table(d / "pred.parquet")[0]))
    assert outs[0][0] == outs[1][0]
    assert outs[0][1].equals(outs[1][1])


def test_lifter_logged_to_mlflow_predicts_like_the_stage_model(studio, tmp_path, monkeypatch):
    """run_lift inside a stage's MLflow run logs the lifter (mlflow.pytorch): loaded back with
    load_model("runs:/<id>/model") it predicts exactly what the stage's own model
    (models/<name>, weights only) predicts, on the test frames and on a longer sequence."""
    import mlflow

    from pose3d.runtime import tracking

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    p = _tiny("martinez", epochs=1)
    with tracking.stage_run("lift@martinez", experiment="pose3d-test") as run:
        res = run_lift("martinez", p, P.Base(cpu_precision="fp32"), mocap=studio / "mocap.h5",
                       cameras=studio / "cameras.json", model_dir=tmp_path / "model", run=run, progress=False)
    logged = mlflow.pytorch.load_model(f"runs:/{run.run_id}/model")
    own = load_lifter(tmp_path / "model")
    pose, _ = predict(logged, res.test, flip_tta=p.flip_tta)
    np.testing.assert_array_equal(pose, res.pose)
    x = torch.randn(2, 50, NUM_JOINTS, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(logged(x), own(x), rtol=0, atol=0)
    sig = mlflow.models.get_model_info(f"runs:/{run.run_id}/model").signature
    assert sig.inputs.inputs[0].shape == (-1, -1, NUM_JOINTS, 2)  # any batch, any length
    assert sig.outputs.inputs[0].shape == (-1, -1, NUM_JOINTS, 3)


def test_detections_missing_is_a_clear_error(studio, tmp_path):
    p = _tiny("martinez", input_2d="detections", epochs=1)
    with pytest.raises(DataError, match="detections"):
        run_lift("martinez", p, P.Base(mlflow=False), mocap=studio / "mocap.h5",
                 cameras=studio / "cameras.json", detections=tmp_path / "none.parquet", progress=False)


# --------------------------------------------------------------------------- a new lifter
class LinearLifter(torch.nn.Module):
    """A lifter defined here only: one linear map of the root-centred 2D of each frame."""

    def __init__(self, num_joints: int = NUM_JOINTS):
        super().__init__()
        self.lin = torch.nn.Linear(num_joints * 2, num_joints * 3)

    def forward(self, x):  # (B, T, J, 2) screen -> (B, T, J, 3) root-relative metres
        B, T, J, _ = x.shape
        y = self.lin((x - x[..., :1, :]).reshape(B, T, -1)).reshape(B, T, J, 3)
        return y - y[..., :1, :]


def setup_linear(p, train, seed):
    torch.manual_seed(seed)
    model = LinearLifter()
    opt = torch.optim.Adam(model.parameters(), lr=p.lr)
    aug = augment_of(p)

    def batches(epoch):
        rng = np.random.default_rng([seed, epoch])
        rows = rng.permutation(train.num_frames)
        n = len(rows) // p.batch_size
        return LazyBatches(n, lambda i: make_batch(train, rows[i * p.batch_size:(i + 1) * p.batch_size, None],
                                                   aug, rng))

    def step(ctx, b, epoch):
        loss = (model(b["x2d"]) - b["pose"]).norm(dim=-1).mean()
        ctx.backward_step(loss, "gen")
        return {"loss": loss}

    return Setup(model, {"gen": model}, {"gen": opt}, {}, batches, step, {})


def test_a_new_lifter_needs_only_the_registry(studio, tmp_path):
    register_lifter("linear", LinearLifter, setup_linear)
    try:
        p = P.LifterParams(input_2d="gt", epochs=3, batch_size=32, lr=1e-2, virtual_cameras=False)
        res = run_lift("linear", p, P.Base(mlflow=False, cpu_precision="fp32"), mocap=studio / "mocap.h5",
                       cameras=studio / "cameras.json", out=tmp_path / "pred.parquet",
                       model_dir=tmp_path / "model", progress=False)
        assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
        assert read_predictions(tmp_path / "pred.parquet").method == "linear"
        model = load_lifter(tmp_path / "model")
        assert isinstance(model, LinearLifter)
        pose, _ = predict(model, res.test, flip_tta=p.flip_tta)
        np.testing.assert_allclose(pose, res.pose, atol=1e-5)
    finally:
        del LIFTERS["linear"]
