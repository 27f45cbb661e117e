"""Rig, renderer and the studio stage: the person is where the projected joints are."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
import yaml

from pose3d.data import io
from pose3d.data.studio import anthropometry as A
from pose3d.data.studio import motion as M
from pose3d.data.studio import render as R
from pose3d.data.studio import rig
from pose3d.data.studio.seeds import stable_seed
from pose3d.geometry.camera import project


@pytest.fixture(scope="module")
def cams():
    return rig.make_rig("S1", 4, 160, 160, seed=0)


def test_rig_layout(cams):
    assert list(cams) == ["54138969", "55011271", "58860488", "60457274"]
    for c in cams.values():
        C = c.center
        assert 4.3 < np.hypot(C[0], C[1]) < 4.7 and 1.4 < C[2] < 1.6
        uv = c.project(np.array([[0.0, 0.0, 1.0]]))[0]  # the volume centre is near the image centre
        assert np.all(np.abs(uv - 80) < 16)
        assert c.dist[0] < -0.15  # Human3.6M-like barrel distortion
        assert abs(c.K[0, 0] - 1145 * 0.16) < 10
    other = rig.make_rig("S9", 4, 160, 160, seed=0)
    d = [np.linalg.norm(cams[n].center - other[n].center) for n in cams]
    assert 0 < max(d) < 0.11  # a small per-subject change of the extrinsics
    assert rig.camera_names(6)[4:] == ["cam05", "cam06"]


def test_pixel_rays_agree_with_project(cams):
    c = cams["55011271"]
    rays = R.pixel_rays(c).astype(np.float64)
    pts_cam = rays[::7, ::7].reshape(-1, 3) * 3.7
    x_world = (pts_cam - c.t) @ c.R
    t = c.tensors()
    uv = project(torch.as_tensor(x_world)[None], t["K"], t["dist"], t["R"], t["t"])[0].numpy()
    v, u = np.mgrid[0:160:7, 0:160:7]
    assert np.abs(uv - np.stack([u.ravel(), v.ravel()], -1)).max() < 1e-3


def test_silhouette_covers_projected_joints(cams):
    subj = A.make_subject("S1", 0)
    m = M.generate(subj, "Walking", 1.0, 10.0, 0)
    body = R.build_body(m.positions, subj)
    light = R.Lighting.random(np.random.default_rng(0))
    colors = R.material_colors(subj)
    for name in ("54138969", "58860488"):
        view = R.CameraView(cams[name], 1)
        for k in (0, 5, 9):
            img, depth = R.render_frame(view, body, k, colors, light)
            uv = cams[name].project(m.positions[k])
            ij = np.round(uv).astype(int)
            inside = (ij[:, 0] >= 0) & (ij[:, 0] < 160) & (ij[:, 1] >= 0) & (ij[:, 1] < 160)
            assert inside.all()
            z = depth[ij[:, 1], ij[:, 0]]
            # every joint lies inside the body: its pixel sees the body, never behind the joint
            # (a nearer body part may occlude it: then the surface is well in front)
            zj = (m.positions[k] @ cams[name].R.T + cams[name].t)[:, 2]
            assert np.isfinite(z).all()
            assert np.all(z <= zj + 1e-3)
            assert np.mean(z > zj - 0.2) > 0.6
            # the background stays background away from the person
            yy, xx = np.mgrid[0:160, 0:160]
            far = np.min((xx[..., None] - uv[:, 0]) ** 2 + (yy[..., None] - uv[:, 1]) ** 2, -1) > 30 ** 2
            assert np.isinf(depth[far]).all()
            assert np.array_equal(img[far], view.background[far])


def test_occlusion_nearest_surface_wins():
    """Two capsules on one ray: the z-buffer keeps the nearer, whatever the drawing order."""
    D = np.array([[[0.0, 0.0, 1.0]]], np.float32)
    rr = (D * D).sum(-1)
    t1, _ = R._hit_capsule(D, np.array([-1, 0, 3], np.float32), np.array([1, 0, 3], np.float32), np.float32(0.1), rr)
    t2, _ = R._hit_capsule(D, np.array([0, -1, 2], np.float32), np.array([0, 1, 2], np.float32), np.float32(0.2), rr)
    assert abs(t1[0, 0] - 2.9) < 1e-5 and abs(t2[0, 0] - 1.8) < 1e-5
    te, n = R._hit_ellipsoid(D, np.array([0, 0, 5], np.float32), np.eye(3, dtype=np.float32),
                             np.array([1, 1, 0.5], np.float32))
    assert abs(te[0, 0] - 4.5) < 1e-5 and np.allclose(n[0, 0], [0, 0, -1], atol=1e-5)


def _tiny_params(tmp_path, **studio):
    d = yaml.safe_load(open("params.yaml"))
    d["studio"].update(subjects={"S1": "train", "S9": "test"}, actions=["Walking", "Sitting"],
                       seconds=0.6, width=96, height=96, num_cameras=2, workers=1)
    d["studio"].update(studio)
    d["base"]["mlflow"] = False
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def _run_stage(tmp_path, params):
    import importlib.util

    spec = importlib.util.spec_from_file_location("studio_stage", "stages/studio.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "out"
    args = ["--params", str(params), "--mocap", str(out / "mocap.h5"), "--cameras", str(out / "cameras.json"),
            "--videos", str(out / "videos"), "--metrics", str(out / "metrics.json"), "--timings", str(out / "timings.json")]
    try:
        rc = mod.main(args)
    except SystemExit as e:  # cli.setup exits 2 on a params error
        rc = e.code
    return rc, out


def test_stage_writes_layout_and_videos_match(tmp_path):
    rc, out = _run_stage(tmp_path, _tiny_params(tmp_path))
    assert rc == 0
    seqs = io.read_mocap(out / "mocap.h5")
    assert {(s.subject, s.action, s.split) for s in seqs} == {
        ("S1", "Walking", "train"), ("S1", "Sitting", "train"), ("S9", "Walking", "test"), ("S9", "Sitting", "test")}
    cams = io.load_cameras(out / "cameras.json")
    assert set(cams) == {"S1", "S9"} and list(cams["S1"]) == ["54138969", "55011271"]
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["video_frames"] == 4 * 2 * 6
    for s in seqs:
        for cname, cam in cams[s.subject].items():
            cap = cv2.VideoCapture(str(io.video_path(out / "videos", s.subject, s.action, cname)))
            frames = []
            while True:
                ok, f = cap.read()
                if not ok:
                    break
                frames.append(f)
            assert len(frames) == len(s.positions_world) == 6
            # the decoded frame differs from the empty room where the joints project
            bg = R.CameraView(cam, stable_seed(0, "room")).background
            uv = np.round(cam.project(s.positions_world[3])).astype(int)
            rgb = frames[3][..., ::-1].astype(float) / 255
            diff = np.abs(rgb - bg).sum(-1)  # lighting gain differs too, so compare contrasts
            at_joints = np.median(diff[uv[:, 1], uv[:, 0]])
            assert at_joints > 0.15


def test_stage_bad_input_leaves_nothing(tmp_path, caplog):
    # missing mocap file
    rc, out = _run_stage(tmp_path, _tiny_params(tmp_path, source="mocap", mocap_path=str(tmp_path / "none.npz")))
    assert rc == 1 and (not out.exists() or not any(out.rglob("*")))
    assert "none.npz: file not found" in caplog.text
    # truncated BVH in a mocap folder
    d = tmp_path / "mocap" / "S1"
    d.mkdir(parents=True)
    (d / "walk.bvh").write_text("HIERARCHY\nROOT Hips\n{\n OFFSET 0 0 0\n CHANNELS 3 Xposition Yposition Zposition\n")
    rc, out = _run_stage(tmp_path, _tiny_params(tmp_path, source="mocap", mocap_path=str(tmp_path / "mocap"),
                                                subjects={"S1": "train"}, actions=[]))
    assert rc == 1 and not any(out.rglob("*.mp4")) and not (out / "mocap.h5").exists()
    assert "walk.bvh: truncated" in caplog.text
    # a skeleton the name mapping does not know
    (d / "walk.bvh").write_text("HIERARCHY\nROOT Base\n{\n OFFSET 0 0 0\n CHANNELS 3 Xposition Yposition Zposition\n"
                                " End Site\n {\n  OFFSET 0 1 0\n }\n}\nMOTION\nFrames: 1\nFrame Time: 0.01\n0 0 0\n")
    rc, out = _run_stage(tmp_path, _tiny_params(tmp_path, source="mocap", mocap_path=str(tmp_path / "mocap"),
                                                subjects={"S1": "train"}, actions=[]))
    assert rc == 1 and not (out / "mocap.h5").exists() and not (out / "videos").exists()
    assert "walk.bvh: unknown skeleton: no source joint for r_hip" in caplog.text
    # non-positive fps: a params error naming the key
    rc, out = _run_stage(tmp_path, _tiny_params(tmp_path, fps=0.0))
    assert rc == 2 and not (out / "mocap.h5").exists()
    assert "studio.fps = 0.0: must be > 0" in caplog.text
