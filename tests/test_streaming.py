"""Streaming crops from crops.h5: CropStore reads the pixels an in-memory array holds (any
order, repeats, slices, resampled, in DataLoader workers); one crop per chunk changes the
layout only; train_2d streaming trains the same model bit for bit, and detect_2d's block
reads give the same detections from either layout."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from pose3d.data.crops import (CropDataset, CropStore, CropWriter, read_crop_index, read_crops,
                               resize_crops)
from pose3d.data.io import DataError
from pose3d.models.pose_resnet import PoseResNet, PoseResNetConfig
from pose3d.runtime import params as P
from pose3d.runtime.train import TrainConfig
from pose3d.skeleton import NUM_JOINTS
from pose3d.tasks import pose2d

S = 32


pytestmark = pytest.mark.usefixtures("one_thread")


def _write(tmp_path, n=40, seed=0):
    """crops.h5 + crops.parquet of n random crops (S1 train, then S9 test), crop px = image px;
    returns (h5, parquet, crops, joints)."""
    rng = np.random.default_rng(seed)
    crops = rng.integers(0, 256, (n, S, S, 3), dtype=np.uint8)
    joints = rng.uniform(2, S - 3, (n, NUM_JOINTS, 2)).astype(np.float32)
    h5, pq = tmp_path / "crops.h5", tmp_path / "crops.parquet"
    eye = np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (n, 1, 1))
    box = np.tile([-0.5, -0.5, S - 0.5, S - 0.5], (n, 1))
    with CropWriter(h5, pq, S, metadata={"image_size": {"c1": [S, S]}}) as w:
        for subject, split, sl in (("S1", "train", slice(0, 3 * n // 4)), ("S9", "test", slice(3 * n // 4, n))):
            k = len(range(n)[sl])
            w.add(crops[sl], subject, "Walking", "c1", np.arange(k), split, box[sl], eye[sl], joints[sl])
    return h5, pq, crops, joints


def test_writer_chunks_one_crop_and_the_store_reads_what_memory_holds(tmp_path):
    h5, _, crops, _ = _write(tmp_path)
    with h5py.File(h5, "r") as f:
        assert f["crops"].chunks == (1, S, S, 3)
    rows = np.array([39, 3, 4, 5, 17, 0, 38])
    store = CropStore(h5, rows)
    mem = read_crops(h5, rows)
    assert np.array_equal(mem, crops[rows])
    assert store.shape == (7, S, S, 3) and len(store) == 7
    items = np.array([6, 0, 0, 2, 1, 5])  # any order, repeats
    assert np.array_equal(store[items], mem[items])
    assert np.array_equal(store[2:5], mem[2:5]) and np.array_equal(store[-1], mem[-1])
    assert np.array_equal(store.resized(24)[items], resize_crops(mem, 24)[items])
    assert np.array_equal(CropStore(h5)[:], crops)
    with pytest.raises(IndexError, match="item 7 of 7"):
        store[7]
    with pytest.raises(DataError, match=r"crops.h5: row 40 out of range \(N = 40\)"):
        CropStore(h5, [0, 40])
    with pytest.raises(DataError, match="nowhere.h5: file not found"):
        CropStore(tmp_path / "nowhere.h5")
    store.read([0])
    clone = pickle.loads(pickle.dumps(store))  # the open handle stays behind
    assert "_file" not in clone.__dict__ and np.array_equal(clone[items], mem[items])


@pytest.mark.parametrize("workers", [0, 2])
def test_dataset_streams_the_same_samples_in_dataloader_workers(tmp_path, workers):
    h5, _, crops, joints = _write(tmp_path)
    aug = pose2d.augmentation_of(P.Pose2D())
    mem = CropDataset(crops, joints, aug, seed=3)
    streamed = CropDataset(CropStore(h5), joints, aug, seed=3)
    for ds in (mem, streamed):
        ds.set_epoch(2)
    items = np.random.default_rng(1).permutation(len(crops))[:8]
    for a, b in zip(mem.batch(items), streamed.batch(items)):
        assert torch.equal(a, b)
    loader = torch.utils.data.DataLoader(streamed, batch_size=8, num_workers=workers)
    ref = torch.utils.data.DataLoader(mem, batch_size=8)
    for got, want in zip(loader, ref):
        for a, b in zip(got, want):
            assert torch.equal(a, b)


def test_train_2d_streaming_trains_the_same_model(tmp_path):
    """fit() from crops.h5 batch by batch vs from memory: same samples, augmentation and
    order -> the same weights, bit for bit (a warm-up epoch at 24 px exercises the resampled
    reads of training and validation)."""
    h5, pq, _, _ = _write(tmp_path)
    index = read_crop_index(pq)
    p = P.Pose2D(deconv_channels=16, epochs=2, batch_size=6, lr_steps=(1,), val_max_crops=6, sigma=1.0,
                 warmup_epochs=1, warmup_size=24)
    states, finals = [], []
    for stream in (False, True):
        cfg = TrainConfig(epochs=2, device="cpu", cpu_precision="fp32", seed=0, progress=False)
        model, history, final = pose2d.fit(h5, index, p, trainer_config=cfg, stream=stream)
        states.append(model.state_dict())
        finals.append((history, final))
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    assert finals[0] == finals[1]


def test_detections_do_not_depend_on_the_chunking(tmp_path):
    """detect_2d reads crops.h5 in blocks: extract's old layout (64 crops per chunk) and the new
    one (one per chunk) hold the same pixels and give the same detections."""
    h5, pq, crops, _ = _write(tmp_path)
    old = tmp_path / "crops64.h5"
    with h5py.File(h5, "r") as f, h5py.File(old, "w") as g:
        g.create_dataset("crops", data=f["crops"][()], maxshape=(None, S, S, 3), chunks=(64, S, S, 3),
                         compression="gzip", compression_opts=1)
    assert np.array_equal(read_crops(old), read_crops(h5))
    assert np.array_equal(read_crops(old, [5, 1, 5]), read_crops(h5, [5, 1, 5]))
    index = read_crop_index(pq)
    torch.manual_seed(0)
    model = PoseResNet(PoseResNetConfig(depth=18, deconv_channels=16)).eval()
    a = pose2d.detect_file(model, old, index, batch_size=16, progress=False)
    b = pose2d.detect_file(model, h5, index, batch_size=16, progress=False)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def _hg3d_setup(tmp_path):
    import dataclasses
    import sys
    from pathlib import Path

    from pose3d.tasks import image3d

    sys.path.insert(0, str(Path(__file__).parent))
    from test_hg3d import _fake_studio

    _fake_studio(tmp_path, n_frames=8)
    p = dataclasses.replace(P.HG3DParams(), subjects_3d=["S1"], subjects_2d_only=["S5"], epochs_2d=1,
                            epochs_3d=1, epochs_joint=1, batch_size=4, geo_weight=1.0, samples_per_epoch=8)
    opts = dataclasses.replace(image3d.configs_from_params(p)[1], eval_max=4)
    files = [tmp_path / f for f in ("crops.h5", "crops.parquet", "mocap.h5", "cameras.json")]
    return image3d, opts, files


def test_train_hg3d_ddp_ranks_build_only_their_slice(tmp_path, monkeypatch):
    """Under DDP a train_hg3d rank builds (reads) only its slice of each global batch: the
    slices of ranks 0 and 1 put together are the one-process batch, bit for bit."""
    image3d, opts, files = _hg3d_setup(tmp_path)
    data = image3d.load_data(*files, input_size=32, stride=4, subjects=["S1", "S5"])
    reads = []

    class Counting(CropStore):
        def read(self, items):
            reads.append(len(items))
            return super().read(items)

    data.images = Counting(data.images.path, data.images.rows, data.images.size)
    seen = {}

    class Recorder:  # the Trainer, reduced to handing over the epoch's batches
        device, distributed = torch.device("cpu"), False

        def __init__(self, *a, **kw):
            pass

        def fit(self, step, batches, evaluate=None, fingerprint=""):
            seen["batches"] = batches
            return []

    monkeypatch.setattr(image3d, "Trainer", Recorder)
    image3d.train(torch.nn.Linear(1, 1), data, opts, TrainConfig(epochs=3, device="cpu", seed=0, progress=False))
    for epoch in range(3):
        whole = list(seen["batches"](epoch))
        assert len(whole) == 2
        reads.clear()
        halves = [list(seen["batches"](epoch).shard(r, 2)) for r in (0, 1)]
        assert reads == [2, 2, 2, 2]  # 2 batches x 2 ranks, 2 crops each
        for b, h0, h1 in zip(whole, *halves):
            assert len(h0["images"]) == 2
            for k in b:
                assert torch.equal(torch.cat([h0[k], h1[k]]), b[k]), k


def test_train_hg3d_streaming_trains_the_same_model(tmp_path):
    """train_hg3d's data from crops.h5 on demand (resampled on read) vs in memory: the same
    three phases give the same weights, bit for bit."""
    from pose3d.models.hg3d import HG3D, HG3DConfig

    image3d, opts, files = _hg3d_setup(tmp_path)
    states = []
    for stream in (False, True):
        data = image3d.load_data(*files, input_size=32, stride=4, subjects=["S1", "S5"], stream=stream)
        assert isinstance(data.images, CropStore) == stream
        torch.manual_seed(0)
        model = HG3D(HG3DConfig(deconv_channels=16, depth_channels=8))
        cfg = TrainConfig(epochs=3, device="cpu", cpu_precision="fp32", seed=0, progress=False)
        _, history, _ = image3d.train(model, data, opts, cfg)
        states.append((model.state_dict(), history))
    for k in states[0][0]:
        assert torch.equal(states[0][0][k], states[1][0][k]), k
    assert states[0][1] == states[1][1]
