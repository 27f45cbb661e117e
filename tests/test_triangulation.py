"""Calibrated triangulation: exactness, weighting, RANSAC, refinement, missing data, errors."""

from __future__ import annotations

import math
import shutil

import numpy as np

import pytest
import torch

from pose3d.geometry.camera import project
from pose3d.geometry.rotations import look_at
from pose3d.geometry.triangulation import (
    _UPPER,
    _eigh_fallback,
    _homogeneous_solve,
    refine_reprojection,
    reprojection_errors,
    triangulate,
    triangulate_dlt,
    triangulate_ransac,
)

D = torch.float64
REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def make_rig(V: int = 4, radius: float = 3.5, distort: bool = True) -> dict[str, torch.Tensor]:
    """V cameras on a ring looking at (0, 0, 1) m, with OpenCV distortion (Z up world)."""
    ang = torch.arange(V, dtype=D) * 2 * math.pi / V + 0.3
    eye = torch.stack([radius * torch.cos(ang), radius * torch.sin(ang),
                       1.2 + 0.3 * torch.arange(V, dtype=D) / V], -1)
    R, t = look_at(eye, torch.tensor([0.0, 0.0, 1.0], dtype=D).expand(V, 3),
                   torch.tensor([0.0, 0.0, 1.0], dtype=D).expand(V, 3))
    f = 1100.0 + 40 * torch.arange(V, dtype=D)
    K = torch.zeros(V, 3, 3, dtype=D)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f * 1.01, 640, 360, 1
    dist = torch.tensor([-0.25, 0.12, 1e-3, -5e-4, -0.02], dtype=D).expand(V, 5).clone()
    if not distort:
        dist.zero_()
    return {"K": K, "dist": dist, "R": R, "t": t}


def make_points(shape=(50, 17), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, 3, generator=g, dtype=D) * 0.3 + torch.tensor([0.0, 0.0, 1.0], dtype=D)


def observe(X: torch.Tensor, cams) -> torch.Tensor:
    """X (*, J, 3) -> distorted pixels (*, V, J, 2)."""
    return project(X.unsqueeze(-3), cams["K"], cams["dist"], cams["R"], cams["t"])


def P_of(cams) -> torch.Tensor:
    return cams["K"] @ torch.cat([cams["R"], cams["t"].unsqueeze(-1)], -1)


def test_dlt_exact_noise_free_with_distortion():
    cams, X = make_rig(), make_points()
    res = triangulate(observe(X, cams), cams)
    assert res.points_3d.shape == X.shape
    assert (res.points_3d - X).abs().max() < 1e-9
    assert res.reprojection_error_px.max() < 1e-6
    assert res.used.all()


def test_dlt_low_level_exact_in_pixels():
    cams, X = make_rig(distort=False), make_points((7, 5))
    uv = observe(X, cams)
    assert (triangulate_dlt(uv, P_of(cams)) - X).abs().max() < 1e-8


def test_batch_shapes_broadcast():
    cams, X = make_rig(), make_points((2, 3, 17))
    res = triangulate(observe(X, cams), cams)
    assert res.points_3d.shape == (2, 3, 17, 3)
    assert res.used.shape == (2, 3, 4, 17) and res.reprojection_error_px.shape == (2, 3, 17)
    assert torch.allclose(res.points_3d, X, atol=1e-9)


def test_equal_weights_equal_plain_dlt():
    cams, X = make_rig(), make_points()
    g = torch.Generator().manual_seed(1)
    uv = observe(X, cams) + 3 * torch.randn(X.shape[0], 4, 17, 2, generator=g, dtype=D)
    plain = triangulate(uv, cams).points_3d
    weighted = triangulate(uv, cams, scores=torch.full(uv.shape[:-1], 0.37, dtype=D)).points_3d
    assert torch.allclose(plain, weighted, atol=1e-12, rtol=0)
    assert (plain - X).norm(dim=-1).mean() > 1e-4  # noise was really there


def test_weights_downweight_a_noisy_view():
    cams, X = make_rig(), make_points()
    g = torch.Generator().manual_seed(2)
    uv = observe(X, cams)
    uv[:, 0] += 30 * torch.randn(X.shape[0], 17, 2, generator=g, dtype=D)
    scores = torch.ones(uv.shape[:-1], dtype=D)
    scores[:, 0] = 1e-3
    e_plain = (triangulate(uv, cams).points_3d - X).norm(dim=-1).mean()
    e_w = (triangulate(uv, cams, scores=scores).points_3d - X).norm(dim=-1).mean()
    assert e_w < 0.05 * e_plain


