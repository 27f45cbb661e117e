"""BlazePose for footage (pose3d.tasks.footage.blazepose): SSD anchors and box decoding on hand-built
cases, the ROI geometry, the landmark -> H36M-17 mapping (by name and fitted), the weights' cache
and its errors, and one real-model run on a studio frame (skipped without the weights: the tests
never download; `p3d fetch-models` puts them in $POSE3D_CACHE or ~/.cache/pose3d)."""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest

from pose3d import app
from pose3d.data.io import DataError
from pose3d.skeleton import JOINT_INDEX, JOINT_NAMES
from pose3d.tasks.footage import blazepose as B
from pose3d.tasks.footage.keypoints import MEDIAPIPE33, mapping_matrix

from test_video_crops import make_studio  # noqa: E402


# --------------------------------------------------------------------------- detector geometry
def test_ssd_anchors_hand_built():
    a = B.ssd_anchors(32, strides=(8, 16, 16), per_layer=2)
    # stride 8: a 4 x 4 grid, 2 anchors per cell; stride 16 (two layers): a 2 x 2 grid, 4 per cell
    assert a.shape == (4 * 4 * 2 + 2 * 2 * 4, 2)
    np.testing.assert_array_equal(a[0], [0.125, 0.125])
    np.testing.assert_array_equal(a[1], [0.125, 0.125])
    np.testing.assert_array_equal(a[2], [0.375, 0.125])       # columns run fastest
    np.testing.assert_array_equal(a[8], [0.125, 0.375])       # then rows
    np.testing.assert_array_equal(a[31], [0.875, 0.875])
    np.testing.assert_array_equal(a[32:36], [[0.25, 0.25]] * 4)
    np.testing.assert_array_equal(a[36], [0.75, 0.25])
    np.testing.assert_array_equal(a[47], [0.75, 0.75])
    full = B.ssd_anchors()  # the pose detector's head: 28^2 * 2 + 14^2 * 2 + 7^2 * 6
    assert full.shape == (2254, 2)
    np.testing.assert_allclose(full[0], [0.5 / 28, 0.5 / 28])
    np.testing.assert_allclose(full[-1], [6.5 / 7, 6.5 / 7])


def test_decode_detections_exact_values():
    anchors = np.array([[0.5, 0.5], [0.25, 0.75]])
    raw = np.zeros((2, 12))
    raw[0, :4] = [22.4, -11.2, 44.8, 22.4]      # centre offset (0.1, -0.05), size (0.2, 0.1) of 224
    raw[0, 4:8] = [0.0, 0.0, 112.0, 224.0]
    raw[1, 4:6] = [-56.0, 56.0]
    boxes, kps, scores = B.decode_detections(raw, np.array([[0.0], [1000.0]]), anchors, 224)
    np.testing.assert_allclose(boxes[0], [0.5, 0.4, 0.7, 0.5], atol=1e-12)
    np.testing.assert_allclose(boxes[1], [0.25, 0.75, 0.25, 0.75], atol=1e-12)
    np.testing.assert_allclose(kps[0], [[0.5, 0.5], [1.0, 1.5], [0.5, 0.5], [0.5, 0.5]], atol=1e-12)
    np.testing.assert_allclose(kps[1, 0], [0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(scores, [0.5, 1.0 / (1.0 + math.exp(-100))])


def test_best_detection_weighted_merge():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [3.0, 3.0, 4.0, 4.0], [0.0, 0.0, 1.0, 1.0]])
    kps = np.array([[[0.0, 0.0]], [[1.0, 2.0]], [[9.0, 9.0]], [[5.0, 5.0]]])
    scores = np.array([0.9, 0.6, 0.7, 0.2])  # the last is below the threshold: not merged
    box, kp, score = B.best_detection(boxes, kps, scores, threshold=0.5, overlap=0.3)
    np.testing.assert_allclose(box, [0.04, 0.0, 1.04, 1.0])
    np.testing.assert_allclose(kp, [[0.4, 0.8]])
    assert score == 0.9
    assert B.best_detection(boxes, kps, scores, threshold=0.95) is None


