"""Handling real detector errors: left/right swap hypotheses in RANSAC, the detector-error model
fitted on training subjects only (threshold, score calibration), and the temporal smoother."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pose3d.confidence import fit_score_calibration, pav, score_error_spearman
from pose3d.data.contracts import write_detections
from pose3d.data.io import Sequence, save_cameras, write_mocap
from pose3d.geometry.camera import Camera
from pose3d.geometry.triangulation import triangulate, triangulate_ransac
from pose3d.skeleton import FLIP_PERM, JOINT_INDEX, JOINT_NAMES
from pose3d.smoothing import butterworth_filtfilt
from pose3d.tasks.triangulate import ransac_threshold, train_detector_errors
from test_triangulation import P_of, make_points, make_rig, observe

ARMS = [JOINT_INDEX[n] for n in ("l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist")]
J = len(JOINT_NAMES)


def swap_arms(uv: torch.Tensor, view: int) -> torch.Tensor:
    """uv (*, V, J, 2) with view ``view``'s left and right arm labels exchanged."""
    out = uv.clone()
    out[..., view, ARMS, :] = uv[..., view, [FLIP_PERM[j] for j in ARMS], :]
    return out


# --------------------------------------------------------------------------- swap hypotheses
def test_swapped_arms_view_recovered_only_with_swap_hypotheses():
    # three views, all three required (min_inliers 3): view 1's arms are swapped. Without swap
    # hypotheses no three views agree on an arm joint -> NaN; with them the swapped view's mirror
    # labels complete the consensus and the arm joints come back exact.
    cams, X = make_rig(V=3), make_points((6, J))
    uv = swap_arms(observe(X, cams), view=1)
    plain = triangulate(uv, cams, method="ransac", ransac_threshold_px=4.0, ransac_min_inliers=3)
    assert torch.isnan(plain.points_3d[:, ARMS]).all()
    other = [j for j in range(J) if j not in ARMS]
    assert (plain.points_3d[:, other] - X[:, other]).abs().max() < 1e-9
    res = triangulate(uv, cams, method="ransac", ransac_threshold_px=4.0, ransac_min_inliers=3,
                      swap_perm=FLIP_PERM)
    assert (res.points_3d - X).abs().max() < 1e-9
    assert res.used.all()
    assert res.swapped[:, 1, ARMS].all() and res.swapped.sum() == 6 * len(ARMS)
    assert res.reprojection_error_px.max() < 1e-6


def test_swap_hypotheses_take_the_swapped_view_as_inlier_with_four_views():
    # with 4 views, plain RANSAC drops the swapped view as an outlier; the swap hypothesis uses it
    cams, X = make_rig(V=4), make_points((5, J))
    uv = swap_arms(observe(X, cams), view=2)
    plain = triangulate(uv, cams, method="ransac", ransac_threshold_px=4.0)
    assert not plain.used[:, 2, ARMS].any() and plain.swapped is None
    res = triangulate(uv, cams, method="ransac", ransac_threshold_px=4.0, swap_perm=FLIP_PERM, refine=True)
    assert (res.points_3d - X).abs().max() < 1e-9 and res.used.all()
    assert res.swapped[:, 2, ARMS].all() and res.swapped.sum() == 5 * len(ARMS)


def test_swap_hypotheses_leave_clean_views_and_midline_joints_alone():
    cams, X = make_rig(V=4), make_points((5, J))
    uv = observe(X, cams)
    uv[:, 1, JOINT_INDEX["head_top"]] += 60.0  # an outlier on a midline joint is not a swap
    res = triangulate(uv, cams, method="ransac", ransac_threshold_px=4.0, swap_perm=FLIP_PERM)
    assert not res.swapped.any()
    assert (res.points_3d - X).abs().max() < 1e-9
    assert not res.used[:, 1, JOINT_INDEX["head_top"]].any()


