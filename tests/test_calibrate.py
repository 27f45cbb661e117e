"""Camera calibration: boards, corner detection on rendered frames, intrinsics, bundle adjustment,
the world frame from the floor, the command and its errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pose3d.data.boards import BoardSpec
from pose3d.data.io import DataError, load_cameras
from pose3d.data.studio.calibration import (MARGIN_SQUARES, BoardPose, floor_pose, held_board_poses,
                                            render_board, subpixel_rays)
from pose3d.data.studio.rig import make_rig
from pose3d.geometry.camera import Camera, project_camera, undistort_points
from pose3d.tasks.calibrate import cli, pipeline
from pose3d.tasks.calibrate.detect import BoardDetector, SourceDetections
from pose3d.tasks.calibrate.pipeline import Calibration, calibrate_detections
from pose3d.tasks.calibrate.solve import (Observations, bundle_adjust, calibrate_intrinsics, rodrigues,
                                          to_rvec)

BOARD = BoardSpec.parse("checkerboard:10x7:0.1")
FLOOR = BoardSpec.parse("checkerboard:8x5:0.25")


def _lens_px(K, dist, K_true, dist_true, size=512) -> float:
    """Largest pixel difference of two lenses' projections over the middle 70 % of the image,
    where the boards were seen (k2 and k3 trade off there, so coefficients are not the test)."""
    g = np.linspace(0.15 * size, 0.85 * size, 9)
    uv = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    xy = undistort_points(torch.as_tensor(uv), torch.as_tensor(K_true), torch.as_tensor(dist_true), normalized=True)
    X = torch.cat([xy, torch.ones(len(xy), 1, dtype=xy.dtype)], -1)
    a = project_camera(X, torch.as_tensor(K), torch.as_tensor(dist))
    return float((a - torch.as_tensor(uv)).norm(dim=-1).max())


def _rot_deg(A, B) -> float:
    return float(np.rad2deg(np.arccos(np.clip((np.trace(A @ B.T) - 1) / 2, -1, 1))))


def _synth(cams: dict[str, Camera], board: BoardSpec, poses, noise_px=0.0, seed=0) -> dict[str, SourceDetections]:
    """Board corners projected through each camera, where the printed side faces it and the
    whole board is in the image (what a detector would return)."""
    rng = np.random.default_rng(seed)
    out = {}
    for n, c in cams.items():
        d = SourceDetections(f"{n}.mp4", c.width, c.height, len(poses))
        for k, p in enumerate(poses):
            X = board.object_points() @ p.R.T + p.t
            if (c.center - p.t) @ (-p.R[:, 2]) <= 0 or ((X @ c.R.T + c.t)[:, 2] <= 0).any():
                continue
            uv = c.project(X)
            if (uv < 0).any() or (uv[:, 0] > c.width - 1).any() or (uv[:, 1] > c.height - 1).any():
                continue
            d.ids[k] = np.arange(len(X))
            d.uv[k] = uv + noise_px * rng.standard_normal(uv.shape)
        out[n] = d
    return out


@pytest.fixture(scope="module")
def rig():
    return make_rig("S9", num_cameras=4, width=512, height=512, seed=0)


# --------------------------------------------------------------------------- boards
def test_board_spec_parse_and_object_points():
    b = BoardSpec.parse("charuco:6x5:0.18:0.135:DICT_4X4_50")
    assert (b.kind, b.squares_x, b.squares_y, b.square_m, b.marker_m) == ("charuco", 6, 5, 0.18, 0.135)
    assert str(b) == "charuco:6x5:0.18:0.135:DICT_4X4_50"
    # the same corner numbering and positions as OpenCV's ChArUco board
    np.testing.assert_allclose(b.object_points(), b.charuco_board().getChessboardCorners(), atol=1e-6)
    np.testing.assert_allclose(BOARD.object_points()[[0, 1, 9, 53]],
                               [[0.1, 0.1, 0], [0.2, 0.1, 0], [0.1, 0.2, 0], [0.9, 0.6, 0]])


@pytest.mark.parametrize("text, match", [
    ("checkerboard:10x7", "expected KIND:NXxNY:SQUARE_M"),
    ("chess:10x7:0.1", "board kind 'chess'"),
    ("checkerboard:9x7:0.1", "must be odd"),
    ("charuco:6x5:0.18:0.2", "marker size 0.2"),
    ("charuco:6x5:0.18:0.1:DICT_9X9_1", "DICT_9X9_1"),
])
def test_board_spec_errors(text, match):
    with pytest.raises(DataError, match=match):
        BoardSpec.parse(text)


# --------------------------------------------------------------------------- detection on rendered frames
def _small_camera() -> Camera:
    return Camera(K=np.array([[330.0, 0, 161.3], [0, 329.0, 118.7], [0, 0, 1]]),
                  dist=np.array([-0.21, 0.25, -0.001, -0.0014, -0.003]), R=np.eye(3), t=np.zeros(3),
                  width=320, height=240, name="small")


def _facing_pose(board: BoardSpec, depth: float, turn_deg: float, tilt_deg: float) -> BoardPose:
    """Board centred on the optical axis at ``depth`` m, turned in its plane and tilted."""
    a, b = np.deg2rad(turn_deg), np.deg2rad(tilt_deg)
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    Ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    R = Ry @ Rz
    w, h = board.size_m
    return BoardPose(R, np.array([0, 0, depth]) - R @ np.array([w / 2, h / 2, 0]))


@pytest.fixture(scope="module")
def small_rays():
    return subpixel_rays(_small_camera(), 3)


@pytest.mark.parametrize("spec, turns, max_px", [("checkerboard:10x7:0.1", (10.0, 190.0, -100.0), 0.3),
                                                 ("charuco:6x5:0.18:0.135", (160.0,), 0.8)])
def test_detected_corners_match_projection(small_rays, spec, turns, max_px):
    """A board drawn through the lens model is found where Camera.project puts its corners, with
    the board's own numbering whatever its turn (a half turn included)."""
    cam = _small_camera()
    board = BoardSpec.parse(spec)
    base = np.full((cam.height, cam.width, 3), 0.45)
    for turn in turns:
        pose = _facing_pose(board, 2.2 if board.kind == "checkerboard" else 2.6, turn, 25.0)
        img = render_board(cam, small_rays, board, board.texture(64, MARGIN_SQUARES), pose, base)
        rgb = cv2.GaussianBlur((img * 255).astype(np.float32), (0, 0), 0.6).round().astype(np.uint8)
        found = BoardDetector(board)(rgb)
        assert isinstance(found, tuple), turn
        ids, uv = found
        assert len(ids) >= (board.num_corners if board.kind == "checkerboard" else 12)
        truth = cam.project(board.object_points()[ids] @ pose.R.T + pose.t)
        err = np.linalg.norm(uv - truth, axis=-1)
        assert err.mean() < 0.15 and err.max() < max_px, (turn, err.mean(), err.max())


