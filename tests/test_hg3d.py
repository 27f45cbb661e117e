"""Tests for the pose-hg-3d style image -> 3D module (pose3d/tasks/image3d.py, pose3d/models/hg3d.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from pose3d.runtime import params as P
from pose3d.tasks import image3d
from pose3d.geometry.camera import project_camera, world_to_camera
from pose3d.skeleton import (BONES, HG3D_NAMES, JOINT_INDEX, JOINT_NAMES, MPII16_NAMES, ROOT,
                             bone_lengths, from_hg3d_order, from_mpii16, to_hg3d_order, to_mpii16)

# A canonical standing skeleton (metres), H36M-17 order, written by joint name.
_T_POSE = {
    "pelvis": (0.0, 0.0, 0.0), "r_hip": (-0.13, 0.0, 0.0), "r_knee": (-0.13, 0.45, 0.02),
    "r_ankle": (-0.13, 0.88, 0.0), "l_hip": (0.13, 0.0, 0.0), "l_knee": (0.13, 0.45, 0.02),
    "l_ankle": (0.13, 0.88, 0.0), "spine": (0.0, -0.23, 0.0), "thorax": (0.0, -0.48, 0.0),
    "neck_nose": (0.0, -0.6, -0.05), "head_top": (0.0, -0.77, 0.0),
    "l_shoulder": (0.17, -0.46, 0.0), "l_elbow": (0.42, -0.46, 0.03), "l_wrist": (0.66, -0.46, 0.0),
    "r_shoulder": (-0.17, -0.46, 0.0), "r_elbow": (-0.42, -0.46, 0.03), "r_wrist": (-0.66, -0.46, 0.0),
}


def _pose(dtype=torch.float64) -> torch.Tensor:
    return torch.tensor([_T_POSE[n] for n in JOINT_NAMES], dtype=dtype)


def _random_rotation(g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


# --------------------------------------------------------------------------- geometric loss
def test_bone_groups_by_name():
    groups = image3d.bone_groups("side")
    assert set(groups) == {"left", "right", "torso"}
    assert sorted(sum(groups.values(), [])) == list(range(len(BONES)))
    for e in groups["left"]:
        assert JOINT_NAMES[BONES[e][1]].startswith("l_")
    for e in groups["right"]:
        assert JOINT_NAMES[BONES[e][1]].startswith("r_")
    assert {JOINT_NAMES[BONES[e][1]] for e in groups["torso"]} == {"spine", "thorax", "neck_nose", "head_top"}
    limbs = image3d.bone_groups("limbs")
    assert set(limbs) == set(groups)
    left = {JOINT_NAMES[BONES[e][1]] for e in limbs["left"]}
    assert left == {"l_knee", "l_ankle", "l_elbow", "l_wrist"}  # no pelvis->hip, thorax->shoulder
    pairs = {k: {JOINT_NAMES[BONES[e][1]] for e in v} for k, v in image3d.bone_groups("pairs").items()}
    assert pairs == {"legs": {"l_knee", "l_ankle", "r_knee", "r_ankle"},
                     "arms": {"l_elbow", "l_wrist", "r_elbow", "r_wrist"},
                     "hips": {"l_hip", "r_hip"}, "shoulders": {"l_shoulder", "r_shoulder"}}
    with pytest.raises(ValueError, match="'pairs'"):
        image3d.bone_groups("legs")


@pytest.mark.parametrize("groups", ["side", "limbs", "pairs", "all"])
@pytest.mark.parametrize("scale", [1e-3, 0.25, 1.0, 7.0, 1000.0])
def test_geometric_loss_zero_for_canonical_proportions(scale, groups):
    g = torch.Generator().manual_seed(0)
    x = _pose()
    ref = bone_lengths(x)
    # any scale, rotation and translation keeps the proportions
    y = scale * x @ _random_rotation(g).T + torch.tensor([0.3, -1.0, 4.0], dtype=torch.float64)
    loss = image3d.geometric_loss(y, ref, groups)
    assert loss.shape == ()
    assert float(loss) < 1e-20


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_geometric_loss_positive_for_distorted_skeleton(scale):
    x = _pose()
    ref = bone_lengths(x)
    y = x.clone()
    # stretch the left forearm by 40%: the left group's ratios disagree
    e, w = JOINT_INDEX["l_elbow"], JOINT_INDEX["l_wrist"]
    y[w] = y[e] + 1.4 * (y[w] - y[e])
    loss = image3d.geometric_loss(scale * y, ref, "side")
    assert float(loss) > 1e-3
    # the paper's pairs: the stretched forearm disagrees with its mirror image and upper arm
    assert float(image3d.geometric_loss(scale * y, ref, "pairs")) > 1e-3
    # and the value does not depend on the overall scale
    assert math.isclose(float(loss), float(image3d.geometric_loss(y, ref, "side")), rel_tol=1e-9)


def test_geometric_loss_batched_and_differentiable():
    x = _pose().repeat(4, 3, 1, 1)  # (4, 3, J, 3)
    x = x + 0.05 * torch.randn_like(x)
    x.requires_grad_(True)
    loss = image3d.geometric_loss(x, bone_lengths(_pose()))
    assert loss.shape == (4, 3)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# --------------------------------------------------------------------------- back-projection
def _camera(dtype=torch.float64):
    K = torch.tensor([[1145.0, 0.0, 512.5], [0.0, 1143.8, 515.4], [0.0, 0.0, 1.0]], dtype=dtype)
    dist = torch.tensor([-0.207, 0.247, -0.0009, -0.0016, -0.0031], dtype=dtype)
    return K, dist


def test_backprojection_of_gt_2d_and_gt_depth_recovers_gt_3d():
    g = torch.Generator().manual_seed(1)
    K, dist = _camera()
    N = 8
    R = torch.stack([_random_rotation(g) for _ in range(N)])
    t = torch.stack([torch.tensor([0.0, 0.0, 3.0 + i], dtype=torch.float64) for i in range(N)])
    x_cam = world_to_camera(_pose().expand(N, -1, -1), R, t)  # (N, J, 3)
    uv = project_camera(x_cam, K, dist)  # distorted pixels (the "GT 2D")
    # an arbitrary crop affine: 3.1 image px per crop px, stride 4
    A = torch.tensor([[3.1, 0.0, 200.0], [0.0, 3.1, 150.0]], dtype=torch.float64).expand(N, 2, 3)
    k = image3d.depth_unit(A, K.expand(N, 3, 3), stride=4.0)
    d = image3d.depth_target(x_cam, k)  # the "GT depth"
    assert torch.allclose(d[:, ROOT], torch.zeros(N, dtype=torch.float64))
    x_rec = image3d.backproject(uv, d, k, K, dist, z_root=x_cam[:, ROOT, 2])
    assert torch.allclose(x_rec, x_cam, atol=1e-9), (x_rec - x_cam).abs().max()
    # without the root depth: the root-relative shape up to scale, rescaled to the skeleton
    rel = image3d.reconstruct(uv, d, k, K, dist, bone_lengths(_pose()))
    assert torch.allclose(rel, image3d.root_relative(x_cam), atol=1e-9)


def test_backprojection_gradients_reach_depth():
    K, dist = _camera()
    uv = torch.rand(2, 17, 2, dtype=torch.float64) * 500 + 200
    d = torch.randn(2, 17, dtype=torch.float64, requires_grad=True)
    k = torch.full((2,), 0.003, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda dd: image3d.backproject(uv, dd, k, K, dist, 4.0), (d,))


# --------------------------------------------------------------------------- output orders
def test_output_order_converters_round_trip_by_name():
    x = torch.randn(5, 17, 3)
    m = to_mpii16(x)
    assert m.shape == (5, 16, 3)
    assert torch.equal(m[:, MPII16_NAMES.index("l_wrist")], x[:, JOINT_INDEX["l_wrist"]])
    back = from_mpii16(m)
    keep = [i for i, n in enumerate(JOINT_NAMES) if n != "spine"]  # spine is not in MPII-16
    assert torch.equal(back[:, keep], x[:, keep])
    h = to_hg3d_order(x)
    assert h.shape == (5, 16, 3)
    # the seed's documented order, in MPII-16 slots
    assert torch.equal(h, x[:, [3, 2, 1, 4, 5, 6, 0, 7, 8, 10, 16, 15, 14, 11, 12, 13]])
    assert HG3D_NAMES[HG3D_NAMES.index("head_top")] == "head_top"
    hb = from_hg3d_order(h)
    keep = [i for i, n in enumerate(JOINT_NAMES) if n != "neck_nose"]
    assert torch.equal(hb[:, keep], x[:, keep])
    assert torch.isnan(hb[:, JOINT_INDEX["neck_nose"]]).all()


# --------------------------------------------------------------------------- model
def _tiny_model():
    from pose3d.models.hg3d import HG3D, HG3DConfig

    torch.manual_seed(0)
    return HG3D(HG3DConfig(resnet_depth=18, deconv_channels=32, depth_channels=16, depth_blocks=1))


def test_model_shapes_and_read_depth():
    from pose3d.models.hg3d import read_depth

    net = _tiny_model().eval()
    hm, dm = net(torch.zeros(2, 3, 64, 64))
    assert hm.shape == dm.shape == (2, 17, 16, 16)
    with pytest.raises(ValueError, match="HG3D input"):
        net(torch.zeros(2, 64, 64))
    # bilinear read at pixel centres and between them
    maps = torch.arange(16.0).view(1, 1, 4, 4).expand(1, 2, 4, 4).contiguous()
    xy = torch.tensor([[[1.0, 2.0], [2.5, 0.0]]])
    assert torch.allclose(read_depth(maps, xy), torch.tensor([[9.0, 2.5]]))


def _batch(n: int, has_3d: bool, W: int = 16):
    g = torch.Generator().manual_seed(3)
    x = _pose(torch.float32)
    joints_hm = (x[:, :2] * 8 + 8).expand(n, -1, -1).clone()
    rays = torch.cat([x[:, :2] / 4, torch.ones(17, 1)], -1).expand(n, -1, -1).clone()
    return {"images": torch.randn(n, 3, 64, 64, generator=g), "joints_hm": joints_hm,
            "depth": torch.zeros(n, 17), "rays": rays, "k": torch.full((n,), 0.02),
            "has_3d": torch.full((n,), has_3d)}


def test_gradients_reach_depth_branch_from_2d_only_samples():
    net = _tiny_model().train()
    # give the zero-initialised depth output a nonzero start, as after some training
    torch.nn.init.normal_(net.depth.out.weight, std=0.1)
    ref = bone_lengths(_pose(torch.float32))
    loss, parts = image3d.hg3d_losses(net, _batch(4, has_3d=False), sigma=1.0, depth_weight=1.0,
                                   geo_weight=1.0, ref_lengths=ref, groups="side",
                                   use_depth=True, use_geo=True)
    assert "loss_geo" in parts and "loss_depth" not in parts and float(parts["loss_geo"]) > 0
    net.zero_grad()
    # the batch has no 3D labels and the heatmap loss does not reach the depth branch's
    # parameters, so any gradient there comes from the geometric constraint
    loss.backward()
    for name, p in net.depth.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches depth.{name}"
    # and the shared 2D features get the constraint's gradient too (end-to-end training)
    assert net.pose.deconv[0].weight.grad.abs().sum() > 0


def test_flip_swaps_depth_and_rays_with_the_joints():
    from pose3d.skeleton import FLIP_PERM

    b = _batch(2, has_3d=True)
    b["depth"] = torch.arange(34.0).view(2, 17)
    b["flip"] = torch.tensor([True, False])
    f = image3d._flip_batch(b, W=16)
    perm = list(FLIP_PERM)
    # flipped sample: joint j of the mirror image is the original's mirror joint
    assert torch.equal(f["depth"][0], b["depth"][0, perm])
    assert torch.equal(f["rays"][0], b["rays"][0, perm])
    assert torch.allclose(f["joints_hm"][0, :, 0], 15 - b["joints_hm"][0, perm, 0])
    assert torch.equal(f["images"][0], b["images"][0].flip(-1))
    # the relabelled pose keeps its bone lengths up to the left/right swap: same geometric loss
    ref = bone_lengths(_pose(torch.float32))
    pose = (1 + b["k"][0] * b["depth"][0])[:, None] * b["rays"][0]
    fpose = (1 + f["k"][0] * f["depth"][0])[:, None] * f["rays"][0]
    assert torch.allclose(bone_lengths(pose).sort().values, bone_lengths(fpose).sort().values)
    # unflipped sample untouched
    for k in ("depth", "rays", "joints_hm", "images"):
        assert torch.equal(f[k][1], b[k][1])


def test_depth_branch_untouched_in_2d_phase_and_without_constraint():
    net = _tiny_model().train()
    ref = bone_lengths(_pose(torch.float32))
    loss, parts = image3d.hg3d_losses(net, _batch(2, has_3d=False), sigma=1.0, depth_weight=1.0,
                                   geo_weight=1.0, ref_lengths=ref, groups="side",
                                   use_depth=True, use_geo=False)
    loss.backward()
    assert set(parts) == {"loss_2d"}
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in net.depth.parameters())


# --------------------------------------------------------------------------- end to end (tiny)
def _fake_studio(root, n_frames: int = 12, size: int = 64):
    """A tiny studio + extract output: 3 subjects, one camera, joints drawn as coloured dots."""
    import cv2

    from pose3d.data.crops import CropWriter, crop_affine, invert_affine, square_box
    from pose3d.data.io import Sequence, save_cameras, write_mocap
    from pose3d.geometry.camera import Camera

    rng = np.random.default_rng(0)
    K = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])
    cam = Camera(K=K, dist=np.array([-0.1, 0.02, 0.0, 0.0, 0.0]), R=np.eye(3),
                 t=np.array([0.0, 0.0, 4.0]), width=640, height=480, name="cam0")
    subjects = {"S1": "train", "S5": "train", "S9": "test"}
    seqs, cams = [], {}
    with CropWriter(root / "crops.h5", root / "crops.parquet", size=size) as w:
        for s, split in subjects.items():
            base = _pose(torch.float64).numpy() * rng.uniform(0.9, 1.1)
            poses = base + rng.normal(0, 0.05, (n_frames, 17, 3))
            seqs.append(Sequence(s, "Walking", poses.astype(np.float32), 50.0, split))
            cams[s] = {"cam0": cam}
            uv = cam.project(poses)
            A = crop_affine(square_box(uv, 0.2), size)
            crops = np.zeros((n_frames, size, size, 3), np.uint8)
            for f in range(n_frames):
                pts = uv[f] @ A[f, :, :2].T + A[f, :, 2]
                for j, (x, y) in enumerate(pts):
                    color = tuple(int(c) for c in (40 + 12 * j, 255 - 12 * j, 128))
                    cv2.circle(crops[f], (int(round(x)), int(round(y))), 2, color, -1)
            w.add(crops, subject=s, action="Walking", camera="cam0", frames=np.arange(n_frames),
                  split=split, bbox_xyxy=square_box(uv, 0.2), crop_to_image=invert_affine(A), gt_2d=uv)
    write_mocap(root / "mocap.h5", seqs)
    save_cameras(root / "cameras.json", cams)
    return root


def test_load_data_targets_are_consistent(tmp_path):
    _fake_studio(tmp_path)
    data = image3d.load_data(tmp_path / "crops.h5", tmp_path / "crops.parquet", tmp_path / "mocap.h5",
                          tmp_path / "cameras.json", input_size=32, stride=4, subjects=["S1"])
    assert set(data.keys["subject"]) == {"S1", "S9"}  # listed subjects + every test crop
    assert data.images.shape[1:] == (32, 32, 3)
    # GT 2D heatmap coords -> image px -> back-projection with the GT depth -> GT 3D
    from pose3d.data.crops import apply_affine
    from pose3d.heatmaps import heatmap_to_crop

    uv = apply_affine(torch.from_numpy(data.crop_to_image).double(),
                      heatmap_to_crop(torch.from_numpy(data.joints_hm).double(), 4))
    x = image3d.backproject(uv, torch.from_numpy(data.depth).double(), torch.from_numpy(data.k).double(),
                         torch.from_numpy(data.K).double(), torch.from_numpy(data.dist).double(),
                         torch.from_numpy(data.x_cam[:, ROOT, 2]).double())
    assert torch.allclose(x.float(), torch.from_numpy(data.x_cam), atol=1e-4)


def test_run_hg3d_tiny_end_to_end(tmp_path):
    from pose3d.data.io import read_table
    from pose3d.models.hg3d import HG3DConfig

    _fake_studio(tmp_path)
    p = dataclasses.replace(P.HG3DParams(), subjects_3d=["S1"], subjects_2d_only=["S5"], epochs_2d=1,
                            epochs_3d=1, epochs_joint=1, batch_size=4, geo_weight=1.0, samples_per_epoch=8)
    opts = dataclasses.replace(image3d.configs_from_params(p)[1], eval_max=4)  # 2 steps a phase: fast
    cfg = HG3DConfig(deconv_channels=16, depth_channels=8)
    kw = dict(crops_h5=tmp_path / "crops.h5", crops_parquet=tmp_path / "crops.parquet",
              mocap_h5=tmp_path / "mocap.h5", cameras_json=tmp_path / "cameras.json",
              model_config=cfg, opts=opts, input_size=32, device="cpu", cpu_precision="fp32",
              channels_last=False, progress=False, checkpoint=tmp_path / "ckpt.pt",
              curves_csv=tmp_path / "curves.csv")
    m = image3d.run_hg3d(**kw, model_dir=tmp_path / "model", predictions=tmp_path / "pred.parquet")
    assert set(m["phases"]) == {"2d", "3d", "joint"}
    assert np.isfinite(m["mpjpe_mm"]) and np.isfinite(m["pa_mpjpe_mm"]) and m["n_test"] == 12
    assert np.isfinite(m["gt2d_mpjpe_mm"]) and m["err2d_px"] >= 0
    table, meta = read_table(tmp_path / "pred.parquet")
    assert meta["method"] == "hg3d" and meta["coord_frame"] == "camera" and meta["root_relative"]
    assert table.num_rows == 12 and set(table.column("subject").to_pylist()) == {"S9"}
    assert "loss_geo" in (tmp_path / "curves.csv").read_text()
    assert (tmp_path / "model" / "model.pt").exists() and (tmp_path / "ckpt.pt").exists()
    # a run resumed from the final checkpoint reports the same numbers (phases included)
    again = image3d.run_hg3d(**kw)
    assert again["phases"] == m["phases"] and again["mpjpe_mm"] == m["mpjpe_mm"]