# --------------------------------------------------------------------------- ROI
def test_roi_from_points_side_and_angle():
    up = B.roi_from_points((100.0, 200.0), (100.0, 100.0))   # scale point straight above the hips
    assert up.centre == (100.0, 200.0) and up.side == pytest.approx(250.0) and up.angle == pytest.approx(0.0)
    right = B.roi_from_points((100.0, 200.0), (140.0, 200.0))
    assert right.angle == pytest.approx(math.pi / 2) and right.side == pytest.approx(100.0)
    # the crop's up direction points at the scale point: the crop's top centre maps onto that side
    A = B.roi_affine(right, 256)
    top = B.apply_affine(B.invert_affine(A), np.array([[127.5, -0.5]]))[0]
    np.testing.assert_allclose(top, [150.0, 200.0], atol=1e-9)
    np.testing.assert_allclose(B.apply_affine(A, np.array([[100.0, 200.0]]))[0], [127.5, 127.5], atol=1e-9)


def test_roi_crop_round_trip():
    roi = B.ROI((301.3, 177.9), 213.0, 0.83)
    A = B.roi_affine(roi, 256)
    rng = np.random.default_rng(0)
    p = rng.uniform(150, 400, (50, 2))
    back = B.apply_affine(B.invert_affine(A), B.apply_affine(A, p))
    assert np.abs(back - p).max() < 1e-4
    # a bright pixel of the image lands where the affine says in the warped crop
    img = np.zeros((480, 640, 3), np.uint8)
    img[190, 320] = 255
    crop = B.warp_crop(img, A, 256)
    v, u = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    assert np.abs(B.apply_affine(A, np.array([[320.0, 190.0]]))[0] - [u, v]).max() <= 1.0
    # the letterbox of a 640 x 480 frame: centre to centre, the top edge 28 px down
    L = B.letterbox_affine(640, 480, 224)
    np.testing.assert_allclose(B.apply_affine(L, np.array([[319.5, 239.5], [-0.5, -0.5]])),
                               [[111.5, 111.5], [-0.5, 27.5]], atol=1e-9)


# --------------------------------------------------------------------------- H36M-17 mapping
def _synthetic_landmarks(T: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 50, (T, 33, 2)) + 200, rng.uniform(0.2, 1.0, (T, 33))


def test_name_mapping_gives_the_expected_joints():
    lm, vis = _synthetic_landmarks()
    pts, sc = B.landmarks_to_h36m(lm, vis, "names")
    L = {n: lm[:, k] for k, n in enumerate(MEDIAPIPE33)}
    V = {n: vis[:, k] for k, n in enumerate(MEDIAPIPE33)}
    J = JOINT_INDEX
    thorax = (L["l_shoulder"] + L["r_shoulder"]) / 2
    pelvis = (L["l_hip"] + L["r_hip"]) / 2
    expect = {"pelvis": pelvis, "thorax": thorax, "spine": (pelvis + thorax) / 2, "neck_nose": L["nose"],
              "head_top": 1.5 * (L["l_ear"] + L["r_ear"]) / 2 - 0.5 * thorax,
              **{n: L[n] for n in ("l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle", "l_shoulder",
                                   "r_shoulder", "l_elbow", "r_elbow", "l_wrist", "r_wrist")}}
    assert set(expect) == set(JOINT_NAMES)
    for n, x in expect.items():
        np.testing.assert_allclose(pts[:, J[n]], x, atol=1e-9, err_msg=n)
    np.testing.assert_allclose(sc[:, J["l_wrist"]], V["l_wrist"])
    np.testing.assert_allclose(sc[:, J["pelvis"]], (V["l_hip"] + V["r_hip"]) / 2)
    np.testing.assert_allclose(mapping_matrix(MEDIAPIPE33).sum(1), 1.0, atol=1e-12)


