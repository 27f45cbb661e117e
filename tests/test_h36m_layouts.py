"""Human3.6M in four layouts -> studio layout: tiny fixtures written here, emulating the
third-party files (pickles included), with Human3.6M's published camera values for S1's camera
54138969. The other three cameras are that camera turned about the vertical axis (synthetic;
only one camera's published values are used). Each layout's own 2D is made by the layout's own
projection formula, implemented here independently of pose3d.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from pose3d.data import h36m
from pose3d.data.io import DataError, load_cameras, read_mocap, read_table, column_points
from pose3d.skeleton import H36M32_NAMES, h36m32_indices_of_17

# --- Human3.6M's published values, S1 camera 54138969 (VideoPose3D's camera tables)
Q0 = np.array([0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088])
C0 = np.array([1841.1070556640625, 4955.28466796875, 1563.4454345703125])
CENTER = np.array([512.54150390625, 515.4514770507812])
FOCAL = np.array([1145.0494384765625, 1143.7811279296875])
RADIAL = np.array([-0.20709891617298126, 0.24777518212795258, -0.0030751503072679043])
TANG = np.array([-0.0009756988729350269, -0.00142447161488235])
CAMS = h36m.H36M_CAMERAS
I17 = h36m32_indices_of_17()


def qmul(a, b):
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def qmat(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rig():
    """4 cameras: {id: (q_c2w (w,x,y,z), centre mm)}; camera k = camera 0 turned k*90 deg about z."""
    out = {}
    for k, cid in enumerate(CAMS):
        th = k * np.pi / 2
        qz = np.array([np.cos(th / 2), 0, 0, np.sin(th / 2)])
        Rz = qmat(qz)
        out[cid] = (qmul(qz, Q0), Rz @ C0)
    return out


def h36m_project(X_mm, R_w2c, C_mm):
    """Human3.6M's own ProjectPointRadial (also Martinez's): x_cam = R (X - C), its tangential term."""
    X = (R_w2c @ (X_mm - C_mm).T)  # (3, N)
    XX = X[:2] / X[2]
    r2 = (XX ** 2).sum(0)
    radial = 1 + RADIAL[0] * r2 + RADIAL[1] * r2 ** 2 + RADIAL[2] * r2 ** 3
    tan = TANG[0] * XX[1] + TANG[1] * XX[0]
    XXX = XX * (radial + tan) + np.outer([TANG[1], TANG[0]], r2)
    return (FOCAL[:, None] * XXX + CENTER[:, None]).T


def vp3d_project(X_cam_m):
    """VideoPose3D's project_to_2d (its own tangential term), in pixels."""
    XX = X_cam_m[..., :2] / X_cam_m[..., 2:]
    r2 = (XX ** 2).sum(-1, keepdims=True)
    radial = 1 + RADIAL[0] * r2 + RADIAL[1] * r2 ** 2 + RADIAL[2] * r2 ** 3
    tan = (TANG * XX).sum(-1, keepdims=True)
    XXX = XX * (radial + tan) + TANG * r2
    return FOCAL * XXX + CENTER


def poses32(T, seed=0):
    """(T, 32, 3) world mm: a body-sized cloud near the origin, z up."""
    rng = np.random.default_rng(seed)
    base = rng.uniform([-300, -300, 100], [300, 300, 1800], size=(32, 3))
    drift = np.linspace(0, 200, T)[:, None, None] * np.array([1.0, 0.5, 0.0])
    return base[None] + drift + rng.normal(0, 10, size=(T, 32, 3))


