"""2D pose: a tiny training run lowers the loss; predict/flip; metrics; the three stages end to end
on a tiny studio (detections Parquet schema and metadata)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pose3d.runtime import params as P
from pose3d.tasks import pose2d
from pose3d.data.crops import CropDataset
from pose3d.data.io import read_table
from pose3d.models.pose_resnet import PoseResNet, PoseResNetConfig
from pose3d.skeleton import JOINT_NAMES
from pose3d.runtime.train import Trainer, TrainConfig, adam

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "stages"))
sys.path.insert(0, str(Path(__file__).parent))
from test_video_crops import make_studio  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def _blob_crops(n=24, S=64, seed=0):
    """Crops with a bright dot per 'joint' (3 joints), coordinates known."""
    rng = np.random.default_rng(seed)
    crops = np.zeros((n, S, S, 3), np.uint8) + 40
    joints = rng.uniform(8, S - 8, (n, 3, 2)).astype(np.float32)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    yy, xx = np.mgrid[:S, :S]
    for i in range(n):
        for j in range(3):
            m = (xx - joints[i, j, 0]) ** 2 + (yy - joints[i, j, 1]) ** 2 < 9
            crops[i][m] = colours[j]
    return crops, joints


def test_tiny_training_lowers_the_loss(tmp_path):
    crops, joints = _blob_crops(n=16, S=32)
    ds = CropDataset(crops, joints)
    torch.manual_seed(0)
    model = PoseResNet(PoseResNetConfig(depth=18, num_joints=3, deconv_channels=32))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    cfg = TrainConfig(epochs=8, device="cpu", cpu_precision="fp32", seed=0, progress=False,
                      curves_csv=tmp_path / "c.csv")
    trainer = Trainer({"model": model}, {"model": opt}, config=cfg)
    hist = trainer.fit(pose2d.make_step(stride=4, sigma=1.0), pose2d.EpochBatches(ds, 8, seed=0))
    losses = [h["train_loss"] for h in hist]
    assert losses[-1] < 0.75 * losses[0], losses  # measured: 0.021 -> 0.013
    assert all(np.isfinite(losses))
    assert (tmp_path / "c.csv").exists()


def test_predict_flip_consistency_and_metrics():
    torch.manual_seed(0)
    model = PoseResNet(PoseResNetConfig(depth=18, deconv_channels=16)).eval()
    crops = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    c, s = pose2d.predict(model, crops, flip=True, method="dark", sigma=1.5)
    assert c.shape == (2, 17, 2) and s.shape == (2, 17)
    assert torch.isfinite(c).all() and ((c > -2) & (c < 34)).all()
    # flip test on a mirrored crop gives the mirrored, joint-swapped answer
    from pose3d.heatmaps import flip_joints
    cf, sf = pose2d.predict(model, crops[:, :, ::-1].copy(), flip=True, method="argmax")
    ca, sa = pose2d.predict(model, crops, flip=True, method="argmax")
    assert torch.allclose(flip_joints(cf, 32), ca, atol=1e-4)
    # metrics: exact predictions -> PCK 1, error 0; a 7.5 px shift on a 100 px box
    gt = np.random.default_rng(1).uniform(0, 500, (5, 17, 2))
    m = pose2d.pck_metrics(gt, gt, np.full(5, 100.0), np.full(5, 1000.0))
    assert m["pck_0.05"] == 1.0 and m["mean_px_error"] == 0.0
    m = pose2d.pck_metrics(gt + [4.5, 6.0], gt, np.full(5, 100.0), np.full(5, 500.0))
    assert m["pck_0.05"] == 0.0 and m["pck_0.1"] == 1.0
    assert m["mean_px_error"] == pytest.approx(7.5) and m["mean_px_error_per_1000px"] == pytest.approx(15.0)
    assert set(m["per_joint"]) == set(JOINT_NAMES)


def _params(tmp_path: Path) -> Path:
    p = {"base": {"seed": 0, "device": "cpu", "cpu_precision": "fp32", "num_threads": 0, "mlflow": False,
                  "mlflow_experiment": "test"},
         "extract": {"crop_size": 32, "frame_stride": 1},
         "pose2d": {"depth": 18, "deconv_channels": 16, "epochs": 1, "batch_size": 8, "lr_steps": [1],
                    "val_max_crops": 8, "sigma": 1.0},
         "detect": {"batch_size": 16, "figure_crops": 4, "precision": "fp32"}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def test_stages_end_to_end(tmp_path):
    import detect_2d
    import extract
    import train_2d

    studio = make_studio(tmp_path / "studio", frames=6)
    params = _params(tmp_path)
    crops_h5, crops_pq = tmp_path / "crops" / "crops.h5", tmp_path / "crops" / "crops.parquet"
    assert extract.main(["--mocap", str(studio / "mocap.h5"), "--cameras", str(studio / "cameras.json"),
                         "--videos", str(studio / "videos"), "--out-h5", str(crops_h5),
                         "--out-index", str(crops_pq), "--params", str(params)]) == 0
    model_dir = tmp_path / "models" / "pose2d"
    rc = train_2d.main(["--crops-h5", str(crops_h5), "--crops-index", str(crops_pq),
                        "--model-dir", str(model_dir), "--checkpoint", str(model_dir / "checkpoint.pt"),
                        "--metrics", str(tmp_path / "train_2d.json"),
                        "--curves", str(tmp_path / "curves.csv"), "--params", str(params)])
    assert rc == 0
    assert json.loads((model_dir / "config.json").read_text())["depth"] == 18
    state = torch.load(model_dir / "model.pt", weights_only=True)
    assert "final.weight" in state
    m = json.loads((tmp_path / "train_2d.json").read_text())
    assert list(m) == ["pck_0.1", "mean_px_error", "mean_px_error_per_1000px"]  # the headline only
    det = tmp_path / "detections_2d.parquet"
    rc = detect_2d.main(["--crops-h5", str(crops_h5), "--crops-index", str(crops_pq),
                         "--model-dir", str(model_dir), "--out", str(det),
                         "--metrics", str(tmp_path / "detect_2d.json"), "--per-joint", str(tmp_path / "j.csv"),
                         "--figure", str(tmp_path / "fig.png"), "--params", str(params)])
    assert rc == 0
    table, meta = read_table(det)
    schema = pq.read_schema(det)
    assert schema.names == ["subject", "action", "camera", "frame", "keypoints_px", "scores"]
    assert str(schema.field("frame").type) == "int64"
    assert schema.field("keypoints_px").type.list_size == 34 and schema.field("scores").type.list_size == 17
    assert meta["joint_names"] == list(JOINT_NAMES)
    import hashlib
    assert meta["model_hash"] == hashlib.sha256((model_dir / "model.pt").read_bytes()).hexdigest()
    assert meta["image_size"] == {"cam0": [160, 120], "cam1": [160, 120]}
    # which model and input size made the detections
    assert meta["model"] == {"architecture": "pose_resnet", "depth": 18, "deconv_channels": 16,
                             "deconv_kernel": 4, "num_deconv": 3, "input_size": 32, "sigma": 1.0,
                             "flip_test": True, "decode": "dark", "precision": "fp32"}
    assert table.num_rows == 2 * 2 * 6  # every crop of both subjects (train and test)
    df = table.to_pandas()
    assert sorted(set(df["subject"])) == ["S1", "S9"]
    assert list(df["frame"][:6]) == list(range(6))
    kp = np.stack(df["keypoints_px"].to_numpy())
    assert np.isfinite(kp).all() and (kp[:, 0::2] > -50).all() and (kp[:, 0::2] < 210).all()
    dm = json.loads((tmp_path / "detect_2d.json").read_text())
    assert list(dm) == ["pck_0.1", "mean_px_error", "mean_px_error_per_1000px", "elbows_mean_px_error",
                        "wrists_mean_px_error", "arm_swap_rate"]
    assert (tmp_path / "fig.png").stat().st_size > 1000
    # the per-joint plot: every joint, and its errors average to the headline (same crops, all valid)
    pj = pd.read_csv(tmp_path / "j.csv")
    assert list(pj["joint"]) == list(JOINT_NAMES)
    assert list(pj.columns) == ["joint", "pck_0.1", "mean_px_error", "mean_px_error_per_1000px"]
    assert pj["mean_px_error"].mean() == pytest.approx(dm["mean_px_error"], abs=1e-3)
    # a model trained on other crops than these is refused, naming both sizes; nothing is written
    cfg = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**cfg, "input_size": 64}))
    det.unlink()
    rc = detect_2d.main(["--crops-h5", str(crops_h5), "--crops-index", str(crops_pq),
                         "--model-dir", str(model_dir), "--out", str(det),
                         "--metrics", str(tmp_path / "detect_2d.json"), "--per-joint", str(tmp_path / "j.csv"),
                         "--figure", str(tmp_path / "fig.png"), "--params", str(params)])
    assert rc == 1 and not det.exists()
    (model_dir / "config.json").write_text(json.dumps(cfg))
    # a bad params key is an error naming it
    params.write_text(params.read_text().replace("epochs: 1", "epochz: 1"))
    with pytest.raises(SystemExit) as exc:
        train_2d.main(["--crops-h5", str(crops_h5), "--crops-index", str(crops_pq),
                       "--model-dir", str(model_dir), "--checkpoint", str(model_dir / "c.pt"),
                       "--metrics", str(tmp_path / "m.json"), "--curves", str(tmp_path / "c.csv"),
                       "--params", str(params)])
    assert exc.value.code == 2


class _Killed(Exception):
    pass


@pytest.mark.parametrize("schedule, warmup", [("step", 0), ("cosine", 0), ("step", 2)])
def test_resume_honours_the_lr_schedule(tmp_path, schedule, warmup):
    """A run killed after epoch 2 and resumed gives the same epoch-3 lr, loss and weights as an
    uninterrupted run: the schedule's position is restored from the checkpoint, and so is the
    crop size of a low-resolution warm-up (``warmup`` epochs at 32 px of 64 px crops)."""
    S = 64 if warmup else 32
    crops, joints = _blob_crops(n=16, S=S)
    sizes = []

    def size_of_epoch(epoch):
        sizes.append(32 if epoch < warmup else S)
        return sizes[-1]

    def run(checkpoint, kill_at=None):
        torch.manual_seed(0)
        model = PoseResNet(PoseResNetConfig(depth=18, num_joints=3, deconv_channels=16))
        opt = adam(model.parameters(), lr=1e-2)
        sched = pose2d.make_scheduler(opt, schedule, epochs=3, lr_steps=(1,), lr_factor=0.5)
        cfg = TrainConfig(epochs=3, device="cpu", cpu_precision="fp32", seed=0, progress=False,
                          checkpoint=checkpoint)
        trainer = Trainer({"model": model}, {"model": opt}, {"model": sched}, config=cfg)
        step = pose2d.make_step(stride=4, sigma=1.0)

        def maybe_killed(ctx, batch, epoch):
            if epoch == kill_at:
                raise _Killed
            return step(ctx, batch, epoch)

        ds = CropDataset(crops, joints)
        batches = pose2d.EpochBatches(ds, 8, seed=0, size_of_epoch=size_of_epoch)
        return trainer.fit(maybe_killed, batches, fingerprint="fp"), model

    full, full_model = run(tmp_path / "a.pt")
    with pytest.raises(_Killed):
        run(tmp_path / "b.pt", kill_at=2)
    resumed, resumed_model = run(tmp_path / "b.pt")
    assert len(resumed) == 3
    assert [h["lr_model"] for h in resumed] == [h["lr_model"] for h in full]
    expected_lr = {"step": [5e-3, 5e-3, 5e-3], "cosine": [7.5e-3, 2.5e-3, 0.0]}[schedule]
    assert [h["lr_model"] for h in full] == pytest.approx(expected_lr, abs=1e-12)
    assert resumed[2]["train_loss"] == full[2]["train_loss"]
    if warmup:  # full run 32, 32, 64; killed run 32, 32, (64 killed); resumed run 64
        assert sizes == [32, 32, S, 32, 32, S, S]
    for a, b in zip(full_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)


def test_make_scheduler_rejects_unknown_schedule():
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="lr_schedule = 'linear'"):
        pose2d.make_scheduler(opt, "linear", epochs=3)


def test_left_right_swaps_and_group_errors():
    gt = np.zeros((3, 17, 2))
    li, ri = JOINT_NAMES.index("l_wrist"), JOINT_NAMES.index("r_wrist")
    gt[:, li], gt[:, ri] = [40.0, 50.0], [60.0, 50.0]          # wrists 20 px apart
    pred = gt.copy()
    pred[1, [li, ri]] = pred[1, [ri, li]]                       # crop 1: wrists swapped
    pred[2, li] = [48.0, 50.0]                                  # crop 2: 8 px off, still nearer its own
    box = np.full(3, 100.0)
    pred[0, ri] = [41.0, 50.0]                                  # crop 0: both wrists on the left one
    assert pose2d.left_right_swaps(pred, gt, box, ("wrist",)).tolist() == [False, True, False]
    assert pose2d.left_right_swaps(pred, gt, box, ("wrist",), kind="confusion").tolist() == [True, True, False]
    # joints closer than 0.1 box are not counted: which side is which is not visible
    assert not pose2d.left_right_swaps(pred, gt, np.full(3, 300.0), ("wrist",), kind="confusion").any()
    with pytest.raises(ValueError, match="kind = 'both'"):
        pose2d.left_right_swaps(pred, gt, box, ("wrist",), kind="both")
    # arms = elbows + wrists: a swap exchanges the whole arm (crop 1), crop 0 only confuses a wrist
    le, re = JOINT_NAMES.index("l_elbow"), JOINT_NAMES.index("r_elbow")
    gt[:, le], gt[:, re] = [40.0, 90.0], [60.0, 90.0]
    pred[:, le], pred[:, re] = gt[:, le], gt[:, re]
    pred[1, [le, re]] = gt[1, [re, le]]
    m = pose2d.pck_metrics(pred, gt, box, np.full(3, 512.0))
    assert m["arm_swap_rate"] == pytest.approx(1 / 3) and m["arm_confusion_rate"] == pytest.approx(2 / 3)
    assert m["leg_swap_rate"] == 0.0 and m["leg_confusion_rate"] == 0.0
    assert m["wrists_mean_px_error"] == pytest.approx((19 + 2 * 20 + 8) / 6)
    assert m["elbows_mean_px_error"] == pytest.approx(2 * 20 / 6)


def test_a_checkpoint_is_bound_to_the_crops_content(tmp_path):
    """A changed extract upstream (same params, same crop count) must not resume a stale model."""
    p, base = P.Pose2D(), P.Base()
    h5, idx = tmp_path / "crops.h5", tmp_path / "crops.parquet"
    h5.write_bytes(b"crops of box_margin 0.25")
    idx.write_bytes(b"index")
    before = pose2d.train_fingerprint(p, base, h5, idx)
    assert pose2d.train_fingerprint(p, base, h5, idx) == before
    h5.write_bytes(b"crops of box_margin 0.35")
    assert pose2d.train_fingerprint(p, base, h5, idx) != before
    assert pose2d.train_fingerprint(dataclasses.replace(p, lr=1e-4), base, h5, idx) != before


def test_warmup_epochs_train_and_score_at_the_warmup_size(monkeypatch):
    """EpochBatches gives each epoch's crops at size_of_epoch(epoch); make_evaluate scores the
    validation crops at that size and maps predictions back through x_S = (x_s + 0.5) S / s - 0.5
    to the index's image pixels (exact: predictions at the true joints score 0 px)."""
    import pandas as pd
    from pose3d.data.crops import CropIndex, crop_affine, invert_affine, apply_affine

    S, s, n = 64, 32, 3
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (n, S, S, 3), dtype=np.uint8)
    joints_crop = rng.uniform(5, 58, (n, 17, 2)).astype(np.float32)
    size_of_epoch = lambda e: s if e < 1 else S  # noqa: E731
    batches = pose2d.EpochBatches(CropDataset(crops, joints_crop), 2, seed=0, size_of_epoch=size_of_epoch)
    assert next(iter(batches(0)))[0].shape == (2, 3, s, s)
    assert next(iter(batches(1)))[0].shape == (2, 3, S, S)

    boxes = np.array([[100.0, 50, 300, 250]] * n)
    c2i = np.stack([invert_affine(crop_affine(b, S)) for b in boxes])
    gt = apply_affine(c2i, joints_crop.astype(np.float64))
    keys = pd.DataFrame({"index": range(n), "subject": "S9", "action": "a", "camera": "c", "frame": range(n),
                         "split": "test"})
    index = CropIndex(keys, boxes, c2i, gt, {"crop_size": S})
    seen = []

    def fake_predict(model, c, **kw):  # the true joints in the pixels of the crops it is given
        seen.append(c.shape[1])
        k = c.shape[1] / S
        return (joints_crop + 0.5) * k - 0.5, np.ones((n, 17), np.float32)

    monkeypatch.setattr(pose2d, "predict_array", fake_predict)
    evaluate = pose2d.make_evaluate(crops, index, np.full(n, 640.0), size_of_epoch)
    ctx = type("Ctx", (), {"modules": {"model": None}})()
    for epoch in (0, 1):
        m = evaluate(ctx, epoch)
        assert m["val_mean_px_error"] == pytest.approx(0.0, abs=1e-4)
    assert seen == [s, S]