def test_fit_mapping_recovers_a_known_affine_combination():
    rng = np.random.default_rng(1)
    W = mapping_matrix(MEDIAPIPE33)
    J, K = JOINT_INDEX, MEDIAPIPE33.index
    W[J["l_wrist"]] = 0
    W[J["l_wrist"], [K("l_wrist"), K("l_elbow"), K("l_index")]] = [0.9, -0.1, 0.2]
    W[J["pelvis"]] = 0
    W[J["pelvis"], [K("l_hip"), K("r_hip"), K("l_shoulder"), K("r_shoulder")]] = [0.55, 0.55, -0.05, -0.05]
    lm = rng.normal(0, 60, (200, 33, 2)) + 250
    gt = np.einsum("jk,tkc->tjc", W, lm)
    fit = B.fit_mapping(lm, gt, np.full(200, 100.0), ridge=0.0)
    np.testing.assert_allclose(fit, W, atol=1e-8)
    # with a ridge, a joint without signal keeps the by-name weights
    fit0 = B.fit_mapping(lm, np.full_like(gt, np.nan), np.full(200, 100.0), ridge=1e-3)
    np.testing.assert_allclose(fit0, mapping_matrix(MEDIAPIPE33), atol=1e-12)


def test_the_committed_fitted_mapping_is_what_the_video_route_applies(tmp_path):
    W = B.load_mapping()
    d = json.loads(B.MAPPING_FILE.read_text())
    np.testing.assert_array_equal(W, np.asarray(d["weights"]))
    assert W.shape == (17, 33) and np.abs(W.sum(1) - 1).max() < 1e-4
    assert set(d["fitted_on"]["subjects"]) <= {"S1", "S5", "S6", "S7", "S8"}  # train subjects only
    assert not np.allclose(W, mapping_matrix(MEDIAPIPE33))
    studio = make_studio(tmp_path / "studio", subjects=(("S1", "train"),), frames=4, cameras=("cam0",))
    video = studio / "videos" / "S1" / "Walking.cam0.mp4"
    lm, vis = _synthetic_landmarks(4)
    lm[2] = np.nan  # a frame without a person

    class Fake:
        def track(self, frames, T):
            assert len(list(frames)) == T
            return lm, vis, np.zeros((T, 4)), 1

    kp = B.blazepose_video(video, progress=False, model=Fake())
    expect, sc = B.landmarks_to_h36m(lm, vis, W)
    np.testing.assert_allclose(kp.points_px, expect, atol=1e-3)
    assert np.isnan(kp.points_px[2]).all() and (kp.scores[2] == 0).all()
    np.testing.assert_allclose(kp.scores[[0, 1, 3]], sc[[0, 1, 3]], atol=1e-6)
    with pytest.raises(ValueError, match="names"):
        B.landmarks_to_h36m(lm, vis, "nearest")


def test_bad_mapping_file_is_named(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"weights": [[1.0] * 33] * 16, "joints": list(JOINT_NAMES), "landmarks": list(MEDIAPIPE33)}))
    with pytest.raises(DataError, match="m.json"):
        B.load_mapping(p)


