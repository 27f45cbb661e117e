"""Evaluation on tiny synthetic ground truth with known errors: exact numbers by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pose3d.data.contracts import read_predictions
from pose3d.data.io import DataError, Sequence, write_table
from pose3d.data.views import GroundTruth
from pose3d.tasks.evaluate import (display_sequence, evaluate_files, evaluate_predictions,
                               metrics_json, per_action_table, per_joint_table,
                               render_report)
from pose3d.geometry.camera import Camera
from pose3d.geometry.rotations import rotation_about_axis
from pose3d.skeleton import JOINT_INDEX, JOINT_NAMES, NUM_JOINTS

J = NUM_JOINTS
RELIABLE = [n for n in JOINT_NAMES if n not in ("spine", "thorax", "neck_nose", "head_top")]


def _pose(rng, T):
    base = rng.normal(scale=0.3, size=(J, 3))
    drift = np.cumsum(rng.normal(scale=0.01, size=(T, 1, 3)), axis=0)
    return (base[None] + drift + rng.normal(scale=0.005, size=(T, J, 3))).astype(np.float32)


@pytest.fixture()
def gt():
    rng = np.random.default_rng(0)
    seqs = [Sequence("S9", "walk", _pose(rng, 6), 30.0, "test"),
            Sequence("S9", "jump", _pose(rng, 4), 30.0, "test"),
            Sequence("S1", "walk", _pose(rng, 5), 30.0, "train")]
    R = rotation_about_axis(0.7, "z").double().numpy() @ rotation_about_axis(-1.2, "x").double().numpy()
    K = [[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]
    cams = {s: {"c0": Camera(K=K, dist=np.zeros(5), R=R, t=[0.1, 0.2, 4.0], width=640, height=480, name="c0"),
                "c1": Camera(K=K, dist=np.zeros(5), R=np.eye(3), t=[0.0, 0.0, 5.0], width=640, height=480,
                             name="c1")} for s in ("S9", "S1")}
    return GroundTruth(seqs, cams)


def _write(path, keys, joints, coord_frame, names=JOINT_NAMES, **meta):
    cols = {"subject": np.asarray(keys["subject"], dtype=str), "action": np.asarray(keys["action"], dtype=str),
            "camera": np.asarray(keys["camera"], dtype=str), "frame": np.asarray(keys["frame"], np.int64),
            "joints_3d": np.asarray(joints, np.float32).reshape(len(keys["frame"]), -1)}
    write_table(path, cols, {"joint_names": list(names), "method": path.stem, "coord_frame": coord_frame,
                             "units": "m", **meta})
    return path


def _keys(gt, split="test", camera=""):
    rows = []
    for s in gt.sequences:
        if split == "all" or s.split == split:
            for f in range(s.positions_world.shape[0]):
                rows.append((s.subject, s.action, camera, f))
    return pd.DataFrame(rows, columns=["subject", "action", "camera", "frame"])


def test_constant_offset_on_one_joint_world(tmp_path, gt):
    keys = _keys(gt, "all")
    x = gt.world(keys).copy()
    x[:, JOINT_INDEX["l_wrist"], 0] += 0.010  # 10 mm on one joint
    res = evaluate_files([_write(tmp_path / "tri.parquet", keys, x, "world")], gt)[0]
    assert res.summary["mpjpe_mm"] == pytest.approx(10 / 17, abs=1e-3)
    assert res.summary["mpjpe_mm_actionwise"] == pytest.approx(10 / 17, abs=1e-3)
    assert res.summary["n_frames"] == 10  # test split only: 6 + 4 frames
    assert res.summary["pck3d_150mm"] == 1.0
    assert res.summary["mpjve_mm"] == pytest.approx(0.0, abs=1e-9)  # constant offset: no velocity error
    pj = res.per_joint.set_index("joint")["mpjpe_mm"]
    assert pj["l_wrist"] == pytest.approx(10.0, abs=1e-3) and pj.drop("l_wrist").abs().max() < 1e-3
    # Procrustes minimises squared error, so it spreads the one-joint error: not below P1 here
    assert 10 / 17 < res.summary["pa_mpjpe_mm"] < 10.0


def test_camera_frame_and_subset(tmp_path, gt):
    keys = pd.concat([_keys(gt, camera="c0"), _keys(gt, camera="c1")], ignore_index=True)
    x = gt.target(read_predictions(_write(tmp_path / "tmp.parquet", keys, np.zeros((len(keys), J, 3)),
                                          "camera")), keys).copy()
    x[:, JOINT_INDEX["head_top"], 2] += 0.034  # 34 mm on an unreliable joint, in camera z
    res = evaluate_predictions(read_predictions(_write(tmp_path / "cam.parquet", keys, x, "camera")), gt,
                               joint_subset=RELIABLE, subset_name="reliable13")
    assert res.summary["mpjpe_mm"] == pytest.approx(2.0, abs=1e-3)  # 34 / 17
    assert res.summary["mpjpe_mm_reliable13"] == pytest.approx(0.0, abs=1e-3)
    assert res.summary["n_frames"] == 20
    # the same predictions compared in the world frame would be wrong by metres
    bad = evaluate_predictions(read_predictions(_write(tmp_path / "bad.parquet", keys, x, "world")), gt)
    assert bad.summary["mpjpe_mm"] > 100


def test_reference_camera_similarity_aligned(tmp_path, gt):
    keys = _keys(gt)
    xw = torch.from_numpy(gt.world(keys))
    R = rotation_about_axis(0.4, "y").double()
    x = (2.5 * xw @ R.T + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)).numpy()
    p = _write(tmp_path / "prob.parquet", keys, x, "reference_camera", reference_camera="c1")
    res = evaluate_predictions(read_predictions(p), gt)
    assert res.coord_frame == "reference_camera"
    for k in ("mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "mpjve_mm"):
        assert res.summary[k] == pytest.approx(0.0, abs=1e-3), k
    # reference_camera without its name is refused
    with pytest.raises(DataError, match="reference_camera"):
        read_predictions(_write(tmp_path / "noref.parquet", keys, x, "reference_camera"))


def test_framewise_vs_actionwise_by_hand(tmp_path, gt):
    keys = _keys(gt)
    x = gt.world(keys).copy()
    walk = (keys["action"] == "walk").to_numpy()
    x[walk, JOINT_INDEX["r_knee"], 1] += 0.017  # 1 mm MPJPE on the 6 walk frames
    x[~walk, JOINT_INDEX["r_knee"], 1] += 0.068  # 4 mm on the 4 jump frames
    res = evaluate_predictions(read_predictions(_write(tmp_path / "m.parquet", keys, x, "world")), gt)
    assert res.summary["mpjpe_mm"] == pytest.approx((6 * 1 + 4 * 4) / 10, abs=1e-3)  # 2.2
    assert res.summary["mpjpe_mm_actionwise"] == pytest.approx((1 + 4) / 2, abs=1e-3)  # 2.5
    pa = per_action_table([res]).set_index("action")
    assert pa.loc["walk", "mpjpe_mm"] == pytest.approx(1.0, abs=1e-3)
    assert pa.loc["jump", "n_frames"] == 4


def test_mpjve_consecutive_frames_only(tmp_path, gt):
    keys = _keys(gt)
    x = gt.world(keys).copy()
    keep = ~((keys["action"] == "walk") & (keys["frame"] == 2)).to_numpy()  # a gap in walk
    keys, x = keys[keep].reset_index(drop=True), x[keep]
    odd = (keys["frame"] % 2 == 1).to_numpy()
    x[odd, JOINT_INDEX["l_ankle"], 0] += 0.017  # alternating: velocity error 17 mm on one joint
    res = evaluate_predictions(read_predictions(_write(tmp_path / "v.parquet", keys, x, "world")), gt)
    # walk frames 0,1,3,4,5 -> pairs (0,1),(3,4),(4,5); jump 0..3 -> 3 pairs; each 1 mm
    assert len(res.pairs) == 6
    assert res.summary["mpjve_mm"] == pytest.approx(1.0, abs=1e-3)


def test_missing_joint_and_failed_rows(tmp_path, gt):
    keys = _keys(gt)
    x = gt.world(keys).copy()
    names = [n for n in JOINT_NAMES if n != "neck_nose"]  # a 16-joint layout, other order
    names = names[::-1]
    from pose3d.skeleton import reorder
    x16 = reorder(x, JOINT_NAMES, names)
    x16[0, 3] = np.nan  # one failed row
    res = evaluate_predictions(read_predictions(_write(tmp_path / "hg.parquet", keys, x16, "world",
                                                       names=names)), gt)
    assert "neck_nose" not in res.joints_evaluated and len(res.joints_evaluated) == 16
    assert res.summary["valid_fraction"] == pytest.approx(9 / 10)
    assert res.summary["mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)


def test_errors_name_the_file(tmp_path, gt):
    missing = tmp_path / "nope.parquet"
    with pytest.raises(DataError, match="nope.parquet"):
        evaluate_files([missing], gt)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="junk.parquet"):
        read_predictions(junk)
    keys = _keys(gt)
    p = _write(tmp_path / "nof.parquet", keys, gt.world(keys), "sideways")
    with pytest.raises(DataError, match="nof.parquet.*coord_frame"):
        read_predictions(p)
    keys2 = keys.copy()
    keys2.loc[0, "frame"] = 99
    p = _write(tmp_path / "far.parquet", keys2, gt.world(keys), "world")
    with pytest.raises(DataError, match="far.parquet.*outside"):
        evaluate_files([p], gt)


def test_tables_json_report(tmp_path, gt):
    keys = _keys(gt)
    a = evaluate_predictions(read_predictions(_write(tmp_path / "triangulate_ransac.parquet", keys,
                                                     gt.world(keys) + 0.001, "world")), gt)
    m = metrics_json([a])
    json.dumps(m, allow_nan=False)
    assert list(m["triangulate_ransac"]) == ["mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "mpjve_mm",
                                             "pck3d_150mm", "auc", "valid_fraction"]
    assert m["triangulate_ransac"]["mpjpe_mm"] == round(a.summary["mpjpe_mm"], 4)  # root-aligned: ~0
    assert len(per_joint_table([a])) == J
    subj, act, cam, frames, gtw, poses = display_sequence([a], gt, n_frames=3, step=1)
    assert (subj, len(frames), gtw.shape, poses["triangulate_ransac"].shape) == ("S9", 3, (3, J, 3), (3, J, 3))
    md = render_report([a], gt, split="test", pck_threshold=0.15, figures={"bars": "figures/x.png"},
                       stage_metrics={"lift_martinez": {"val_mpjpe_mm": 50.0}}, detect_2d={"pck_0.5": 0.9})
    assert "Human3.6M" in md and "27.4" in md and "figures/x.png" in md and "val_mpjpe_mm" in md


@pytest.fixture()
def studio(tmp_path, gt):
    """A tiny studio layout on disk: mocap, cameras, two predictions, detections, a video, curves."""
    from pose3d.data.io import save_cameras, write_mocap

    d = tmp_path / "data"
    write_mocap(d / "mocap.h5", gt.sequences)
    save_cameras(d / "cameras.json", gt.cameras)
    kc = pd.concat([_keys(gt, camera="c0"), _keys(gt, camera="c1")], ignore_index=True)
    kw = _keys(gt)
    cam = read_predictions(_write(d / "tmp.parquet", kc, np.zeros((len(kc), J, 3)), "camera"))
    preds = [_write(d / "predictions" / "martinez.parquet", kc, gt.target(cam, kc) + 0.02, "camera"),
             _write(d / "predictions" / "triangulate_ransac.parquet", kw, gt.world(kw) + 0.001, "world")]
    (d / "tmp.parquet").unlink()
    kp = np.concatenate([gt.cameras["S9"][c].project(gt.world(kw)) for c in ("c0", "c1")])
    write_table(d / "detections_2d.parquet",
                {"subject": np.asarray(kc["subject"], str), "action": np.asarray(kc["action"], str),
                 "camera": np.asarray(kc["camera"], str), "frame": kc["frame"].to_numpy(np.int64),
                 "keypoints_px": kp, "scores": np.ones((len(kc), J))}, {})
    curves = d / "curves_lift_martinez.csv"
    pd.DataFrame({"epoch": [0, 1], "loss": [2.0, 1.0]}).to_csv(curves, index=False)
    stage = d / "lift_martinez.json"
    stage.write_text(json.dumps({"val_mpjpe_mm": 61.0}))
    return {"dir": d, "mocap": d / "mocap.h5", "cameras": d / "cameras.json", "predictions": preds,
            "detections": d / "detections_2d.parquet", "curves": [curves], "stage_metrics": [stage]}


def test_run_evaluation_writes_everything(tmp_path, studio):
    from pose3d.tasks.evaluate import FIGURES, run_evaluation
    from pose3d.tasks.evaluate.report import skeleton_video

    out = tmp_path / "reports"
    res = run_evaluation(mocap=studio["mocap"], cameras=studio["cameras"], predictions=studio["predictions"],
                         detections=studio["detections"], videos_dir=studio["dir"] / "videos",
                         curves=studio["curves"], stage_metrics=studio["stage_metrics"],
                         metrics_dir=out / "metrics", plots_dir=out / "plots",
                         figures_dir=out / "figures", report=out / "report.md", gif_frames=3, gif_dpi=30,
                         video=out / "figures" / "skeleton.mp4", video_method="martinez")
    assert sorted(p.name for p in (out / "metrics").iterdir()) == ["martinez.json", "triangulate_ransac.json"]
    m = {n: json.loads((out / "metrics" / f"{n}.json").read_text()) for n in ("martinez", "triangulate_ransac")}
    # one headline file per method: these keys, in this order, nothing else (no per-action, no counts)
    keys = ["mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "mpjve_mm", "pck3d_150mm", "auc", "valid_fraction"]
    assert list(m["martinez"]) == keys and list(m["triangulate_ransac"]) == keys
    assert m["martinez"]["mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)  # constant offset, root-aligned
    assert m["triangulate_ransac"]["mpjpe_mm"] == round(res["flat"]["triangulate_ransac.mpjpe_mm"], 4)
    assert res["flat"]["triangulate_ransac.n_frames"] == 10 and res["flat"]["martinez.n_frames"] == 20
    for name in FIGURES.values():
        assert (out / "figures" / name).stat().st_size > 500, name
    assert len(pd.read_csv(out / "plots" / "per_joint.csv")) == 2 * J
    # the skeleton video: every frame of the animation's sequence, input beside the 3D
    from pose3d.data.video import video_info
    gt = GroundTruth.load(studio["mocap"], studio["cameras"])
    subject, action = display_sequence(res["results"], gt)[:2]
    info = video_info(out / "figures" / "skeleton.mp4")
    assert info.num_frames == len(gt.sequence(subject, action).positions_world)
    assert info.width == 2 * info.height
    with pytest.raises(DataError, match="video_method = 'hg3d'"):
        skeleton_video(res["results"], gt, None, None, "S9", "walk", "c0", "hg3d", out / "x.mp4")
    with pytest.raises(DataError, match="no camera 'c9'"):
        skeleton_video(res["results"], gt, None, None, "S9", "walk", "c9", "martinez", out / "x.mp4")
    assert not (out / "x.mp4").exists()
    md = (out / "report.md").read_text()
    assert "figures/evaluate_skeletons.gif" in md and "val_mpjpe_mm" in md
    assert res["flat"]["martinez.mpjpe_mm"] == pytest.approx(0.0, abs=1e-3)


def test_stage_missing_prediction_fails_cleanly(tmp_path, studio, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    params = tmp_path / "params.yaml"
    params.write_text("base: {mlflow: false, device: cpu}\nevaluate: {gif_frames: 3}\n")
    out = tmp_path / "reports"
    cmd = [sys.executable, str(repo / "stages" / "evaluate.py"), "--params", str(params),
           "--mocap", str(studio["mocap"]), "--cameras", str(studio["cameras"]),
           "--predictions", str(studio["predictions"][0]), str(studio["dir"] / "predictions" / "hg3d.parquet"),
           "--metrics-dir", str(out / "metrics"), "--plots-dir", str(out / "plots"),
           "--figures-dir", str(out / "figures"), "--report", str(out / "report.md")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "hg3d.parquet: file not found" in r.stderr
    assert not out.exists()  # nothing half-written


def test_real_mocap_reliable_subset(tmp_path, real_mocap_npz):
    """On real optical mocap (shared data, skipped when absent): errors confined to the four
    approximate joints (spine, thorax, neck_nose, head_top) vanish on the reliable subset."""
    z = np.load(real_mocap_npz, allow_pickle=False)
    reliable = [str(n) for n, ok in zip(z["joint_names"], z["reliable_joint_mask"]) if ok]
    assert set(reliable) == set(RELIABLE)
    clip = z["clip_id"]
    seqs = []
    for c in np.unique(clip)[:3]:
        x = z["positions"][clip == c].astype(np.float32) / 1000.0  # mm -> m
        seqs.append(Sequence("real", str(c), x, float(z["fps"]), "test"))
    gt = GroundTruth(seqs, {})
    keys = _keys(gt)
    x = gt.world(keys).copy()
    bad = ~z["reliable_joint_mask"]
    x[:, bad, 0] += 0.050
    res = evaluate_predictions(read_predictions(_write(tmp_path / "real.parquet", keys, x, "world")), gt,
                               joint_subset=reliable, subset_name="reliable13")
    assert res.summary["mpjpe_mm"] == pytest.approx(4 * 50 / 17, abs=1e-2)
    assert res.summary["mpjpe_mm_reliable13"] == pytest.approx(0.0, abs=1e-2)
    assert res.summary["n_frames"] == len(keys)