def write_jpgs(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    img = np.zeros((8, 8, 3), np.uint8)
    for n in names:
        cv2.imwrite(str(folder / n), img)


def cameras_json(path: Path, subjects=("S1", "S9", "S11")):
    intr = {c: {"focal_length": FOCAL.tolist(), "center": CENTER.tolist(), "radial_distortion": RADIAL.tolist(),
                "tangential_distortion": TANG.tolist(), "res_w": h36m.H36M_IMAGE_SIZE[c][0],
                "res_h": h36m.H36M_IMAGE_SIZE[c][1]} for c in CAMS}
    extr = {s: {c: {"orientation": q.tolist(), "translation": C.tolist()} for c, (q, C) in rig().items()}
            for s in subjects}
    path.write_text(json.dumps({"intrinsics": intr, "extrinsics": extr}))
    return path


def cameras_h5(path: Path, subjects=(1,)):
    """Martinez's cameras.h5: R stored transposed (MATLAB order), T centre (3,1), Name char codes."""
    with h5py.File(path, "w") as f:
        for s in subjects:
            for k, (cid, (q, C)) in enumerate(rig().items()):
                g = f.create_group(f"subject{s}/camera{k + 1}")
                R_w2c = qmat(q).T
                g["R"] = R_w2c.T
                g["T"] = C.reshape(3, 1)
                g["f"] = FOCAL.reshape(2, 1)
                g["c"] = CENTER.reshape(2, 1)
                g["k"] = RADIAL.reshape(3, 1)
                g["p"] = TANG.reshape(2, 1)
                g["Name"] = np.array([[ord(ch)] for ch in cid], np.float64)
    return path


def reprojection_px(prepared: Path, layout_2d):
    """Max |project(converted 3D, converted camera) - layout 2D| over the given
    {(subject, action, camera): (T, 17, 2)} and rows {(subject, action): frame indices}."""
    seqs = {(s.subject, s.action): s for s in read_mocap(prepared / "mocap.h5")}
    cams = load_cameras(prepared / "cameras.json")
    worst = 0.0
    for (s, a, c), uv in layout_2d.items():
        pred = cams[s][c].project(seqs[(s, a)].positions_world.astype(np.float64))
        worst = max(worst, float(np.abs(pred - uv).max()))
    return worst


# ============================================================================ (a) VideoPose3D
def write_vp3d(tmp: Path, T=12, short_2d=None, n_views=4):
    sequences = {"S1": {"Directions 1": poses32(T, 1), "Walking": poses32(T + 3, 2)},
                 "S9": {"Greeting": poses32(T, 3)}}
    pos3d = {s: {a: (x / 1000.0).astype(np.float32) for a, x in acts.items()} for s, acts in sequences.items()}
    pos2d = {}
    for s, acts in sequences.items():
        for a, x in acts.items():
            views = []
            for cid, (q, C) in list(rig().items())[:n_views]:
                R = qmat(q).T
                xc = ((x - C) @ R.T)[:, I17] / 1000.0
                uv = vp3d_project(xc).astype(np.float32)
                if short_2d == (s, a):
                    uv = uv[:-2]
                views.append(np.concatenate([uv, uv[-1:]]) if (s, a) == ("S1", "Walking") else uv)  # 1 extra frame
            pos2d.setdefault(s, {})[a] = views
    p3 = tmp / "data_3d_h36m.npz"
    p2 = tmp / "data_2d_h36m_cpn.npz"
    np.savez_compressed(p3, positions_3d=pos3d)
    np.savez_compressed(p2, positions_2d=pos2d, metadata={"layout_name": "h36m", "num_joints": 17,
                                                          "keypoints_symmetry": [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]})
    return p3, p2, pos2d


def test_vp3d_layout_round_trip(tmp_path):
    p3, p2, pos2d = write_vp3d(tmp_path)
    cams = cameras_json(tmp_path / "cams.json")
    ds = h36m.load_layout("vp3d", p3, source_2d=p2, cameras=cams, allow_pickle=True)
    out = tmp_path / "prepared"
    summary = h36m.write_prepared(out, ds)
    assert summary["sequences"] == 3 and summary["images"] == 0
    mocap = {(s.subject, s.action): s for s in read_mocap(out / "mocap.h5")}
    assert set(mocap) == {("S1", "Directions 1"), ("S1", "Walking"), ("S9", "Greeting")}
    assert mocap[("S9", "Greeting")].split == "test" and mocap[("S1", "Walking")].split == "train"
    assert mocap[("S1", "Walking")].positions_world.shape == (15, 17, 3)  # extra 2D frame cut
    assert mocap[("S1", "Walking")].fps == 50.0
    layout_2d = {(s, a, c): pos2d[s][a][i][:len(mocap[(s, a)].positions_world)]
                 for s, acts in pos2d.items() for a in acts for i, c in enumerate(CAMS)}
    err = reprojection_px(out, layout_2d)
    assert err < 1.0, err
    det, meta = read_table(out / "detections_2d.parquet")
    df = det.to_pandas()
    assert len(df) == (12 + 15 + 12) * 4 and meta["model_hash"] == "import:cpn"
    row = df[(df.subject == "S1") & (df.action == "Walking") & (df.camera == CAMS[2]) & (df.frame == 7)]
    np.testing.assert_allclose(column_points(row, "keypoints_px", (17, 2))[0], pos2d["S1"]["Walking"][2][7], atol=1e-4)
    assert meta["image_size"][CAMS[0]] == [1000, 1002]


def test_vp3d_pickle_needs_opt_in(tmp_path):
    p3, p2, _ = write_vp3d(tmp_path)
    cams = cameras_json(tmp_path / "cams.json")
    with pytest.raises(DataError, match=r"data_3d_h36m\.npz.*prepare\.allow_pickle"):
        h36m.load_layout("vp3d", p3, source_2d=p2, cameras=cams, allow_pickle=False)


def test_vp3d_mismatched_frame_counts_name_the_sequence(tmp_path):
    p3, p2, _ = write_vp3d(tmp_path, short_2d=("S1", "Directions 1"))
    cams = cameras_json(tmp_path / "cams.json")
    with pytest.raises(DataError, match=r"S1/Directions 1 camera 54138969: 2D has 10 frames but 3D has 12"):
        h36m.load_layout("vp3d", p3, source_2d=p2, cameras=cams, allow_pickle=True)
    p3, p2, _ = write_vp3d(tmp_path)  # longer 2D without the trim opt-in
    with pytest.raises(DataError, match=r"S1/Walking camera 54138969: 2D has 16 frames but 3D has 15"):
        h36m.load_layout("vp3d", p3, source_2d=p2, cameras=cams, allow_pickle=True, trim_extra_2d=False)


def test_vp3d_missing_camera_names_the_sequence(tmp_path):
    p3, p2, _ = write_vp3d(tmp_path, n_views=3)
    cams = cameras_json(tmp_path / "cams.json")
    with pytest.raises(DataError, match=r"S1/Directions 1: 3 camera views.*a camera is missing"):
        h36m.load_layout("vp3d", p3, source_2d=p2, cameras=cams, allow_pickle=True)
    cams = cameras_json(tmp_path / "cams1.json", subjects=("S1",))  # S9 has no extrinsics
    with pytest.raises(DataError, match=r"S9.*camera 54138969 of subject S9 is missing"):
        h36m.load_layout("vp3d", p3, cameras=cams, allow_pickle=True)


# ============================================================================ (b) h36m-fetch
def write_h36m_fetch(root: Path, frames=(1, 6, 11, 16, 21), drop_camera=None, bad_2d=False):
    x = poses32(30, 4)
    seq = root / "S1" / "Directions-1"
    seq.mkdir(parents=True)
    cols = {k: [] for k in ("pose/3d", "pose/2d", "frame", "camera")}
    truth = {}
    for cid, (q, C) in rig().items():
        if cid == drop_camera:
            continue
        R = qmat(q).T
        fr = np.asarray(frames)
        xw = x[fr - 1]
        cols["pose/3d"].append((xw - C) @ R.T)
        uv = np.stack([h36m_project(p, R, C) for p in xw])
        cols["pose/2d"].append(uv)
        truth[("S1", "Directions-1", cid)] = uv[:, I17]
        cols["frame"].append(fr)
        cols["camera"].append(np.full(len(fr), int(cid)))
        write_jpgs(seq / "imageSequence" / cid, [f"img_{f:06d}.jpg" for f in frames])
    with h5py.File(seq / "annot.h5", "w") as f:
        for k, v in cols.items():
            v = np.concatenate(v)
            f[k] = v[:-1] if (bad_2d and k == "pose/2d") else v
    return truth


def test_h36m_fetch_layout(tmp_path):
    truth = write_h36m_fetch(tmp_path / "processed")
    cams = cameras_h5(tmp_path / "cameras.h5")
    ds = h36m.load_layout("h36m_fetch", tmp_path / "processed", cameras=cams)
    out = tmp_path / "prepared"
    h36m.write_prepared(out, ds)
    err = reprojection_px(out, truth)
    assert err < 1.0, err
    (seq,) = read_mocap(out / "mocap.h5")
    assert (seq.subject, seq.action, seq.positions_world.shape) == ("S1", "Directions-1", (5, 17, 3))
    assert seq.fps == pytest.approx(10.0)  # every 5th frame of 50 fps
    np.testing.assert_allclose(seq.positions_world, poses32(30, 4)[[0, 5, 10, 15, 20]][:, I17] / 1000, atol=1e-5)
    frames = read_table(out / "frames.parquet")[0].to_pandas()
    f = frames[frames.camera == CAMS[3]]
    assert f.frame.tolist() == [0, 1, 2, 3, 4] and f.source_frame.tolist() == [1, 6, 11, 16, 21]
    link = out / "videos" / "S1" / f"Directions-1.{CAMS[3]}" / "000002.jpg"
    assert link.is_symlink() and Path(link.readlink()).name == "img_000011.jpg"
    assert sorted(p.name for p in link.parent.iterdir()) == [f"{i:06d}.jpg" for i in range(5)]


def test_h36m_fetch_bad_input(tmp_path):
    cams = cameras_h5(tmp_path / "cameras.h5")
    write_h36m_fetch(tmp_path / "a", drop_camera=CAMS[1])
    with pytest.raises(DataError, match=r"S1/Directions-1.*camera 55011271 is missing"):
        h36m.load_layout("h36m_fetch", tmp_path / "a", cameras=cams)
    write_h36m_fetch(tmp_path / "b", bad_2d=True)
    with pytest.raises(DataError, match=r"S1/Directions-1.*mismatched frame counts: pose/3d 20, pose/2d 19"):
        h36m.load_layout("h36m_fetch", tmp_path / "b", cameras=cams)
    write_h36m_fetch(tmp_path / "c")
    wrong = cameras_json(tmp_path / "wrong.json", subjects=("S1",))
    obj = json.loads(wrong.read_text())
    obj["extrinsics"]["S1"][CAMS[2]]["translation"][0] += 300.0  # a camera file of other data
    wrong.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=r"S1/Directions-1.*does not match"):
        h36m.load_layout("h36m_fetch", tmp_path / "c", cameras=wrong)