# --------------------------------------------------------------------------- solver
def test_intrinsics_recover_known_camera(rig):
    cam = rig["54138969"]
    dets = _synth({"c": cam}, BOARD, held_board_poses(BOARD, 120, seed=1))["c"]
    ks = sorted(dets.ids)
    assert len(ks) >= 15
    it = calibrate_intrinsics([BOARD.object_points()] * len(ks), [dets.uv[k] for k in ks], (512, 512))
    assert it.rms_px < 1e-4
    np.testing.assert_allclose(it.K, cam.K, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(it.dist, cam.dist, atol=1e-4)  # k3 trades off against k2 within the image


def test_bundle_adjust_recovers_perturbed_cameras(rig):
    names = ["54138969", "55011271"]  # neighbours around the volume
    cams = [rig[n] for n in names]
    V = len(cams)
    poses = held_board_poses(BOARD, 60, seed=2)
    dets = _synth({n: rig[n] for n in names}, BOARD, poses, noise_px=0.01)  # exact data never meets a relative tolerance
    cam_i, view_i, obj, uv = [], [], [], []
    for ci, n in enumerate(names):
        for k, ids in dets[n].ids.items():
            cam_i += [ci] * len(ids); view_i += [k] * len(ids)
            obj.append(BOARD.object_points()[ids]); uv.append(dets[n].uv[k])
    obs = Observations(np.array(cam_i), np.array(view_i), np.concatenate(obj), np.concatenate(uv))
    # the solve's frame is camera 0's: express the truth there
    R0, t0 = cams[0].R, cams[0].t
    R_true = np.stack([c.R @ R0.T for c in cams])
    t_true = np.stack([c.t - c.R @ R0.T @ t0 for c in cams])
    bR_true = np.stack([R0 @ p.R for p in poses])
    bt_true = np.stack([R0 @ p.t + t0 for p in poses])
    rng = np.random.default_rng(0)
    kick = rodrigues(rng.normal(0, np.deg2rad(0.3), (V, 3)))
    R_bad = kick @ R_true
    R_bad[0] = R_true[0]
    t_bad = t_true + np.r_[[np.zeros(3)], rng.normal(0, 0.01, (V - 1, 3))]
    K_bad = np.stack([c.K for c in cams]) * np.array([[1.005, 1, 1.004], [1, 0.995, 0.996], [1, 1, 1]])
    d_bad = np.stack([c.dist for c in cams]) + rng.normal(0, 0.005, (V, 5)) * [1, 1, 0.1, 0.1, 0]
    bR_bad = rodrigues(to_rvec(bR_true) + rng.normal(0, 0.01, (len(poses), 3)))
    bt_bad = bt_true + rng.normal(0, 0.01, bt_true.shape)
    ba = bundle_adjust(obs, R_bad, t_bad, K_bad, d_bad, bR_bad, bt_bad, ref=0, max_nfev=40)
    rms = np.sqrt(np.mean(np.sum(ba.residuals ** 2, -1)))
    assert rms < 0.015 and ba.cost_initial > 1e3 * ba.cost_final  # the noise's 0.014 px
    assert ba.R.shape == (2, 3, 3)
    seen = np.unique(obs.view)
    for v in range(V):  # the perturbation: 0.3 deg, 1 cm, 0.5 % focal, 1 px principal point
        assert _rot_deg(ba.R[v], R_true[v]) < 0.05
        np.testing.assert_allclose(ba.t[v], t_true[v], atol=2e-3)
        np.testing.assert_allclose(ba.K[v], cams[v].K, atol=0.5)
        assert _lens_px(ba.K[v], ba.dist[v], cams[v].K, cams[v].dist) < 0.5
    np.testing.assert_allclose(ba.board_t[seen], bt_true[seen], atol=3e-3)


def test_calibration_with_floor_gives_the_true_world_frame(rig):
    """Noise-free views of a board and of the floor board: the calibrated cameras are the true
    ones in the studio's world frame (Z up, origin and axes from the floor board)."""
    two = {n: rig[n] for n in ("54138969", "55011271")}
    dets = _synth(two, BOARD, held_board_poses(BOARD, 60, seed=3), noise_px=0.01)
    offset = (-1.0, 0.625)
    floor = _synth(two, FLOOR, [floor_pose(offset)], noise_px=0.01)
    cal = calibrate_detections(dets, BOARD, floor, FLOOR, offset, min_views=5)
    for n, c in cal.cameras.items():
        t = rig[n]
        assert _rot_deg(c.R, t.R) < 0.05
        np.testing.assert_allclose(c.center, t.center, atol=2e-3)
        np.testing.assert_allclose(c.K, t.K, atol=0.5)
        assert _lens_px(c.K, c.dist, t.K, t.dist) < 1.0  # 60 views of 2 cameras: the lens is the weakest part
        assert cal.report["cameras"][n]["rms_px"] < 0.015
    # a camera 10 cm off would break these: the frame is the floor's, not camera 0's


# --------------------------------------------------------------------------- bad input
def test_too_few_views_names_the_camera(rig):
    dets = _synth(rig, BOARD, held_board_poses(BOARD, 40, seed=3))
    n = "55011271"
    dets[n].ids = dict(list(dets[n].ids.items())[:3])
    with pytest.raises(DataError, match=rf"camera {n} \({n}.mp4\): board found in 3 of 40 frames, fewer than the 10"):
        calibrate_detections(dets, BOARD, min_views=10)


def test_cameras_without_shared_views_are_an_error(rig):
    poses = held_board_poses(BOARD, 80, seed=3)
    dets = _synth(rig, BOARD, poses)
    # camera 58860488 sees only frames no other camera sees
    others = set().union(*(set(d.ids) for n, d in dets.items() if n != "58860488"))
    d = dets["58860488"]
    d.ids = {k: v for k, v in d.ids.items() if k not in others}
    d.uv = {k: v for k, v in d.uv.items() if k in d.ids}
    with pytest.raises(DataError, match=r"camera\(s\) \['58860488'\]: no board view shared"):
        calibrate_detections(dets, BOARD, min_views=2)


def _take(tmp_path, name, frames_by_camera):
    take = tmp_path / name
    for cam, frames in frames_by_camera.items():
        (take / cam).mkdir(parents=True)
        for k, f in enumerate(frames):
            cv2.imwrite(str(take / cam / f"{k:04d}.png"), f)
    return take


def test_cli_board_never_seen_exits_1_and_writes_nothing(tmp_path, capsys):
    blank = [np.full((120, 160, 3), 128, np.uint8)] * 3
    take = _take(tmp_path, "board", {"camA": blank, "camB": blank})
    out = tmp_path / "cameras.json"
    rc = cli.main([str(take), "--board", "checkerboard:10x7:0.1", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert f"camera camA ({take / 'camA'}): board checkerboard:10x7:0.1 not found in any of 3 frames" in err
    assert not out.exists() and not list(tmp_path.glob(".cameras.json*"))


def test_cli_board_spec_that_does_not_match_the_print(tmp_path, capsys, small_rays):
    """A 10x7 board filmed, a 8x5 spec given: never found, and the message says to check the spec."""
    cam = _small_camera()
    pose = _facing_pose(BOARD, 2.2, 5.0, 20.0)
    img = render_board(cam, small_rays, BOARD, BOARD.texture(64, MARGIN_SQUARES), pose,
                       np.full((cam.height, cam.width, 3), 0.45))
    frame = cv2.cvtColor((img * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    take = _take(tmp_path, "board", {"small": [frame] * 2})
    assert isinstance(BoardDetector(BOARD)(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)), tuple)  # the right spec finds it
    out = tmp_path / "cameras.json"
    rc = cli.main([str(take), "--board", "checkerboard:8x5:0.1", "--out", str(out)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "camera small" in err and "not found in any of 2 frames" in err and "matches the printed board" in err
    assert not out.exists()


def test_cli_writes_cameras_json_from_image_folders(tmp_path, monkeypatch):
    """The command's file handling: take folders in (camera names from the folder names, the
    floor board for the floor take), cameras.json under the given subjects out. Detection and
    solve are stubbed here; the tests above check them."""
    rig = make_rig("S9", num_cameras=2, width=512, height=512, seed=0)
    frame = np.zeros((8, 8, 3), np.uint8)
    take = _take(tmp_path, "board", {n: [frame] for n in rig})
    ftake = _take(tmp_path, "floor", {n: [frame] for n in rig})
    seen = []

    def fake_detect_source(path, board, stride=1, min_corners=6, progress=None, **kw):
        seen.append((path.parent.name, path.name, str(board)))
        d = SourceDetections(path, 512, 512, 1)
        d.ids[0], d.uv[0] = np.arange(4), np.zeros((4, 2))
        return d

    def fake_calibrate(dets, board, floor, floor_board, offset, *a, **k):
        assert sorted(dets) == sorted(floor) == sorted(rig) and offset == (-1.0, 0.625)
        return Calibration(rig, {"cameras": {n: {"board_views": 1, "observations": 1, "rms_px": 0.1, "max_px": 0.2}
                                             for n in rig}, "bundle_adjustment": {
            "board_views": 1, "observations": 2, "nfev": 1, "seconds": 0.0}})
    monkeypatch.setattr(pipeline, "detect_source", fake_detect_source)
    monkeypatch.setattr(pipeline, "calibrate_detections", fake_calibrate)
    out = tmp_path / "cameras.json"
    rc = cli.main([str(take), "--board", str(BOARD), "--floor", str(ftake), "--floor-board", str(FLOOR),
                   "--floor-offset", "-1.0", "0.625", "--subject", "S9", "--subject", "S11", "--out", str(out),
                   "--report", str(tmp_path / "report.json")])
    assert rc == 0
    assert sorted(seen) == sorted([("floor", n, str(FLOOR)) for n in rig] + [("board", n, str(BOARD)) for n in rig])
    got = load_cameras(out)
    assert sorted(got) == ["S11", "S9"]
    for n, c in got["S9"].items():
        np.testing.assert_allclose(c.R, rig[n].R)
    assert (tmp_path / "report.json").exists()


def test_p3d_offers_calibrate():
    from pose3d import app
    from pose3d.tasks.calibrate import cli as calibrate_cli
    args = app.build_parser().parse_args(["calibrate", "takes/board", "--board", "checkerboard:10x7:0.1",
                                          "--out", "cams.json"])
    assert args.func is calibrate_cli.run_args and args.board_take == "takes/board" and args.out == "cams.json"