def test_swap_perm_errors():
    cams, X = make_rig(V=3), make_points((2, J))
    uv = observe(X, cams)
    with pytest.raises(ValueError, match="involution"):
        triangulate_ransac(uv, P_of(cams), threshold=2.0, swap_perm=[1] * J)
    with pytest.raises(ValueError, match="involution"):
        triangulate_ransac(uv, P_of(cams), threshold=2.0, swap_perm=[J] * J)
    with pytest.raises(ValueError, match="swap_penalty"):
        triangulate_ransac(uv, P_of(cams), threshold=2.0, swap_perm=FLIP_PERM, swap_penalty=1.0)
    with pytest.raises(ValueError, match="method='ransac'"):
        triangulate(uv, cams, swap_perm=FLIP_PERM)


# --------------------------------------------------------------------------- training-subject model
def _tiny_studio(tmp_path, test_offset_px: float = 0.0, seed: int = 0):
    """Two train and one test subject, 3 cameras, detections = projected GT + noise growing as
    the score falls; the test subject's detections are further offset by ``test_offset_px``."""
    rig = make_rig(V=3, distort=False)
    names = ["c0", "c1", "c2"]
    cams = {c: Camera(K=rig["K"][i].numpy(), dist=rig["dist"][i].numpy(), R=rig["R"][i].numpy(),
                      t=rig["t"][i].numpy(), width=1280, height=720, name=c) for i, c in enumerate(names)}
    rng = np.random.default_rng(seed)
    seqs, keys, kps, scs = [], [], [], []
    for subj, split in (("S1", "train"), ("S5", "train"), ("S9", "test")):
        X = make_points((40, J), seed=int(subj[1:])).numpy().astype(np.float32)
        seqs.append(Sequence(subj, "Walking", X, 10.0, split))
        uv = observe(torch.as_tensor(X, dtype=torch.float64), rig).numpy()  # (T, V, J, 2)
        for v, c in enumerate(names):
            s = rng.uniform(0.3, 1.0, size=(40, J))
            noise = rng.normal(size=(40, J, 2)) * (4.0 * (1.0 - s))[..., None]
            kp = uv[:, v] + noise + (test_offset_px if split == "test" else 0.0)
            for t in range(40):
                keys.append((subj, "Walking", c, t))
            kps.append(kp)
            scs.append(s)
    write_mocap(tmp_path / "mocap.h5", seqs)
    save_cameras(tmp_path / "cameras.json", {s: cams for s in ("S1", "S5", "S9")})
    write_detections(tmp_path / "det.parquet", pd.DataFrame(keys, columns=["subject", "action", "camera", "frame"]),
                     np.concatenate(kps), np.concatenate(scs))
    return str(tmp_path / "mocap.h5"), str(tmp_path / "cameras.json"), str(tmp_path / "det.parquet")


def test_threshold_and_calibration_come_from_train_subjects_only(tmp_path):
    a = _tiny_studio(tmp_path / "a")
    b = _tiny_studio(tmp_path / "b", test_offset_px=50.0)  # test detections far off: must not matter
    da, db = train_detector_errors(*a, score_threshold=0.2), train_detector_errors(*b, score_threshold=0.2)
    assert da.errors.shape == (2 * 40 * 3, J)  # train subjects x frames x views only
    np.testing.assert_array_equal(da.errors, db.errors)
    ta, tb = ransac_threshold(da.errors, 0.5, 2.5), ransac_threshold(db.errors, 0.5, 2.5)
    assert ta == tb and 0 < ta < 10
    # the synthetic scores do rank the errors: strongly negative rank correlation
    rho = score_error_spearman(da.scores, da.errors)
    assert rho.shape == (J,) and (rho < -0.5).all()
    ca, cb = fit_score_calibration(da.scores, da.errors), fit_score_calibration(db.scores, db.errors)
    np.testing.assert_array_equal(ca.sigma, cb.sigma)


