"""Video decoding, boxes, affine crops, crops.h5/parquet and the augmenting Dataset."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose3d.data import crops as C
from pose3d.data.io import Sequence, save_cameras, write_mocap
from pose3d.data.video import VideoError, find_source, iter_frames, video_info
from pose3d.geometry.camera import Camera
from pose3d.skeleton import FLIP_PERM, JOINT_INDEX, JOINT_NAMES, PARENTS

W, H = 160, 120


# --------------------------------------------------------------------------- a tiny studio
def _standing_pose() -> np.ndarray:
    """A standing person (J, 3) in metres, world Z up, facing -Y."""
    p = {"pelvis": (0, 0, 0.95), "r_hip": (-0.12, 0, 0.93), "r_knee": (-0.13, 0, 0.5),
         "r_ankle": (-0.14, 0, 0.08), "l_hip": (0.12, 0, 0.93), "l_knee": (0.13, 0, 0.5),
         "l_ankle": (0.14, 0, 0.08), "spine": (0, 0, 1.2), "thorax": (0, 0, 1.45),
         "neck_nose": (0, -0.05, 1.6), "head_top": (0, 0, 1.78), "l_shoulder": (0.2, 0, 1.45),
         "l_elbow": (0.3, 0, 1.2), "l_wrist": (0.35, 0, 0.95), "r_shoulder": (-0.2, 0, 1.45),
         "r_elbow": (-0.3, 0, 1.2), "r_wrist": (-0.35, 0, 0.95)}
    return np.array([p[n] for n in JOINT_NAMES], np.float64)


def _camera(name: str, dx: float = 0.0) -> Camera:
    # camera x = world x, camera y = -world z, camera z = world y: looking along +Y from y = -4
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    t = np.array([-dx, 1.0, 4.0])
    K = np.array([[150.0, 0, W / 2], [0, 150.0, H / 2], [0, 0, 1]])
    return Camera(K=K, dist=np.array([-0.05, 0.01, 0.0, 0.0, 0.0]), R=R, t=t, width=W, height=H, name=name)


def _render(cam: Camera, pose: np.ndarray, background: np.ndarray) -> np.ndarray:
    img = background.copy()
    uv = cam.project(pose)
    for j, p in enumerate(PARENTS):
        if p >= 0:
            colour = (200, 60, 40) if "l_" in JOINT_NAMES[j] else (40, 80, 220)
            cv2.line(img, tuple(int(round(v)) for v in uv[j]), tuple(int(round(v)) for v in uv[p]),
                     colour, 3, cv2.LINE_AA)
    cv2.circle(img, tuple(int(round(v)) for v in uv[JOINT_INDEX["head_top"]]), 5, (230, 200, 170), -1)
    return img


def make_studio(root: Path, subjects=(("S1", "train"), ("S9", "test")), frames: int = 8,
                cameras=("cam0", "cam1"), image_folder_for=()) -> Path:
    """Write a tiny studio (mocap.h5, cameras.json, mp4 videos or image folders) under root."""
    rng = np.random.default_rng(0)
    bg = (rng.integers(60, 110, (H // 8, W // 8, 3))).astype(np.uint8)
    bg = cv2.resize(bg, (W, H), interpolation=cv2.INTER_NEAREST)
    seqs, cams = [], {}
    base = _standing_pose()
    for subj, split in subjects:
        cams[subj] = {c: _camera(c, dx=0.3 * i) for i, c in enumerate(cameras)}
        poses = np.repeat(base[None], frames, 0)
        ph = np.linspace(0, 2 * np.pi, frames, endpoint=False)
        for side, sgn in (("l_", 1), ("r_", -1)):
            for j, amp in (("elbow", 0.15), ("wrist", 0.35)):
                k = JOINT_INDEX[side + j]
                poses[:, k, 1] += amp * np.sin(ph + (0 if sgn > 0 else np.pi))
                poses[:, k, 2] += 0.5 * amp * (1 + np.sin(ph))
        poses[:, :, 0] += np.linspace(-0.8, 0.8, frames)[:, None]  # walks across the picture
        seqs.append(Sequence(subj, "Walking", poses.astype(np.float32), 25.0, split))
        for c, cam in cams[subj].items():
            out = root / "videos" / subj
            out.mkdir(parents=True, exist_ok=True)
            if (subj, c) in image_folder_for:
                d = out / f"Walking.{c}"
                d.mkdir()
                for k in range(frames):
                    cv2.imwrite(str(d / f"{k:06d}.png"), cv2.cvtColor(_render(cam, poses[k], bg), cv2.COLOR_RGB2BGR))
            else:
                vw = cv2.VideoWriter(str(out / f"Walking.{c}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (W, H))
                for k in range(frames):
                    vw.write(cv2.cvtColor(_render(cam, poses[k], bg), cv2.COLOR_RGB2BGR))
                vw.release()
    write_mocap(root / "mocap.h5", seqs)
    save_cameras(root / "cameras.json", cams)
    return root


@pytest.fixture(scope="module")
def studio(tmp_path_factory) -> Path:
    return make_studio(tmp_path_factory.mktemp("studio"), image_folder_for={("S9", "cam1")})


# --------------------------------------------------------------------------- video
def test_decode_video_and_image_folder(studio):
    v = find_source(studio / "videos", "S1", "Walking", "cam0")
    assert v.suffix == ".mp4"
    info = video_info(v)
    assert (info.num_frames, info.width, info.height) == (8, W, H)
    frames = list(iter_frames(v, stride=3))
    assert [k for k, _ in frames] == [0, 3, 6]
    assert frames[0][1].shape == (H, W, 3) and frames[0][1].dtype == np.uint8
    folder = find_source(studio / "videos", "S9", "Walking", "cam1")
    assert folder.is_dir()
    got = list(iter_frames(folder, stride=2))
    assert [k for k, _ in got] == [0, 2, 4, 6]
    # PNG is lossless: frame 0 equals the file, in RGB order
    ref = cv2.cvtColor(cv2.imread(str(sorted(folder.iterdir())[0])), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got[0][1], ref)


def test_truncated_and_corrupt_video_errors_name_the_file(studio, tmp_path):
    src = studio / "videos" / "S1" / "Walking.cam0.mp4"
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="cut.mp4"):
        list(iter_frames(cut))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(VideoError, match="garbage.mp4"):
        list(iter_frames(garbage))
    # a good video that holds fewer frames than the mocap promises
    with pytest.raises(VideoError, match="Walking.cam0.mp4.*frame 8 of 10"):
        list(iter_frames(src, expected_frames=10))
    with pytest.raises(VideoError, match="nope"):
        find_source(studio / "videos", "S1", "nope", "cam0")


# --------------------------------------------------------------------------- affines
def test_crop_affine_round_trip_points_and_pixels():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    # unit scale, integer offset: the crop is exactly the image patch
    box = np.array([20 - 0.5, 10 - 0.5, 20 + 63.5, 10 + 63.5])  # covers pixels 20..83, 10..73
    A = C.crop_affine(box, 64)
    crop = C.warp_crop(img, A, 64)
    np.testing.assert_array_equal(crop, img[10:74, 20:84])
    # and back: crop -> image reproduces the patch exactly
    back = cv2.warpAffine(crop, C.invert_affine(A), (120, 90), flags=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(back[10:74, 20:84], img[10:74, 20:84])
    # points: image -> crop -> image is the identity for arbitrary boxes
    boxes = np.array([[3.3, -7.1, 103.3, 92.9], [50.0, 20.0, 70.0, 40.0]])
    A = C.crop_affine(boxes, 128)
    pts = rng.uniform(-50, 200, (2, 17, 2))
    np.testing.assert_allclose(C.apply_affine(C.invert_affine(A), C.apply_affine(A, pts)), pts, atol=1e-10)
    # box edges map onto crop edges, box centre onto crop centre
    edges = C.apply_affine(A[0], np.array([[3.3, -7.1], [103.3, 92.9], [53.3, 42.9]]))
    np.testing.assert_allclose(edges, [[-0.5, -0.5], [127.5, 127.5], [63.5, 63.5]], atol=1e-10)
    # torch path agrees
    np.testing.assert_allclose(C.apply_affine(A, torch.as_tensor(pts)).numpy(), C.apply_affine(A, pts))


def test_square_box_and_background_box():
    pts = np.array([[[10.0, 20.0], [30.0, 80.0], [np.nan, np.nan]]])
    b = C.square_box(pts, margin=0.5)[0]
    np.testing.assert_allclose(b, [20 - 45, 50 - 45, 20 + 45, 50 + 45])
    bg = np.full((60, 80, 3), 100, np.uint8)
    frame = bg.copy()
    frame[10:40, 30:45] = 200  # the person
    frame[55:57, 2:4] = 255    # a small speck: removed by the opening
    box = C.foreground_box(frame, bg, threshold=30, margin=0.0)
    # pixels x 30..44, y 10..39 span [29.5, 44.5] x [9.5, 39.5]: centre (37, 24.5), side 30
    np.testing.assert_allclose(box, [37 - 15, 24.5 - 15, 37 + 15, 24.5 + 15], atol=1e-9)
    assert C.foreground_box(bg, bg, threshold=30, margin=0.0) is None


# --------------------------------------------------------------------------- files
@pytest.mark.parametrize("box_source", ["gt", "background"])
def test_extract_writes_h5_and_index(studio, tmp_path, box_source):
    h5, pq = tmp_path / "crops.h5", tmp_path / "crops.parquet"
    stats = C.extract_crops(studio / "mocap.h5", studio / "cameras.json", studio / "videos", h5, pq,
                            crop_size=64, frame_stride=2, box_source=box_source, bg_frames=8,
                            progress=False)
    assert stats["crops"] == 2 * 2 * 4 and stats["videos"] == 4
    idx = C.read_crop_index(pq)
    assert idx.crop_size == 64 and idx.meta["joint_names"] == list(JOINT_NAMES)
    assert idx.meta["image_size"] == {"cam0": [W, H], "cam1": [W, H]}
    assert list(idx.keys["frame"][:4]) == [0, 2, 4, 6]
    assert set(idx.keys["split"]) == {"train", "test"}
    crops = C.read_crops(h5)
    assert crops.shape == (16, 64, 64, 3) and crops.dtype == np.uint8
    # GT joints fall inside their crops, and the stored affine maps the crop onto the frame
    jc = C.apply_affine(idx.image_to_crop(), idx.gt_2d.astype(np.float64))
    assert np.all((jc > -0.5) & (jc < 63.5))
    frame0 = next(iter_frames(studio / "videos" / "S1" / "Walking.cam0.mp4"))[1]
    recrop = C.warp_crop(frame0, C.invert_affine(idx.crop_to_image[0].astype(np.float64)), 64)
    assert np.abs(recrop.astype(int) - crops[0]).mean() < 1.0  # float32 affine storage only
    # read back in arbitrary order
    np.testing.assert_array_equal(C.read_crops(h5, np.array([5, 1, 5])), crops[[5, 1, 5]])


def test_extract_corrupt_video_raise_or_skip(studio, tmp_path):
    import shutil

    bad = tmp_path / "studio"
    shutil.copytree(studio, bad)
    v = bad / "videos" / "S1" / "Walking.cam1.mp4"
    v.write_bytes(v.read_bytes()[:300])
    h5, pq = tmp_path / "crops.h5", tmp_path / "crops.parquet"
    kw = dict(crop_size=32, progress=False)
    with pytest.raises(VideoError, match="Walking.cam1.mp4"):
        C.extract_crops(bad / "mocap.h5", bad / "cameras.json", bad / "videos", h5, pq, **kw)
    assert not h5.exists() and not pq.exists()  # nothing half-written
    stats = C.extract_crops(bad / "mocap.h5", bad / "cameras.json", bad / "videos", h5, pq,
                            on_error="skip", **kw)
    assert stats["videos"] == 3 and len(stats["skipped_videos"]) == 1
    assert len(C.read_crop_index(pq)) == 3 * 8


# --------------------------------------------------------------------------- dataset
def test_dataset_flip_augmentation_swaps_joints_consistently():
    S = 32
    img = np.zeros((1, S, S, 3), np.uint8)
    joints = np.zeros((1, 17, 2), np.float32) + 16
    joints[0, JOINT_INDEX["l_wrist"]] = [5, 7]
    img[0, 7, 5] = 255  # a bright dot at the left wrist
    aug = C.Augmentation(scale=0, rotation=0, rotation_prob=0, flip_prob=1.0, color=0, brightness=0, shift=0)
    ds = C.CropDataset(img, joints, aug)
    out, j, w = ds.sample(0)
    r = JOINT_INDEX["r_wrist"]
    np.testing.assert_allclose(j[r], [S - 1 - 5, 7])  # mirrored and now called r_wrist
    assert out[7, S - 1 - 5].max() == 255
    assert w.sum() == 17
    x, jj, ww = ds.batch(np.array([0, 0]))
    assert x.shape == (2, 3, S, S) and jj.shape == (2, 17, 2) and ww.shape == (2, 17)
    # deterministic per (seed, epoch, item)
    aug2 = C.Augmentation(scale=0.25, rotation=30.0, rotation_prob=0.6, flip_prob=0.5, color=0.2,
                          brightness=0.2, shift=0.0)
    ds2 = C.CropDataset(np.repeat(img, 2, 0), np.repeat(joints, 2, 0), aug2, seed=3)
    a = ds2.sample(1)
    np.testing.assert_array_equal(a[0], ds2.sample(1)[0])
    ds2.set_epoch(1)
    assert not np.array_equal(a[1], ds2.sample(1)[1])
    assert list(FLIP_PERM[:4]) == [0, 4, 5, 6]


def test_crop_dataset_resamples_to_the_epoch_size():
    """set_epoch(e, size): image and joints resampled from S to size with the pixel-centre
    convention x_s = (x_S + 0.5) s / S - 0.5; the joint stays on its bright block."""
    S, s = 64, 32
    img = np.zeros((1, S, S, 3), np.uint8)
    img[0, 20:24, 40:44] = 255  # a 4x4 block centred on (x, y) = (41.5, 21.5)
    joints = np.full((1, 17, 2), 8.0, np.float32)
    joints[0, 0] = [41.5, 21.5]
    joints[0, 1] = [S - 0.6, 3.0]  # inside at S (< S - 0.5), still inside at s
    ds = C.CropDataset(img, joints)
    ds.set_epoch(2, size=s)
    out, j, w = ds.sample(0)
    assert out.shape == (s, s, 3) and ds.epoch == 2
    np.testing.assert_allclose(j[0], [20.5, 10.5])
    np.testing.assert_allclose(j[1], [31.45, 1.25], atol=1e-5)
    assert out[10, 20].min() == 255 and out[10, 20:22].min() == 255 and out[12, 20].max() == 0
    assert w.sum() == 17
    x, _, _ = ds.batch(np.array([0]))
    assert x.shape == (1, 3, s, s)
    ds.set_epoch(3)  # back to the stored size
    assert ds.sample(0)[0].shape == (S, S, 3)