# ============================================================================ (c) learnable-triangulation
LT_JOINTS = (3, 2, 1, 6, 7, 8, 0, 12, 13, 15, 27, 26, 25, 17, 18, 19, 14)


def write_lt(root: Path, zero_camera=None):
    actions = ["Directions-1", "Directions-2", "Greeting-2"]
    subjects = ["S1", "S11"]
    cams = np.zeros((2, 4), dtype=[("R", np.float32, (3, 3)), ("t", np.float32, (3, 1)),
                                   ("K", np.float32, (3, 3)), ("dist", np.float32, 5)])
    for si in range(2):
        for ci, (cid, (q, C)) in enumerate(rig().items()):
            if (si, ci) == zero_camera:
                continue
            R = qmat(q).T
            cams[si, ci]["R"] = R
            cams[si, ci]["t"] = (-R @ C).reshape(3, 1)
            cams[si, ci]["K"] = [[FOCAL[0], 0, CENTER[0]], [0, FOCAL[1], CENTER[1]], [0, 0, 1]]
            cams[si, ci]["dist"] = [RADIAL[0], RADIAL[1], TANG[0], TANG[1], RADIAL[2]]
    dt = np.dtype([("subject_idx", np.int8), ("action_idx", np.int8), ("frame_idx", np.int16),
                   ("keypoints", np.float32, (17, 3)), ("bbox_by_camera_tlbr", np.int16, (4, 4))])
    rows, worlds = [], {}
    for si, ai, frames in ((0, 0, [4, 0, 8]), (1, 1, [0, 1]), (1, 0, [2, 3])):
        x = poses32(10, 10 + si * 3 + ai)[frames]
        worlds[(subjects[si], actions[ai])] = (np.asarray(frames), x)
        t = np.zeros(len(frames), dt)
        t["subject_idx"], t["action_idx"], t["frame_idx"] = si, ai, frames
        t["keypoints"] = x[:, LT_JOINTS]
        t["bbox_by_camera_tlbr"] = [[10 + c, 20 + c, 900, 700] for c in range(4)]
        t["bbox_by_camera_tlbr"][0, 3] = 0  # view missing
        rows.append(t)
        for cid in CAMS:
            write_jpgs(root / "processed" / subjects[si] / actions[ai] / "imageSequence" / cid,
                       [f"img_{f + 1:06d}.jpg" for f in frames])
    labels = {"subject_names": subjects, "camera_names": list(CAMS), "action_names": actions,
              "cameras": cams, "table": np.concatenate(rows)}
    (root / "extra").mkdir(parents=True, exist_ok=True)
    path = root / "extra" / "human36m-multiview-labels-GTbboxes.npy"
    np.save(path, labels)
    return path, worlds