def test_pav_and_calibration_are_monotone():
    y = np.array([3.0, 1.0, 2.0, 5.0, 4.0, 4.0, 0.0])
    f = pav(y)
    assert (np.diff(f) >= 0).all() and np.isclose(f.sum(), y.sum())  # pooled means keep the total
    np.testing.assert_allclose(f, [2, 2, 2, 3.25, 3.25, 3.25, 3.25])
    g = pav(y, increasing=False)
    assert (np.diff(g) <= 0).all()
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 1, size=(4000, 3))
    err = np.abs(rng.normal(size=(4000, 3))) * (5 - 4 * s) + (rng.uniform(size=(4000, 3)) < 0.05) * 40
    cal = fit_score_calibration(s, err)
    q = np.linspace(-0.2, 1.2, 300)[:, None].repeat(3, 1)
    w = cal.weights(q)
    assert (np.diff(w, axis=0) >= -1e-15).all()  # non-decreasing in the score, every joint
    assert (w > 0).all() and (w <= 1 + 1e-12).all() and np.isclose(w.max(), 1.0)
    assert np.isnan(cal.weights(np.full((1, 3), np.nan))).all()
    with pytest.raises(ValueError, match="joints"):
        cal.weights(np.zeros((2, 4)))


# --------------------------------------------------------------------------- smoothing
def test_butterworth_keeps_constant_velocity_and_reduces_noise():
    fps, T = 10.0, 60
    t = np.arange(T)[:, None, None] / fps
    X = np.array([0.2, -0.1, 1.0]) + t * np.array([0.5, -0.3, 0.1])  # (T, 1, 3), m and m/s
    Y = butterworth_filtfilt(X, fps, cutoff_hz=2.0, order=2)
    # the line is removed before filtering: unchanged to rounding (1e-12 m), the ends included
    # (plain filtfilt bends the last frames by ~2e-5 m at 0.5 m/s)
    assert np.abs(Y - X).max() < 1e-12
    rng = np.random.default_rng(0)
    noisy = X + rng.normal(scale=0.01, size=X.shape)
    Z = butterworth_filtfilt(noisy, fps, cutoff_hz=2.0, order=2)
    assert np.sqrt(((Z - X) ** 2).mean()) < 0.7 * np.sqrt(((noisy - X) ** 2).mean())
    # NaN stays NaN and does not spread
    noisy[10, 0, 1] = np.nan
    Z2 = butterworth_filtfilt(noisy, fps, cutoff_hz=2.0, order=2)
    assert np.isnan(Z2[10, 0, 1]) and np.isfinite(np.delete(Z2.reshape(T, -1), 1, axis=1)).all()
    assert np.isfinite(Z2[:, 0, 1]).sum() == T - 1
    with pytest.raises(ValueError, match="Nyquist"):
        butterworth_filtfilt(X, fps, cutoff_hz=5.0)


def test_stage_reports_threshold_spearman_swaps_and_smoothed_row(tmp_path):
    import json

    from pose3d.runtime.params import Triangulate
    from pose3d.tasks.triangulate import run

    mocap, cams, det = _tiny_studio(tmp_path)
    p = Triangulate(swap_hypotheses=True, smooth_cutoff_hz=3.0, ransac_threshold_quantile=0.5,
                    ransac_threshold_scale=4.0, score_calibration="isotonic", stature_m=1.7)
    m = run("ransac", mocap, cams, det, str(tmp_path / "p.parquet"), str(tmp_path / "m.json"),
            str(tmp_path / "t.json"), p, torch.device("cpu"))
    expect = ransac_threshold(train_detector_errors(mocap, cams, det, p.score_threshold).errors, 0.5, 4.0)
    assert m["ransac_threshold_px"] == pytest.approx(expect)
    assert {"swap_rescued_joints", "swap_rescued_views", "smoothed_mpjpe_mm", "score_spearman_mean",
            f"score_spearman_{JOINT_NAMES[0]}"} <= set(m)
    assert m["swap_rescued_joints"] == 0  # no swaps in these detections
    # (the fixture's frames are independent random poses, so the smoothed row is only present)
    assert m["n_frames"] == 40 and m["mpjpe_mm"] < 30 and np.isfinite(m["smoothed_mpjpe_mm"])
    assert json.loads((tmp_path / "m.json").read_text())["ransac_threshold_px"] == pytest.approx(expect, abs=1e-4)
    with pytest.raises(Exception, match="smooth_cutoff_hz"):
        run("algebraic", mocap, cams, det, str(tmp_path / "q.parquet"), str(tmp_path / "n.json"),
            str(tmp_path / "u.json"), Triangulate(smooth_cutoff_hz=5.0, stature_m=1.7), torch.device("cpu"))