def test_homogeneous_solve_with_its_fallback_matches_eigh():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(500, 8, 4, generator=g, dtype=D)
    M = A.transpose(-1, -2) @ A
    v = torch.linalg.eigh(M)[1][..., 0]
    X, resid, _ = _homogeneous_solve([M[..., i, j] for i, j in _UPPER], 2)
    X = _eigh_fallback(X, resid, M)  # the DLT's path: closed form, eigh where it did not converge
    torch.testing.assert_close(X, v[..., :3] / v[..., 3:], rtol=1e-7, atol=1e-9)


def test_missing_views_and_score_threshold():
    cams, X = make_rig(), make_points((10, 17))
    uv = observe(X, cams)
    uv[:, 1, 3] = float("nan")  # joint 3 missing in view 1: still 3 views
    uv[:, 1:, 5] = float("nan")  # joint 5 seen once only -> NaN
    scores = torch.ones(uv.shape[:-1], dtype=D)
    scores[:, 2:, 7] = 0.05  # joint 7: only 2 views above the threshold
    uv[:, 2:, 7] += 500.0  # ... and those low-score views are garbage
    res = triangulate(uv, cams, scores=scores, score_threshold=0.1)
    ok = torch.ones(17, dtype=torch.bool)
    ok[5] = False
    assert torch.isnan(res.points_3d[:, 5]).all()
    assert (res.points_3d[:, ok] - X[:, ok]).abs().max() < 1e-8
    assert not res.used[:, 1, 3].any() and not res.used[:, 2:, 7].any()


def test_ransac_ignores_planted_outliers():
    cams = make_rig(V=6)
    X = make_points((40, 17))
    uv = observe(X, cams)
    g = torch.Generator().manual_seed(4)
    # corrupt 2 of 6 views of every point (different views per point)
    bad = torch.rand(40, 6, 17, generator=g).argsort(dim=1) < 2
    uv = torch.where(bad.unsqueeze(-1), uv + 150 + 200 * torch.rand(uv.shape, generator=g, dtype=D), uv)
    dlt = triangulate(uv, cams).points_3d
    res = triangulate(uv, cams, method="ransac", ransac_threshold_px=5.0)
    assert (dlt - X).norm(dim=-1).mean() > 0.01
    assert (res.points_3d - X).abs().max() < 1e-8
    assert torch.equal(res.used, ~bad)


def test_ransac_two_against_two_is_ambiguous_not_a_coin_flip():
    # views 0, 1 see X; views 2, 3 see a different point Y: two consensus sets of 2 in 4 views
    cams = make_rig(V=4)
    X, Y = make_points((1, 5), seed=1), make_points((1, 5), seed=2)
    uv = torch.cat([observe(X, cams)[:, :2], observe(Y, cams)[:, 2:]], dim=1)
    res = triangulate(uv, cams, method="ransac", ransac_threshold_px=5.0)
    assert torch.isnan(res.points_3d).all() and not res.used.any()
    forced = triangulate(uv, cams, method="ransac", ransac_threshold_px=5.0, ransac_ambiguity=0.0)
    assert torch.isfinite(forced.points_3d).all()
    # one consistent pair plus a third view on the same point wins: not ambiguous
    uv3 = uv.clone()
    uv3[:, 2] = observe(X, cams)[:, 2]
    res3 = triangulate(uv3, cams, method="ransac", ransac_threshold_px=5.0)
    assert (res3.points_3d - X).abs().max() < 1e-8


def test_fast_undistortion_matches_camera_model():
    from pose3d.geometry.camera import undistort_points
    from pose3d.geometry.triangulation import _undistort_vn

    cams = make_rig(V=3)
    g = torch.Generator().manual_seed(0)
    uv = torch.rand(3, 500, 2, generator=g, dtype=D) * torch.tensor([1280.0, 720.0], dtype=D)
    ref = undistort_points(uv, cams["K"], cams["dist"], normalized=True, iters=60)
    x, y = _undistort_vn(uv[..., 0].contiguous(), uv[..., 1].contiguous(), cams["K"], cams["dist"])
    assert (torch.stack([x, y], -1) - ref).abs().max() < 1e-12