def test_learnable_triangulation_layout(tmp_path):
    path, worlds = write_lt(tmp_path)
    ds = h36m.load_layout("learnable_triangulation", path, allow_pickle=True)
    ds = h36m.select(ds, drop={"S11": ["Directions-2"]})
    out = tmp_path / "prepared"
    h36m.write_prepared(out, ds)
    mocap = {(s.subject, s.action): s for s in read_mocap(out / "mocap.h5")}
    assert set(mocap) == {("S1", "Directions-1"), ("S11", "Directions-1")}
    frames_src, x = worlds[("S1", "Directions-1")]
    order = np.argsort(frames_src)
    np.testing.assert_allclose(mocap[("S1", "Directions-1")].positions_world, x[order][:, I17] / 1000, atol=1e-5)
    # the layout's 2D: OpenCV projection with the file's K, dist, R, t
    truth = {}
    for (s, a), (fr, xx) in worlds.items():
        if (s, a) == ("S11", "Directions-2"):
            continue
        xx = xx[np.argsort(fr)][:, I17]
        for cid, (q, C) in rig().items():
            R = qmat(q).T
            K = np.array([[FOCAL[0], 0, CENTER[0]], [0, FOCAL[1], CENTER[1]], [0, 0, 1]])
            d = np.array([RADIAL[0], RADIAL[1], TANG[0], TANG[1], RADIAL[2]])
            uv, _ = cv2.projectPoints(xx.reshape(-1, 3), cv2.Rodrigues(R)[0], -R @ C, K, d)
            truth[(s, a, cid)] = uv.reshape(len(xx), 17, 2)
    err = reprojection_px(out, truth)
    assert err < 1.0, err
    frames = read_table(out / "frames.parquet")[0].to_pandas()
    f = frames[(frames.subject == "S1") & (frames.camera == CAMS[3])]
    assert f.source_frame.tolist() == [0, 4, 8]
    bb = column_points(f, "bbox_xyxy", (4,))
    assert np.isnan(bb[1]).all()  # frame_idx 4 (first table row) has this view missing
    np.testing.assert_allclose(bb[0], [23, 13, 700, 900])  # tlbr (13, 23, 900, 700) -> xyxy
    link = out / "videos" / "S1" / f"Directions-1.{CAMS[0]}" / "000002.jpg"
    assert Path(link.readlink()).name == "img_000009.jpg"