def test_smooth_sequences_filters_each_sequence_on_its_own():
    from pose3d.tasks.triangulate import smooth_sequences

    t = torch.arange(30, dtype=torch.float64)[:, None, None] / 10.0
    a = torch.zeros(30, 2, 3, dtype=torch.float64) + t * 0.4  # constant velocity
    b = torch.ones(30, 2, 3, dtype=torch.float64) * 2.0 - t * 0.7  # another, with a jump at the seam
    pred = torch.cat([a, b])
    out = smooth_sequences(pred, ["S9"] * 60, ["Walking"] * 30 + ["Sitting"] * 30,
                           {("S9", "Walking"): 10.0, ("S9", "Sitting"): 10.0}, 3.0, 2)
    assert (out - pred).abs().max() < 1e-12  # filtered across the seam it would ring there


def test_probabilistic_scale_from_the_lifters_predictions(tmp_path):
    """stature_from = lifter: each subject's metric scale is its median stature in a lifter's
    predictions (here the ground truth x 1.1: the output's stature and scale error follow)."""
    from pose3d.data.contracts import read_predictions, write_predictions
    from pose3d.data.io import DataError, read_mocap
    from pose3d.geometry.probabilistic import stature
    from pose3d.runtime.params import Triangulate
    from pose3d.tasks.triangulate import lifter_statures, run

    mocap, cams, det = _tiny_studio(tmp_path)
    X = read_mocap(mocap, split="test")[0].positions_world.astype(np.float64)  # S9, 40 frames
    rel = 1.1 * (X - X[:, :1])
    keys = {"subject": ["S9"] * 40, "action": ["Walking"] * 40, "camera": ["c0"] * 40, "frame": np.arange(40)}
    write_predictions(tmp_path / "lifter.parquet", keys, rel, method="temporal", coord_frame="camera",
                      root_relative=True)
    h_true = float(stature(torch.as_tensor(X)).median())
    assert lifter_statures(str(tmp_path / "lifter.parquet"), ["S9"]) == {"S9": pytest.approx(1.1 * h_true, rel=1e-6)}
    p = Triangulate(input="detections", stature_from="lifter", prob_samples=8, prob_iters=4, prob_score_frames=4)
    m = run("probabilistic", mocap, cams, det, str(tmp_path / "p.parquet"), str(tmp_path / "m.json"),
            str(tmp_path / "t.json"), p, torch.device("cpu"), lifter_predictions=str(tmp_path / "lifter.parquet"))
    assert m["scale_error_pct"] == pytest.approx(10.0, abs=1e-4)
    assert m["stature_prior_m"] == pytest.approx(1.1 * h_true, rel=1e-6)
    out = read_predictions(tmp_path / "p.parquet").joints
    assert float(stature(torch.as_tensor(out, dtype=torch.float64)).median()) == pytest.approx(1.1 * h_true, rel=1e-5)
    with pytest.raises(DataError, match="--lifter-predictions"):
        run("probabilistic", mocap, cams, det, str(tmp_path / "q.parquet"), str(tmp_path / "n.json"),
            str(tmp_path / "u.json"), p, torch.device("cpu"))
    with pytest.raises(DataError, match=r"lifter.parquet: no predictions for subject S11"):
        lifter_statures(str(tmp_path / "lifter.parquet"), ["S9", "S11"])
    assert not (tmp_path / "q.parquet").exists()