def test_ransac_low_level_returns_inliers():
    cams = make_rig(V=5, distort=False)
    X = make_points((3, 4))
    uv = observe(X, cams)
    uv[:, 2] += 80.0
    Xr, inl = triangulate_ransac(uv, P_of(cams), threshold=2.0)
    assert (Xr - X).abs().max() < 1e-8 and not inl[:, 2].any() and inl[:, [0, 1, 3, 4]].all()


def test_refinement_lowers_reprojection_error_and_keeps_exact():
    cams, X = make_rig(), make_points()
    uv = observe(X, cams)
    assert (refine_reprojection(X + 0.01, uv, cams) - X).abs().max() < 1e-9
    g = torch.Generator().manual_seed(5)
    uvn = uv + 2 * torch.randn(uv.shape, generator=g, dtype=D)
    a = triangulate(uvn, cams)
    b = triangulate(uvn, cams, refine=True)
    # LM minimises the sum of squared pixel errors, per point
    sse_a = reprojection_errors(a.points_3d, uvn, cams).pow(2).sum(-2)
    sse_b = reprojection_errors(b.points_3d, uvn, cams).pow(2).sum(-2)
    assert (sse_b <= sse_a + 1e-9).all() and sse_b.mean() < 0.99 * sse_a.mean()


@pytest.mark.parametrize("bad", ["one_view", "cam_count", "all_nan", "threshold", "scores_shape"])
def test_bad_input_clear_errors(bad):
    cams, X = make_rig(), make_points((4, 17))
    uv = observe(X, cams)
    if bad == "one_view":
        one = {k: v[:1] for k, v in cams.items()}
        with pytest.raises(ValueError, match="at least 2 views"):
            triangulate(uv[:, :1], one)
    elif bad == "cam_count":
        with pytest.raises(ValueError, match="4 views .* but 3 cameras"):
            triangulate(uv, {k: v[:3] for k, v in cams.items()})
    elif bad == "all_nan":
        with pytest.raises(ValueError, match="no joint has at least 2 usable views"):
            triangulate(torch.full_like(uv, float("nan")), cams)
    elif bad == "threshold":
        with pytest.raises(ValueError, match="score threshold"):
            triangulate(uv, cams, scores=torch.full(uv.shape[:-1], 0.1, dtype=D), score_threshold=0.5)
    else:
        with pytest.raises(ValueError, match="scores: expected shape"):
            triangulate(uv, cams, scores=torch.ones(4, 17, dtype=D))


def test_panoptic_noise_free_sub_micrometre(panoptic_npz):
    """Real 31-camera Panoptic rig with its real distortion: < 1e-3 mm from noise-free views."""
    d = np.load(panoptic_npz, allow_pickle=False)
    for seq in ("160906_band1", "160906_band2"):
        cams = {"K": torch.as_tensor(d[f"{seq}/hd_K"], dtype=D),
                "dist": torch.as_tensor(d[f"{seq}/hd_dist"], dtype=D),
                "R": torch.as_tensor(d[f"{seq}/hd_R"], dtype=D),
                "t": torch.as_tensor(d[f"{seq}/hd_t_mm"], dtype=D) / 1000}
        # re-orthonormalise the float32-stored rotations (the rig's own R, to 1e-7)
        U, _, Vh = torch.linalg.svd(cams["R"])
        cams["R"] = U @ Vh
        X = torch.as_tensor(d[f"{seq}/joints19_mm"], dtype=D) / 1000  # (20, 3, 19, 3)
        uv = observe(X, cams)  # (20, 3, 31, 19, 2); NaN where Panoptic's 3D is missing
        inside = (uv[..., 0] >= 0) & (uv[..., 0] < 1920) & (uv[..., 1] >= 0) & (uv[..., 1] < 1080)
        uv = torch.where(inside.unsqueeze(-1), uv, torch.full_like(uv, float("nan")))
        res = triangulate(uv, cams)
        known = torch.isfinite(X).all(-1)
        assert torch.isnan(res.points_3d[~known]).all()
        err_mm = (res.points_3d - X).norm(dim=-1)[known] * 1000
        assert known.sum() > 1000 and err_mm.max() < 1e-3, f"{seq}: max error {err_mm.max():.2e} mm"