def test_learnable_triangulation_bad_input(tmp_path):
    path, _ = write_lt(tmp_path, zero_camera=(0, 2))
    with pytest.raises(DataError, match=r"human36m-multiview-labels-GTbboxes\.npy.*prepare\.allow_pickle"):
        h36m.load_layout("learnable_triangulation", path)
    with pytest.raises(DataError, match=r"S1/Directions-1: camera 58860488 of subject S1 is missing"):
        h36m.load_layout("learnable_triangulation", path, allow_pickle=True)


# ============================================================================ (d) Gluon annot
def write_gluon(root: Path, T=6, drop_camera=None, bad_count=False, seqs=((1, 2, 1), (9, 5, 2), (9, 13, 2))):
    truth = {}
    for s, a, sa in seqs:
        x = poses32(T, 100 + s + a + sa)
        for ci, (cid, (q, C)) in enumerate(rig().items(), start=1):
            if cid == drop_camera:
                continue
            folder = f"s_{s:02d}_act_{a:02d}_subact_{sa:02d}_ca_{ci:02d}"
            R = qmat(q).T  # x_cam = R (X - C) = M^T (X - C)
            M = R.T
            lines = [f"{T + (1 if bad_count else 0)}", "size 1000 1002" if ci in (1, 4) else "size 1000 1000",
                     "M " + " ".join(f"{v:.17g}" for v in M.reshape(-1)), "T " + " ".join(f"{v:.17g}" for v in C),
                     "f " + " ".join(f"{v:.17g}" for v in FOCAL), "c " + " ".join(f"{v:.17g}" for v in CENTER),
                     "k " + " ".join(f"{v:.17g}" for v in RADIAL), "p " + " ".join(f"{v:.17g}" for v in TANG),
                     "joints " + " ".join(str(i + 1) for i in I17)]
            lines += ["pose " + " ".join(f"{v:.17g}" for v in p.reshape(-1)) for p in x]
            (root / "annot" / folder).mkdir(parents=True)
            (root / "annot" / folder / "matlab_meta.txt").write_text("\n".join(lines) + "\n")
            write_jpgs(root / "images" / folder, [f"{folder}_{i + 1:06d}.jpg" for i in range(T)])
            subject, action = f"S{s}", f"{h36m.H36M_ACTIONS[a]}-{sa}"
            truth[(subject, action, cid)] = np.stack([h36m_project(p, R, C) for p in x])[:, I17]
    return truth


