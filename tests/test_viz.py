"""viz writes real, non-empty pictures; the 2D overlay colours left and right differently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pose3d import viz
from pose3d.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS, to_hg3d_order, HG3D_NAMES

PNG = b"\x89PNG"


def _pose(rng):
    x = rng.normal(scale=0.2, size=(NUM_JOINTS, 3))
    x[JOINT_INDEX["head_top"], 2] += 0.8  # z up
    return x


def test_draw_skeleton_2d_colours_by_side():
    img = np.zeros((100, 100, 3), np.uint8)
    kp = np.full((NUM_JOINTS, 2), np.nan)
    kp[JOINT_INDEX["l_hip"]] = (10, 10)
    kp[JOINT_INDEX["l_knee"]] = (10, 90)
    kp[JOINT_INDEX["r_hip"]] = (90, 10)
    kp[JOINT_INDEX["r_knee"]] = (90, 90)
    out = viz.draw_skeleton_2d(img, kp)
    assert img.sum() == 0  # input untouched
    assert tuple(out[50, 10]) == viz.BGR_LEFT and tuple(out[50, 90]) == viz.BGR_RIGHT
    low = viz.draw_skeleton_2d(img, kp, scores=np.zeros(NUM_JOINTS), min_score=0.5)
    assert low.sum() == 0
    # another layout, by names
    hg = viz.draw_skeleton_2d(img, to_hg3d_order(kp), joint_names=HG3D_NAMES)
    assert tuple(hg[50, 10]) == viz.BGR_LEFT
    with pytest.raises(ValueError, match="expected shape"):
        viz.draw_skeleton_2d(img, kp[:5])


def test_figures_written(tmp_path):
    rng = np.random.default_rng(0)
    summary = {"martinez": {"mpjpe_mm": 50.0, "pa_mpjpe_mm": 40.0, "n_mpjpe_mm": 45.0, "mpjve_mm": 3.0},
               "triangulate_probabilistic": {"mpjpe_mm": 30.0, "pa_mpjpe_mm": 25.0, "n_mpjpe_mm": None,
                                             "mpjve_mm": 2.0}}
    p = viz.bar_methods(summary, tmp_path / "m.png", marked=["triangulate_probabilistic"])
    assert p.read_bytes()[:4] == PNG
    table = pd.DataFrame({"method": ["a", "a", "b", "b"], "action": ["walk", "jump"] * 2,
                          "mpjpe_mm": [1.0, 2.0, 3.0, 4.0]})
    assert viz.bar_grouped(table, "action", tmp_path / "a.png").stat().st_size > 1000
    joints = pd.DataFrame({"method": ["a"] * NUM_JOINTS, "joint": list(JOINT_NAMES),
                           "mpjpe_mm": rng.random(NUM_JOINTS)})
    assert viz.bar_grouped(joints, "joint", tmp_path / "j.png").read_bytes()[:4] == PNG
    csv = tmp_path / "curves_lift_martinez.csv"
    pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [3.0, 2.0, 1.0], "val_mpjpe_mm": [90, 70, 60]}).to_csv(csv, index=False)
    assert viz.plot_curves([csv], tmp_path / "c.png").read_bytes()[:4] == PNG
    img = np.full((120, 160, 3), 40, np.uint8)
    kp = rng.uniform(10, 110, size=(NUM_JOINTS, 2))
    assert viz.overlay_2d(img, kp, tmp_path / "o.png", gt_kp=kp + 1, title="S9").read_bytes()[:4] == PNG
    assert not list(tmp_path.glob(".*"))  # no temporary leftovers


def test_animation_gif(tmp_path):
    rng = np.random.default_rng(1)
    T = 4
    gt = np.stack([_pose(rng) for _ in range(T)])
    pred = gt + rng.normal(scale=0.02, size=gt.shape)
    pred[1] = np.nan  # a missing frame must not break rendering
    p = viz.animate_skeletons(gt, {"a": pred, "b": gt}, tmp_path / "anim.gif", title="S9/walk")
    data = p.read_bytes()
    assert data[:6] in (b"GIF89a", b"GIF87a") and 1000 < len(data) < 2_000_000
    from PIL import Image

    with Image.open(p) as im:
        assert im.n_frames == T
    assert viz.up_axis(gt) == 2


def test_read_video_frame(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "v.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for k in range(3):
        w.write(np.full((48, 64, 3), 60 * k, np.uint8))
    w.release()
    f = viz.read_video_frame(path, 2)
    assert f.shape == (48, 64, 3) and abs(int(f.mean()) - 120) < 10
    from pose3d.data.io import DataError

    with pytest.raises(DataError, match="missing.mp4"):
        viz.read_video_frame(tmp_path / "missing.mp4", 0)