# --------------------------------------------------------------------------- the stage
def _tiny_studio(tmp_path, T=12):
    """mocap.h5 (S1 train, S9 test, 2 actions), cameras.json (4 cams) and detections (2 px noise,
    one view per joint of 10 % of the rows replaced by garbage with a low score)."""
    from pose3d.data.io import Sequence, save_cameras, write_mocap, write_table
    from pose3d.geometry.camera import Camera

    g = torch.Generator().manual_seed(11)
    base = make_points((1, 17), seed=12)[0]
    seqs, cams = [], {}
    rig = make_rig(V=4)
    for subj, split in (("S1", "train"), ("S9", "test")):
        for act in ("Walking", "Eating"):
            motion = torch.randn(T, 1, 3, generator=g, dtype=D) * 0.05
            X = base + motion + 0.02 * torch.randn(T, 17, 3, generator=g, dtype=D)
            seqs.append(Sequence(subj, act, X.numpy().astype(np.float32), 10.0, split))
        cams[subj] = {f"cam{v}": Camera(K=rig["K"][v].numpy(), dist=rig["dist"][v].numpy(),
                                        R=rig["R"][v].numpy(), t=rig["t"][v].numpy(), width=1280,
                                        height=720, name=f"cam{v}") for v in range(4)}
    write_mocap(tmp_path / "mocap.h5", seqs)
    save_cameras(tmp_path / "cameras.json", cams)
    rows = {"subject": [], "action": [], "camera": [], "frame": []}
    kps, scs = [], []
    for s in seqs:
        X = torch.as_tensor(s.positions_world, dtype=D)
        uv = observe(X, rig) + 2 * torch.randn(T, 4, 17, 2, generator=g, dtype=D)
        sc = torch.full((T, 4, 17), 0.9, dtype=D)
        for v in range(4):
            rows["subject"] += [s.subject] * T
            rows["action"] += [s.action] * T
            rows["camera"] += [f"cam{v}"] * T
            rows["frame"] += list(range(T))
            kps.append(uv[:, v].reshape(T, 34))
            scs.append(sc[:, v])
    write_table(tmp_path / "det.parquet", {**rows, "frame": np.asarray(rows["frame"], dtype=np.int64),
                                            "keypoints_px": torch.cat(kps).numpy(),
                                            "scores": torch.cat(scs).numpy()})
    return tmp_path