def test_gluon_layout(tmp_path):
    truth = write_gluon(tmp_path)
    ds = h36m.load_layout("gluon_annot", tmp_path)
    out = tmp_path / "prepared"
    h36m.write_prepared(out, ds)
    err = reprojection_px(out, truth)
    assert err < 1.0, err
    mocap = {(s.subject, s.action): s for s in read_mocap(out / "mocap.h5")}
    assert set(mocap) == {("S1", "Directions-1"), ("S9", "Greeting-2"), ("S9", "Waiting-2")}
    cams = load_cameras(out / "cameras.json")
    assert sorted(cams["S9"]) == list(CAMS) and (cams["S1"][CAMS[0]].width, cams["S1"][CAMS[0]].height) == (1000, 1002)
    link = out / "videos" / "S9" / f"Greeting-2.{CAMS[1]}" / "000000.jpg"
    assert Path(link.readlink()).name == "s_09_act_05_subact_02_ca_02_000001.jpg"
    # damaged S9 sequences and frame sampling
    sel = h36m.select(ds, drop={"S9": ["Greeting-2", "SittingDown-2", "Waiting-1"]}, every_nth=2)
    h36m.write_prepared(out, sel)
    mocap = {(s.subject, s.action): s for s in read_mocap(out / "mocap.h5")}
    assert set(mocap) == {("S1", "Directions-1"), ("S9", "Waiting-2")}
    assert mocap[("S1", "Directions-1")].positions_world.shape[0] == 3 and mocap[("S1", "Directions-1")].fps == 25.0
    f = read_table(out / "frames.parquet")[0].to_pandas()
    assert f[(f.subject == "S1") & (f.camera == CAMS[0])].source_frame.tolist() == [1, 3, 5]


