"""Camera geometry against OpenCV, hand-derived conventions and the published H36M S1 camera."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pose3d.geometry import (
    Camera,
    camera_to_world,
    check_shape,
    dist_from_h36m,
    distort_normalized,
    extrinsics_from_h36m,
    extrinsics_from_martinez,
    intrinsics_matrix,
    look_at,
    normalize_screen,
    normalized_to_pixels,
    pixels_to_normalized,
    project,
    project_camera,
    projection_matrix,
    quaternion_to_matrix,
    random_rotation,
    stack_cameras,
    undistort_points,
    unnormalize_screen,
    world_to_camera,
)

F64 = torch.float64
CV_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-15)


def _random_camera(g: np.random.Generator, width=1920, height=1080):
    """A realistic camera: f 900-1800 px, principal point near the centre, Brown-Conrady
    distortion (barrel k1 with tangential p1, p2), looking at the origin from 3-6 m."""
    f = g.uniform(900, 1800)
    K = np.array([[f * g.uniform(0.98, 1.02), 0, width / 2 + g.uniform(-40, 40)],
                  [0, f, height / 2 + g.uniform(-30, 30)], [0, 0, 1]])
    dist = np.array([g.uniform(-0.35, -0.05), g.uniform(0.0, 0.2), g.uniform(-2e-3, 2e-3),
                     g.uniform(-2e-3, 2e-3), g.uniform(-0.05, 0.05)])
    d = g.normal(size=3)
    eye = d / np.linalg.norm(d) * g.uniform(3, 6)
    R, t = look_at(torch.tensor(eye), torch.tensor(g.normal(scale=0.2, size=3)))
    return K, dist, R.numpy(), t.numpy()


def _points_in_view(g, K, R, t, n, width, height, margin=0.05):
    """n world points whose ideal projection falls inside the image (minus a margin)."""
    u = g.uniform(margin * width, (1 - margin) * width, n)
    v = g.uniform(margin * height, (1 - margin) * height, n)
    z = g.uniform(1.0, 4.0, n)
    xn = pixels_to_normalized(torch.tensor(np.stack([u, v], -1)), torch.tensor(K)).numpy()
    x_cam = np.concatenate([xn * z[:, None], z[:, None]], -1)
    return (x_cam - t) @ R  # R^T (x_cam - t)


def _cv_project(X, K, dist, R, t):
    rvec, _ = cv2.Rodrigues(R)
    uv, _ = cv2.projectPoints(X.reshape(-1, 1, 3), rvec, t.reshape(3, 1), K, dist)
    return uv.reshape(-1, 2)


def _cv_undistort(uv, K, dist):
    return cv2.undistortPoints(uv.reshape(-1, 1, 2), K, dist, P=K, criteria=CV_CRITERIA).reshape(-1, 2)


@pytest.fixture(scope="module")
def random_cameras():
    g = np.random.default_rng(7)
    out = []
    for _ in range(12):
        K, dist, R, t = _random_camera(g)
        out.append((K, dist, R, t, _points_in_view(g, K, R, t, 200, 1920, 1080)))
    return out


def test_project_matches_opencv_on_random_cameras(random_cameras):
    worst = 0.0
    for K, dist, R, t, X in random_cameras:
        ours = project(torch.tensor(X), torch.tensor(K), torch.tensor(dist), torch.tensor(R),
                       torch.tensor(t)).numpy()
        worst = max(worst, np.abs(ours - _cv_project(X, K, dist, R, t)).max())
    assert worst < 1e-6  # float64 both ways; the contract is < 1e-3 px


def test_undistort_matches_opencv_and_inverts_projection(random_cameras):
    for K, dist, R, t, X in random_cameras:
        Kt, dt = torch.tensor(K), torch.tensor(dist)
        x_cam = world_to_camera(torch.tensor(X), torch.tensor(R), torch.tensor(t))
        uv = project_camera(x_cam, Kt, dt)
        ideal = project_camera(x_cam, Kt, None)
        ours = undistort_points(uv, Kt, dt)
        assert np.abs(ours.numpy() - _cv_undistort(uv.numpy(), K, dist)).max() < 1e-3
        assert (ours - ideal).abs().max() < 1e-6  # exact inverse of the forward model
        xn = undistort_points(uv, Kt, dt, normalized=True)
        assert torch.allclose(xn, x_cam[..., :2] / x_cam[..., 2:], atol=1e-9)
        # no distortion: identity on pixels, plain K^-1 for normalised coordinates
        assert torch.equal(undistort_points(ideal, Kt, None), ideal)
        assert torch.allclose(undistort_points(ideal, Kt, None, normalized=True), xn, atol=1e-9)


def test_panoptic_rig_matches_opencv(panoptic_npz):
    """31 real HD cameras of CMU Panoptic (world in mm -> metres), real 3D joints."""
    data = np.load(panoptic_npz, allow_pickle=False)
    seqs = sorted({k.split("/")[0] for k in data.files if "/" in k})
    assert seqs, "no sequences in the Panoptic file"
    n_checked = 0
    for seq in seqs:
        K = data[f"{seq}/hd_K"].astype(np.float64)
        dist = data[f"{seq}/hd_dist"].astype(np.float64)
        R = data[f"{seq}/hd_R"].astype(np.float64)
        t = data[f"{seq}/hd_t_mm"].astype(np.float64) / 1000.0
        X = data[f"{seq}/joints19_mm"].astype(np.float64).reshape(-1, 3) / 1000.0
        X = X[np.isfinite(X).all(-1)]
        assert K.shape == (31, 3, 3) and X.shape[0] > 100
        # all 31 cameras at once: points (V, N, 3), cameras (V, ...)
        ours = project(torch.tensor(X).expand(31, -1, -1), torch.tensor(K), torch.tensor(dist),
                       torch.tensor(R), torch.tensor(t)).numpy()
        for v in range(31):
            ref = _cv_project(X, K[v], dist[v], R[v], t[v])
            inside = (ref[:, 0] >= 0) & (ref[:, 0] < 1920) & (ref[:, 1] >= 0) & (ref[:, 1] < 1080)
            assert inside.sum() > 50, f"{seq} camera {v}: too few joints in view"
            assert np.abs(ours[v] - ref).max() < 1e-3
            und = undistort_points(torch.tensor(ref[inside]), torch.tensor(K[v]), torch.tensor(dist[v]))
            assert np.abs(und.numpy() - _cv_undistort(ref[inside], K[v], dist[v])).max() < 1e-3
            n_checked += 1
    assert n_checked == 31 * len(seqs)


# ------------------------------------------------------------------ round trips and conventions
def test_world_camera_round_trip_and_centre():
    g = torch.Generator().manual_seed(0)
    R = random_rotation(4, g)
    t = torch.randn(4, 3, generator=g, dtype=F64)
    X = torch.randn(4, 17, 3, generator=g, dtype=F64)
    Xc = world_to_camera(X, R, t)
    assert torch.allclose(camera_to_world(Xc, R, t), X, atol=1e-12)
    assert torch.allclose(Xc, torch.einsum("bij,bnj->bni", R, X) + t[:, None], atol=1e-12)
    # the camera centre C = -R^T t maps to the camera origin
    C = -(R.transpose(-1, -2) @ t[..., None])[..., 0]
    assert world_to_camera(C[:, None], R, t).abs().max() < 1e-12


def test_pixels_normalized_round_trip_with_skew():
    K = torch.tensor([[1000.0, 2.5, 640.0], [0.0, 990.0, 360.0], [0.0, 0.0, 1.0]], dtype=F64)
    xy = torch.randn(3, 10, 2, dtype=F64)
    uv = normalized_to_pixels(xy, K)
    assert torch.allclose(uv, (xy @ K[:2, :2].T) + K[:2, 2], atol=1e-12)
    assert torch.allclose(pixels_to_normalized(uv, K), xy, atol=1e-12)


def test_normalize_screen_values_and_round_trip():
    w, h = 1000, 1002
    uv = torch.tensor([[0.0, 0.0], [1000.0, 1002.0], [500.0, 501.0]], dtype=F64)
    xy = normalize_screen(uv, w, h)
    expected = torch.tensor([[-1.0, -h / w], [1.0, h / w], [0.0, 0.0]], dtype=F64)
    assert torch.allclose(xy, expected, atol=1e-12)
    assert torch.allclose(unnormalize_screen(xy, w, h), uv, atol=1e-9)
    # per-camera sizes (V,) broadcast against (V, J, 2)
    sizes_w, sizes_h = torch.tensor([1000.0, 1920.0]), torch.tensor([1002.0, 1080.0])
    pts = torch.rand(2, 5, 2, dtype=F64) * 900
    assert torch.allclose(unnormalize_screen(normalize_screen(pts, sizes_w, sizes_h), sizes_w, sizes_h), pts)


def test_projection_matrix_equals_pinhole_projection():
    g = np.random.default_rng(3)
    K, _, R, t = _random_camera(g)
    X = torch.tensor(_points_in_view(g, K, R, t, 20, 1920, 1080))
    P = projection_matrix(torch.tensor(K), torch.tensor(R), torch.tensor(t))
    assert P.shape == (3, 4)
    h = torch.cat([X, torch.ones(20, 1, dtype=F64)], -1) @ P.T
    uv = project(X, torch.tensor(K), None, torch.tensor(R), torch.tensor(t))
    assert torch.allclose(h[:, :2] / h[:, 2:], uv, atol=1e-9)


def test_distortion_formula_by_hand():
    # x = 0.1, y = -0.2: r2 = 0.05, radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3
    k1, k2, p1, p2, k3 = -0.2, 0.1, 0.001, -0.002, 0.01
    x, y, r2 = 0.1, -0.2, 0.05
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    out = distort_normalized(torch.tensor([[x, y]], dtype=F64), torch.tensor([k1, k2, p1, p2, k3], dtype=F64))
    assert torch.allclose(out, torch.tensor([[xd, yd]], dtype=F64), atol=1e-15)


# ------------------------------------------------------------------ Human3.6M S1, camera 54138969
H36M_S1_54138969 = dict(
    orientation=[0.1407056450843811, -0.1500701755285263, -0.755240797996521, 0.6223280429840088],
    translation=[1841.1070556640625, 4955.28466796875, 1563.4454345703125],
    center=[512.54150390625, 515.4514770507812],
    focal=[1145.0494384765625, 1143.7811279296875],
    radial=[-0.20709891617298126, 0.24777518212795258, -0.0030751503072679043],
    tangential=[-0.0009756988729350269, -0.00142447161488235],
    width=1000, height=1002,
)


def _h36m_camera():
    c = H36M_S1_54138969
    R, t = extrinsics_from_h36m(c["orientation"], c["translation"])
    K = intrinsics_matrix(*c["focal"], *c["center"])
    dist = dist_from_h36m(c["radial"], c["tangential"])
    return K, dist, R, t


def test_h36m_converter_matches_scipy_and_opencv():
    c = H36M_S1_54138969
    K, dist, R, t = _h36m_camera()
    assert torch.allclose(dist, torch.tensor([c["radial"][0], c["radial"][1], c["tangential"][0],
                                              c["tangential"][1], c["radial"][2]], dtype=F64))
    # independent: scipy's scalar-last quaternion is camera->world; invert it for world->camera
    w, x, y, z = c["orientation"]
    rot_w2c = Rotation.from_quat([x, y, z, w]).inv()
    centre_m = np.array(c["translation"]) / 1000.0
    assert np.allclose(R.numpy(), rot_w2c.as_matrix(), atol=1e-12)
    assert np.allclose(t.numpy(), -rot_w2c.apply(centre_m), atol=1e-12)
    # a subject standing near the world origin (H36M world: Z up, metres after conversion)
    X = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.3, -0.2, 1.7], [-0.4, 0.5, 0.1]])
    ref, _ = cv2.projectPoints(X.reshape(-1, 1, 3), rot_w2c.as_rotvec(), -rot_w2c.apply(centre_m),
                               K.numpy(), dist.numpy())
    ours = project(torch.tensor(X), K, dist, R, t)
    assert np.abs(ours.numpy() - ref.reshape(-1, 2)).max() < 1e-6
    # positive depth, inside the 1000 x 1002 image
    x_cam = world_to_camera(torch.tensor(X), R, t)
    assert (x_cam[:, 2] > 3.0).all() and (x_cam[:, 2] < 8.0).all()
    assert ((ours >= 0) & (ours <= torch.tensor([1000.0, 1002.0], dtype=F64))).all()


def test_h36m_conventions_by_hand():
    c = H36M_S1_54138969
    K, dist, R, t = _h36m_camera()
    centre = torch.tensor(c["translation"], dtype=F64) / 1000.0
    # the published translation is the camera centre: it maps to x_cam = 0
    assert world_to_camera(centre[None], R, t).abs().max() < 1e-12
    # a point on the optical axis (C + d * z_cam in world) projects to the principal point exactly
    on_axis = centre + 4.0 * R[2]
    uv = project(on_axis[None], K, dist, R, t)[0]
    assert torch.allclose(uv, torch.tensor(c["center"], dtype=F64), atol=1e-9)
    # image y points down: the camera's y axis has a negative world-Z (up) component; and the
    # camera, 1.56 m high, looks slightly down at the origin
    assert R[1, 2] < -0.9
    assert R[2, 2] < 0


def test_martinez_form_gives_same_extrinsics_and_projection():
    c = H36M_S1_54138969
    K, dist, R, t = _h36m_camera()
    w, x, y, z = c["orientation"]
    R_martinez = Rotation.from_quat([x, y, z, w]).inv().as_matrix()  # cameras.h5 stores R_w2c
    T_martinez = np.array(c["translation"]).reshape(3, 1)  # (3, 1) centre in mm, as in cameras.h5
    R2, t2 = extrinsics_from_martinez(R_martinez, T_martinez)
    assert torch.allclose(R2, R, atol=1e-12) and torch.allclose(t2, t, atol=1e-12)
    X_mm = np.array([[100.0, -300.0, 900.0], [-500.0, 200.0, 20.0]])
    # Martinez: x_cam = R (X - T) in mm; the same camera-frame point in metres
    x_cam_mm = (R_martinez @ (X_mm.T - T_martinez)).T
    assert np.allclose(world_to_camera(torch.tensor(X_mm / 1000), R2, t2).numpy(), x_cam_mm / 1000, atol=1e-12)
    assert torch.allclose(project(torch.tensor(X_mm / 1000), K, dist, R2, t2),
                          project(torch.tensor(X_mm / 1000), K, dist, R, t), atol=1e-9)


def test_h36m_own_tangential_model_differs_from_opencv_by_under_one_pixel():
    """Human3.6M's released code (and Martinez's ``project_point_radial``) apply the tangential
    terms as ``x' = x (radial + p1 y + p2 x) + p2 r2``, which is not OpenCV's Brown-Conrady
    ``2 p1 x y + p2 (r2 + 2 x2)``. pose3d uses OpenCV's model everywhere; with S1's tiny p1, p2
    the two differ by at most 0.56 px (image corners) (documented, measured here)."""
    K, dist, R, t = _h36m_camera()
    c = H36M_S1_54138969
    g = np.random.default_rng(0)
    uv = np.stack([g.uniform(0, 1000, 500), g.uniform(0, 1002, 500)], -1)
    xy = undistort_points(torch.tensor(uv), K, dist, normalized=True).numpy()
    k, p = np.array(c["radial"]), np.array(c["tangential"])
    r2 = (xy**2).sum(-1)
    radial = 1 + k[0] * r2 + k[1] * r2**2 + k[2] * r2**3
    tan = p[0] * xy[:, 1] + p[1] * xy[:, 0]
    xy_h36m = xy * (radial + tan)[:, None] + np.outer(r2, p[::-1])
    uv_h36m = xy_h36m * np.array(c["focal"]) + np.array(c["center"])
    diff = np.abs(uv_h36m - uv).max()
    assert 0.1 < diff < 1.0  # measured 0.56 px at the image corners


# ------------------------------------------------------------------ batching, gradients, records
@pytest.mark.parametrize("lead", [(), (5,), (2, 3)])
def test_batch_shapes(lead):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(lead + (17, 3), generator=g, dtype=F64) * 0.5
    K, dist, R, t = _h36m_camera()
    # shared camera
    uv = project(X, K, dist, R, t)
    assert uv.shape == lead + (17, 2)
    # per-element cameras equal the shared result
    Kb, db, Rb, tb = (a.expand(lead + a.shape) for a in (K, dist, R, t))
    assert torch.allclose(project(X, Kb, db, Rb, tb), uv, atol=1e-12)
    assert undistort_points(uv, Kb, db).shape == lead + (17, 2)
    assert camera_to_world(world_to_camera(X, Rb, tb), Rb, tb).shape == lead + (17, 3)
    assert normalize_screen(uv, 1000, 1002).shape == lead + (17, 2)


def test_multiview_broadcast_against_stacked_cameras():
    g = np.random.default_rng(5)
    cams = []
    for i in range(3):
        K, dist, R, t = _random_camera(g)
        cams.append(Camera(K=K, dist=dist, R=R, t=t, width=1920, height=1080, name=f"c{i}"))
    c = stack_cameras(cams)
    assert c["K"].shape == (3, 3, 3) and c["dist"].shape == (3, 5)
    X = torch.randn(4, 1, 17, 3, dtype=F64) * 0.3  # (B, 1, J, 3) against V = 3 cameras
    uv = project(X, c["K"], c["dist"], c["R"], c["t"])
    assert uv.shape == (4, 3, 17, 2)
    for v, cam in enumerate(cams):
        assert np.allclose(uv[:, v].numpy(), cam.project(X[:, 0].numpy()), atol=1e-9)


def test_gradcheck_project_with_distortion():
    K, dist, R, t = _h36m_camera()
    X = (torch.randn(2, 4, 3, dtype=F64) * 0.5).requires_grad_()
    args = [a.clone().requires_grad_() for a in (K, dist, R, t)]
    assert torch.autograd.gradcheck(lambda x, k, d, r, tt: project(x, k, d, r, tt), (X, *args))


def test_gradcheck_undistort_points():
    K, dist, _, _ = _h36m_camera()
    uv = torch.tensor([[100.0, 200.0], [900.0, 50.0], [512.0, 515.0]], dtype=F64).requires_grad_()
    d = dist.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p, dd: undistort_points(p, K, dd, iters=30), (uv, d))


def test_camera_record_validates_and_round_trips():
    K, dist, R, t = (a.numpy() for a in _h36m_camera())
    cam = Camera(K=K, dist=dist, R=R, t=t, width=1000, height=1002, name="54138969")
    again = Camera.from_dict(cam.to_dict(), name="54138969")
    for f in ("K", "dist", "R", "t"):
        assert np.array_equal(getattr(again, f), getattr(cam, f))
    assert np.allclose(cam.center, np.array(H36M_S1_54138969["translation"]) / 1000, atol=1e-12)
    with pytest.raises(ValueError, match=r"'bad': dist has shape \(4,\), expected \(5,\)"):
        Camera(K=K, dist=dist[:4], R=R, t=t, width=10, height=10, name="bad")
    with pytest.raises(ValueError, match="not a rotation"):
        Camera(K=K, dist=dist, R=R * np.array([1, 1, -1]), t=t, width=10, height=10)
    with pytest.raises(ValueError, match="non-finite"):
        Camera(K=K, dist=dist, R=R, t=t * np.nan, width=10, height=10)
    with pytest.raises(ValueError, match="must be positive"):
        Camera(K=K, dist=dist, R=R, t=t, width=0, height=10)


def test_quaternion_to_matrix_orders_agree_with_scipy():
    q = torch.randn(10, 4, dtype=F64)
    Rm = quaternion_to_matrix(q, scalar_first=True)
    ref = Rotation.from_quat(q[:, [1, 2, 3, 0]].numpy()).as_matrix()
    assert np.allclose(Rm.numpy(), ref, atol=1e-12)
    assert torch.allclose(quaternion_to_matrix(q[:, [1, 2, 3, 0]], scalar_first=False), Rm, atol=1e-12)


def test_check_shape_messages():
    check_shape(torch.zeros(2, 3, 17, 3), "* J 3")
    check_shape(torch.zeros(17, 3), "* J 3")
    check_shape(torch.zeros(4, 2), "B 2")
    with pytest.raises(ValueError, match=r"x_world: expected shape \(\*, J, 3\), got \(17, 2\)"):
        project(torch.zeros(17, 2), *_h36m_camera())
    with pytest.raises(ValueError, match=r"pts: expected shape \(B, 2\), got \(4, 2, 1\)"):
        check_shape(torch.zeros(4, 2, 1), "B 2", "pts")
    with pytest.raises(ValueError, match=r"expected shape \(\*, J, 3\), got \(3,\)"):
        check_shape(torch.zeros(3), "* J 3")