@pytest.mark.parametrize("method", ["algebraic", "ransac", "probabilistic"])
def test_stage_end_to_end(tmp_path, method):
    import json
    import subprocess
    import sys

    import yaml

    from pose3d.data.io import read_table

    _tiny_studio(tmp_path)
    params = {"base": {"seed": 0, "device": "cpu", "mlflow": False},
              "triangulate": {"input": "detections", "prob_iters": 15, "stature_from": "train"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, met = tmp_path / "pred.parquet", tmp_path / "m.json"
    cmd = [sys.executable, "stages/triangulate.py", "--method", method, "--mocap", str(tmp_path / "mocap.h5"),
           "--cameras", str(tmp_path / "cameras.json"), "--detections", str(tmp_path / "det.parquet"),
           "--out", str(out), "--metrics", str(met), "--timings", str(tmp_path / "t.json"), "--params", str(tmp_path / "params.yaml")]
    subprocess.run(cmd, check=True, cwd=str(REPO), capture_output=True)
    m = json.loads(met.read_text())
    table, meta = read_table(out)
    assert table.num_rows == 24 and set(table.column("subject").to_pylist()) == {"S9"}
    assert meta["method"] == f"triangulate_{method}" and meta["root_relative"] is False and meta["units"] == "m"
    if method == "probabilistic":
        assert meta["coord_frame"] == "reference_camera" and meta["reference_camera"] == "cam0"
        assert m["smoothed_pa_mpjpe_mm"] < 30 and m["rotation_error_deg"] < 5
        assert list(m) == ["root_relative_mpjpe_mm", "smoothed_pa_mpjpe_mm", "rotation_error_deg", "rotation_error_max_deg",
                           "translation_direction_error_deg", "scale_error_pct"]
    else:
        assert meta["coord_frame"] == "world"
        assert m["abs_mpjpe_mm"] < 15 and math.isfinite(m["smoothed_mpjpe_mm"])  # 6-frame takes: the filter bends them
        # what only this stage knows; P1/P2 of the predictions are evaluate's (reports/metrics/methods)
        assert "mpjpe_mm" not in m and "pa_mpjpe_mm" not in m and "reprojection_px" in m


def test_stage_missing_input_exits_1(tmp_path):
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text("base: {mlflow: false}\ntriangulate: {}\n")
    r = subprocess.run([sys.executable, "stages/triangulate.py", "--method", "algebraic", "--mocap",
                        str(tmp_path / "nope.h5"), "--cameras", "x.json", "--out", str(tmp_path / "o.parquet"),
                        "--metrics", str(tmp_path / "m.json"), "--timings", str(tmp_path / "t.json"), "--params", str(tmp_path / "params.yaml")],
                       cwd=str(REPO), capture_output=True, text=True)
    assert r.returncode == 1 and "nope.h5" in r.stderr and not (tmp_path / "o.parquet").exists()


def test_stage_metrics_nan_aware():
    """Missing (NaN) joints in the prediction: P-MPJPE fits each frame's similarity on its
    predicted joints, so a similarity-transformed copy of the truth with a missing joint in
    every frame scores 0 (it was NaN when only complete frames were kept)."""
    from pose3d.tasks.triangulate import _pose_metrics

    gt = make_points((6, 17), seed=7)
    ang = torch.tensor(0.4, dtype=D)
    Rz = torch.tensor([[ang.cos(), -ang.sin(), 0], [ang.sin(), ang.cos(), 0], [0, 0, 1]], dtype=D)
    pred = 1.3 * gt @ Rz.T + torch.tensor([0.5, -0.2, 0.1], dtype=D)
    pred[torch.arange(6), torch.arange(6) + 1] = float("nan")  # one missing joint per frame (not the root)
    pred[5, 2:] = float("nan")  # frame 5 keeps 2 joints: too few for a similarity
    m = _pose_metrics(pred, gt)
    n_valid = 5 * 16 + 2  # frames 0-4: 16 joints each; frame 5: joints 0 and 1
    assert m["valid_joint_frac"] == pytest.approx(n_valid / (6 * 17), abs=1e-15)
    assert m["missing_joint_frac"] == pytest.approx(1 - n_valid / (6 * 17), abs=1e-15)
    assert m["pa_valid_joint_frac"] == pytest.approx(5 * 16 / (6 * 17), abs=1e-15)
    assert m["pa_mpjpe_mm"] < 1e-9
    # root-relative MPJPE over the predicted joints: a pure translation gives exactly 0
    shifted = gt + torch.tensor([0.3, 0.0, 0.0], dtype=D)
    shifted[:, 4] = float("nan")
    m2 = _pose_metrics(shifted, gt)
    assert m2["mpjpe_mm"] < 1e-9 and m2["pa_mpjpe_mm"] < 1e-9
    assert m2["abs_mpjpe_mm"] == pytest.approx(300.0, abs=1e-9)


def test_ransac_pair_threshold_declines_loose_two_view_consensus():
    # views 0, 1 see X with opposite vertical 4 px offsets (across the near-horizontal epipolar
    # lines of this ring), views 2, 3 are garbage: a two-view consensus whose residuals (~4 px)
    # pass a 10 px threshold but not 0.1 x 10 px; exact pairs pass both
    cams = make_rig(V=4)
    X = make_points((1, 6), seed=3)
    uv = observe(X, cams)
    uv[:, 2] += torch.tensor([300.0, -200.0], dtype=D)
    uv[:, 3] += torch.tensor([-250.0, 350.0], dtype=D)
    loose = uv.clone()
    loose[:, 0, :3] += torch.tensor([0.0, 4.0], dtype=D)
    loose[:, 1, :3] -= torch.tensor([0.0, 4.0], dtype=D)
    base = triangulate(loose, cams, method="ransac", ransac_threshold_px=10.0)
    assert torch.isfinite(base.points_3d).all()
    err = reprojection_errors(base.points_3d, loose, cams)[:, :2]  # the pair's residuals
    assert (err[..., :3] > 1.0).all() and (err[..., :3] < 10.0).all() and (err[..., 3:] < 1e-6).all()
    strict = triangulate(loose, cams, method="ransac", ransac_threshold_px=10.0, ransac_pair_threshold=0.1)
    assert torch.isnan(strict.points_3d[:, :3]).all() and not strict.used[..., :3].any()
    assert (strict.points_3d[:, 3:] - X[:, 3:]).abs().max() < 1e-8  # exact pairs kept
    assert torch.equal(strict.used[..., 3:], torch.tensor([True, True, False, False]).expand(1, 3, 4).transpose(-1, -2))
    # three consistent views: not a two-view consensus, the test does not apply
    three = loose.clone()
    three[:, 2] = observe(X, cams)[:, 2]
    r3 = triangulate(three, cams, method="ransac", ransac_threshold_px=10.0, ransac_pair_threshold=0.1)
    assert torch.isfinite(r3.points_3d).all()


@pytest.mark.slow
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="torch.compile's CPU backend needs a C++ compiler; none on PATH")
@pytest.mark.parametrize("backend", ["native", "inductor"])
def test_compiled_dlt_matches_eager(backend, monkeypatch):
    """triangulate(compiled=True) (the native C++ kernel, or the torch.compile'd one when that is
    unavailable; fixed iteration counts) gives the eager results: exact on noise-free views,
    same NaN/used pattern with missing views and low scores, equal to ~1e-12 on noisy views;
    with refine=True the same LM result. Compiles on first use (seconds to a minute)."""
    from pose3d.geometry import native
    if backend == "inductor":
        monkeypatch.setattr(native, "load", lambda views: None)
    else:
        assert native.load(4) is not None
    cams, X = make_rig(), make_points((30, 17))
    g = torch.Generator().manual_seed(8)
    uv = observe(X, cams)
    scores = 0.2 + 0.8 * torch.rand(uv.shape[:-1], generator=g, dtype=D)
    uv[:, 1, 3] = float("nan")  # 3 views left
    uv[:, 1:, 5] = float("nan")  # one view left -> NaN
    scores[:, 2:, 7] = 0.05  # below the threshold -> 2 views left
    scores[:, 0, 9] = float("nan")  # NaN score = missing
    exact = triangulate(uv, cams, scores, score_threshold=0.1, compiled=True)
    ok = torch.ones(17, dtype=torch.bool)
    ok[5] = False
    assert torch.isnan(exact.points_3d[:, 5]).all() and torch.isnan(exact.reprojection_error_px[:, 5]).all()
    assert (exact.points_3d[:, ok] - X[:, ok]).abs().max() < 1e-9
    assert exact.reprojection_error_px[:, ok].max() < 1e-6
    noisy = uv + 2 * torch.randn(uv.shape, generator=g, dtype=D)
    for inp in (uv, noisy):
        a = triangulate(inp, cams, scores, score_threshold=0.1)
        b = triangulate(inp, cams, scores, score_threshold=0.1, compiled=True)
        assert torch.equal(a.used, b.used) and torch.equal(a.points_3d.isnan(), b.points_3d.isnan())
        assert torch.allclose(a.points_3d, b.points_3d, atol=1e-12, rtol=0, equal_nan=True)
        assert torch.allclose(a.reprojection_error_px, b.reprojection_error_px, atol=1e-9, rtol=0, equal_nan=True)
    # compiled Levenberg-Marquardt iterations: the same steps from the same start
    from pose3d.geometry.triangulation import refine_reprojection
    w = torch.where(a.used, scores, 0.0)
    la = refine_reprojection(a.points_3d, noisy, cams, w)
    lb = refine_reprojection(a.points_3d, noisy, cams, w, compiled=True)
    assert torch.allclose(la, lb, atol=1e-12, rtol=0, equal_nan=True)
    # end to end: the two DLT starts differ by rounding (~1e-15 m: the compiled moments are summed
    # in another order), which 10 LM iterations on the worst-conditioned joints grow to ~1e-9 m
    a = triangulate(noisy, cams, scores, score_threshold=0.1, refine=True)
    b = triangulate(noisy, cams, scores, score_threshold=0.1, refine=True, compiled=True)
    assert torch.equal(a.points_3d.isnan(), b.points_3d.isnan())
    assert torch.allclose(a.points_3d, b.points_3d, atol=1e-8, rtol=0, equal_nan=True)


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="the native kernel needs a C++ compiler; none on PATH")
def test_native_dlt_chunks_equal_one_call_and_build_errors(tmp_path, monkeypatch):
    """The native kernel's threaded chunks (which start mid-frame and mid-tile) give exactly the
    one-call result, in triangulate()'s layouts and equal to the eager path; a missing or failing
    compiler gives an error that names it, and leaves no half-written library."""
    from pose3d.geometry import native
    from pose3d.geometry.triangulation import _camera_vector
    cams = make_rig()
    X = make_points((40, 17))
    g = torch.Generator().manual_seed(3)
    uv = observe(X, cams) + torch.randn(40, 4, 17, 2, generator=g, dtype=D)
    uv[::7, 1, 2] = float("nan")
    scores = torch.rand(uv.shape[:-1], generator=g, dtype=D)
    for sc in (None, scores):
        one = native.triangulate(uv, sc, 0.3, True, _camera_vector(cams), threads=1)
        three = native.triangulate(uv, sc, 0.3, True, _camera_vector(cams), threads=3, min_chunk=1)
        for a, b in zip(one[:4], three[:4]):
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
        assert one[4:] == three[4:]
        used = torch.isfinite(uv).all(-1) & (scores >= 0.3 if sc is not None else True)
        assert torch.equal(one[2], used)
        ref = triangulate(uv, cams, sc, score_threshold=0.3)  # the eager path
        torch.testing.assert_close(one[0], ref.points_3d.reshape(-1, 3), rtol=0, atol=1e-9, equal_nan=True)
        assert torch.equal(one[0][:, 0].isnan(), used.sum(1).reshape(-1) < 2)
        assert one[4] == int((used.sum(1) >= 2).sum()) and one[4] < 680 if sc is not None else one[4] == 680
        # one joint per frame (the kernel's J = 1 gather/scatter): the same joints, bit for bit
        flat = native.triangulate(uv.transpose(1, 2).reshape(680, 4, 1, 2),
                                  sc.transpose(1, 2).reshape(680, 4, 1) if sc is not None else None,
                                  0.3, True, _camera_vector(cams), threads=2, min_chunk=1)
        torch.testing.assert_close(flat[0], one[0], rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(flat[1], one[1], rtol=0, atol=0, equal_nan=True)
        assert torch.equal(flat[2][:, :, 0], one[2].transpose(1, 2).reshape(680, 4))
    with pytest.raises(ValueError, match="9 views, expected 1..8"):
        native.build(9, tmp_path)  # more views: triangulate(compiled=True) takes the torch.compile path
    monkeypatch.setattr(native, "compiler", lambda: None)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):
        native.build(4, tmp_path)
    monkeypatch.setattr(native, "compiler", lambda: shutil.which("false"))
    with pytest.raises(RuntimeError, match="false.*failed"):
        native.build(4, tmp_path)
    assert not list(tmp_path.rglob("*.so"))