def test_gluon_bad_input(tmp_path):
    write_gluon(tmp_path / "a", drop_camera=CAMS[3], seqs=((1, 2, 1),))
    with pytest.raises(DataError, match=r"S1/Directions-1 \(s_01_act_02_subact_01\): camera 60457274 \(ca_04\) is missing"):
        h36m.load_layout("gluon_annot", tmp_path / "a")
    write_gluon(tmp_path / "b", bad_count=True, seqs=((1, 2, 1),))
    with pytest.raises(DataError, match=r"s_01_act_02_subact_01_ca_01.*header says 7 frames but 6 pose lines"):
        h36m.load_layout("gluon_annot", tmp_path / "b")


# ============================================================================ converters, stage
def test_camera_file_forms_agree():
    """The published quaternion form (JSON) and Martinez's cameras.h5 form give the same camera."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        a = h36m.load_camera_file(cameras_json(Path(d) / "c.json", subjects=("S1",)))["S1"]
        b = h36m.load_camera_file(cameras_h5(Path(d) / "c.h5"))["S1"]
    for c in CAMS:
        for k in ("K", "dist", "R", "t"):
            np.testing.assert_allclose(getattr(a[c], k), getattr(b[c], k), atol=1e-9)
    np.testing.assert_allclose(a[CAMS[0]].center * 1000, C0, atol=1e-6)
    # world x_cam = R x + t: the camera centre maps to the origin; a point ahead has z > 0
    assert a[CAMS[0]].dist.tolist() == pytest.approx([RADIAL[0], RADIAL[1], TANG[0], TANG[1], RADIAL[2]])


def test_prepare_stage(tmp_path, monkeypatch):
    import yaml

    from stages import prepare

    write_gluon(tmp_path / "gluon", seqs=((1, 2, 1), (11, 2, 2)))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"base": {"mlflow": False}, "prepare": {"layout": "gluon_annot",
                                                                       "source": str(tmp_path / "gluon")}}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out, metrics = tmp_path / "prepared", tmp_path / "m.json"
    rc = prepare.main(["--source", str(tmp_path / "gluon"), "--out-dir", str(out), "--metrics", str(metrics), "--timings", str(tmp_path / "t.json"),
                       "--params", str(params)])
    assert rc == 0
    m = json.loads(metrics.read_text())
    assert m["sequences"] == 1 and m["images"] == 24  # S11 Directions-2 dropped by default
    # layout none: the same files, empty
    params.write_text(yaml.safe_dump({"base": {"mlflow": False}, "prepare": {"layout": "none"}}))
    assert prepare.main(["--source", "", "--out-dir", str(out), "--metrics", str(metrics), "--timings", str(tmp_path / "t.json"), "--params", str(params)]) == 0
    assert read_mocap(out / "mocap.h5") == [] and read_table(out / "detections_2d.parquet")[0].num_rows == 0
    # a pickled input without the opt-in fails loudly and leaves the previous output intact
    p3, _, _ = write_vp3d(tmp_path)
    cameras_json(tmp_path / "c.json")
    params.write_text(yaml.safe_dump({"base": {"mlflow": False}, "prepare": {
        "layout": "vp3d", "source": str(p3), "cameras": str(tmp_path / "c.json")}}))
    assert prepare.main(["--out-dir", str(out), "--metrics", str(metrics), "--timings", str(tmp_path / "t.json"), "--params", str(params)]) == 1
    assert (out / "mocap.h5").exists()