# --------------------------------------------------------------------------- weights
def test_missing_weights_name_fetch_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("POSE3D_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="p3d fetch-models"):
        B.model_paths()
    (tmp_path / "cache" / "blazepose").mkdir(parents=True)
    for name in B.MODELS:
        (tmp_path / "cache" / "blazepose" / name).write_bytes(b"not a model")
    with pytest.raises(DataError, match="sha256.*p3d fetch-models"):
        B.model_paths()
    # the command: exit 1, one line naming the command to run, no output folder
    studio = make_studio(tmp_path / "studio", subjects=(("S1", "train"),), frames=3, cameras=("cam0",))
    video = studio / "videos" / "S1" / "Walking.cam0.mp4"
    rc = app.main(["-q", "infer", str(video), "--detector", "blazepose", "--out", str(tmp_path / "out")])
    assert rc == 1
    assert "p3d fetch-models" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fetch_models_checks_the_wheel(tmp_path):
    wheel = tmp_path / "mediapipe-0.10.21-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, (member, _) in B.MODELS.items():
            z.writestr(member, b"tampered")
    with pytest.raises(DataError, match="sha256"):
        B.fetch_models(tmp_path / "cache", wheel=wheel)
    assert not any(p.name.endswith(".tflite") for p in (tmp_path / "cache" / "blazepose").iterdir())
    with pytest.raises(DataError, match="not a readable wheel"):
        B.fetch_models(tmp_path / "cache", wheel=tmp_path / "missing.whl")


def _cached_models():
    try:
        return B.model_paths()
    except DataError as e:
        pytest.skip(f"BlazePose weights not in the cache ({e})")


def test_fetch_models_from_a_local_wheel(tmp_path):
    paths = _cached_models()
    wheel = tmp_path / "mediapipe-0.10.21-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, (member, _) in B.MODELS.items():
            z.write(paths[name], member)
    got = B.fetch_models(tmp_path / "cache", wheel=wheel)
    assert {p.read_bytes() for p in got.values()} == {p.read_bytes() for p in paths.values()}
    assert sorted(p.name for p in (tmp_path / "cache" / "blazepose").iterdir()) == sorted(B.MODELS)


# --------------------------------------------------------------------------- the real models
def test_blazepose_finds_the_person_in_a_studio_frame():
    _cached_models()
    from pose3d.data.studio import anthropometry as A
    from pose3d.data.studio import motion as M
    from pose3d.data.studio import render as R
    from pose3d.data.studio import rig

    cam = rig.make_rig("S9", 4, 256, 256, seed=0)["54138969"]
    subj = A.make_subject("S9", 0)
    m = M.generate(subj, "Walking", 1.0, 10.0, 0)
    img, _ = R.render_frame(R.CameraView(cam, 1), R.build_body(m.positions, subj), 5, R.material_colors(subj),
                            R.Lighting.random(np.random.default_rng(0)))
    img = np.clip(np.asarray(img) * 255, 0, 255).astype(np.uint8)  # render_frame: float RGB in [0, 1]
    bp = B.BlazePose(threads=1)
    with pytest.raises(ValueError, match="uint8"):
        bp.detect(img.astype(np.float32) / 255)
    roi = bp.detect(img)
    assert roi is not None
    gt = cam.project(m.positions[5])
    size = np.ptp(gt, 0).max()
    assert np.linalg.norm(np.asarray(roi.centre) - gt[JOINT_INDEX["pelvis"]]) < 0.25 * size
    pts, vis, flag = bp.landmarks(img, roi)
    assert flag > 0.5 and pts.shape == (39, 2)
    h36m, _ = B.landmarks_to_h36m(pts[None, :33], vis[None, :33])
    err = np.linalg.norm(h36m[0] - gt, axis=-1)
    assert err.mean() < 0.1 * size, (err.round(1), size)  # measured: 1.9 px of a 98 px person


def test_unknown_detector_is_an_error(tmp_path):
    from pose3d.tasks.footage import infer

    studio = make_studio(tmp_path / "studio", subjects=(("S1", "train"),), frames=3, cameras=("cam0",))
    with pytest.raises(DataError, match="detector 'openpose': unknown.*pose_resnet, blazepose"):
        infer([studio / "videos" / "S1" / "Walking.cam0.mp4"], tmp_path / "out", detector="openpose")
    assert not (tmp_path / "out").exists()


def test_mirror_to_agree_exchanges_only_the_flipped_frames():
    from pose3d.skeleton import FLIP_PERM
    from pose3d.tasks.footage.pipeline import mirror_to_agree

    rng = np.random.default_rng(3)
    ref = rng.normal(0, 40, (4, 17, 2)) + 200
    pts = ref + rng.normal(0, 1, ref.shape)
    pts[1] = pts[1][list(FLIP_PERM)]          # frame 1 detected front to back
    sc = np.tile(np.arange(17.0), (4, 1))
    ref[3] = np.nan                           # frame 3: no 3D to compare with -> kept
    pts[3] = pts[3][list(FLIP_PERM)]
    p, s, m = mirror_to_agree(pts, sc, ref)
    assert m.tolist() == [False, True, False, False]
    np.testing.assert_array_equal(p[1], pts[1][list(FLIP_PERM)])
    np.testing.assert_array_equal(s[1], np.arange(17.0)[list(FLIP_PERM)])
    np.testing.assert_array_equal(p[[0, 2, 3]], pts[[0, 2, 3]])