@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                    reason="the native kernel needs a C++ compiler; none on PATH")
def test_native_dlt_redo_path_matches_eager():
    """Joints whose 3 fixed Newton steps of undistortion do not converge (here: points spread
    so wide that some project far outside the images) are flagged by the kernel and re-solved
    by the eager path: compiled=True still equals eager on every joint."""
    from pose3d.geometry import native
    from pose3d.geometry.triangulation import _camera_vector
    cams = make_rig()
    centre = torch.tensor([0.0, 0.0, 1.0], dtype=D)
    X = (make_points((40, 17), seed=1) - centre) * (0.8 / 0.3) + centre
    uv = observe(X, cams)
    n_redo = native.triangulate(uv, None, 0.0, True, _camera_vector(cams), threads=1)[5]
    assert 0 < n_redo < 20
    a = triangulate(uv, cams)
    b = triangulate(uv, cams, compiled=True)
    assert torch.equal(a.used, b.used) and torch.equal(a.points_3d.isnan(), b.points_3d.isnan())
    assert torch.allclose(a.points_3d, b.points_3d, atol=1e-12, rtol=0, equal_nan=True)
    # the redo path's points project far outside the images (errors up to ~1e9 px): compare
    # relative there, absolute near zero (the compiler may contract a*b+c into an FMA)
    assert torch.allclose(a.reprojection_error_px, b.reprojection_error_px, atol=1e-9, rtol=1e-12,
                          equal_nan=True)


def test_projection_jacobian_matches_projection_and_autograd():
    """The analytic projection + Jacobian (LM and the Cramér-Rao benchmark use it) equals the
    camera model's projection and autograd's derivative, for a batched (*, J, 3) input."""
    from pose3d.geometry.triangulation import _project_with_jacobian

    cams, X = make_rig(V=3), make_points((2, 5))
    uv, Jac = _project_with_jacobian(X, cams)
    assert uv.shape == (2, 3, 5, 2) and Jac.shape == (2, 3, 5, 2, 3)
    assert (uv - observe(X, cams)).abs().max() < 1e-9
    auto = torch.autograd.functional.jacobian(lambda x: observe(x, cams), X)  # (2,3,5,2, 2,5,3)
    ref = torch.einsum("nvjcnjk->nvjck", auto)
    assert (Jac - ref).abs().max() < 1e-7
