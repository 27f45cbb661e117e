"""The one training loop: loss goes down, checkpoint/resume gives the same result, curves CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from pose3d.data.io import DataError
from pose3d.runtime import train as train_mod
from pose3d.runtime.train import Trainer, TrainConfig, load_state, resolve_device, save_model


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    y = x @ w + 0.01 * torch.randn(256, 1, generator=g)
    return x, y


def _make(tmp_path, epochs, seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    cfg = TrainConfig(epochs=epochs, cpu_precision="fp32", seed=seed, checkpoint=tmp_path / "ckpt.pt",
                      curves_csv=tmp_path / "curves.csv", progress=False)
    return Trainer({"model": net}, {"model": opt}, {"model": sched}, config=cfg), net


def _fit(trainer, x, y, seed=0):
    def batches(epoch):
        idx = np.random.default_rng([seed, epoch]).permutation(len(x))
        return [(x[idx[i:i + 32]], y[idx[i:i + 32]]) for i in range(0, len(x), 32)]

    def step(ctx, batch, epoch):
        xb, yb = batch
        with ctx.autocast():
            loss = nn.functional.mse_loss(ctx.modules["model"](xb), yb)
        ctx.backward_step(loss, "model")
        return {"loss": loss}

    def evaluate(ctx, epoch):
        return {"val_mse": nn.functional.mse_loss(ctx.modules["model"](x), y).item()}

    return trainer.fit(step, batches, evaluate, fingerprint="fp1")


def test_loss_decreases_and_curves_written(tmp_path):
    x, y = _problem()
    trainer, _ = _make(tmp_path, epochs=6)
    hist = _fit(trainer, x, y)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    assert hist[-1]["val_mse"] < 0.5 * hist[0]["val_mse"]
    rows = list(csv.DictReader(open(tmp_path / "curves.csv")))
    assert len(rows) == 6 and float(rows[-1]["val_mse"]) == pytest.approx(hist[-1]["val_mse"])
    assert float(rows[2]["lr_model"]) == pytest.approx(1.5e-2)  # StepLR halved after 2 epochs


def test_resume_matches_uninterrupted(tmp_path):
    x, y = _problem()
    full, _ = _make(tmp_path / "a", epochs=4)
    h_full = _fit(full, x, y)
    # interrupted after 2 epochs, then a fresh process resumes to 4
    part, _ = _make(tmp_path / "b", epochs=2)
    _fit(part, x, y)
    resumed, _ = _make(tmp_path / "b", epochs=4)
    h_res = _fit(resumed, x, y)
    assert [h["epoch"] for h in h_res] == [1, 2, 3, 4]
    assert h_res[-1]["val_mse"] == pytest.approx(h_full[-1]["val_mse"], rel=1e-6)
    assert h_res[2]["train_loss"] == pytest.approx(h_full[2]["train_loss"], rel=1e-6)


def test_fingerprint_mismatch_restarts(tmp_path):
    x, y = _problem()
    t1, _ = _make(tmp_path, epochs=2)
    _fit(t1, x, y)
    t2, _ = _make(tmp_path, epochs=2)
    assert t2.try_resume("other") == 0
    assert t2.try_resume("fp1") == 2


def test_checkpoint_of_other_code_restarts(tmp_path, monkeypatch):
    """A finished checkpoint is not resumed once the package's code changed (a fix must retrain)."""
    x, y = _problem()
    t1, _ = _make(tmp_path, epochs=2)
    _fit(t1, x, y)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["code"] == train_mod.code_digest()
    monkeypatch.setattr(train_mod, "code_digest", lambda: "edited")
    t2, _ = _make(tmp_path, epochs=2)
    assert t2.try_resume("fp1") == 0


def test_non_finite_loss_is_an_error(tmp_path):
    trainer, net = _make(tmp_path, epochs=1)

    def step(ctx, batch, epoch):
        ctx.backward_step(torch.tensor(float("nan"), requires_grad=True), "model")
        return {}

    with pytest.raises(FloatingPointError, match="non-finite loss"):
        trainer.fit(step, lambda e: [0], fingerprint="x")


def test_save_and_load_model(tmp_path):
    net = nn.Linear(3, 2)
    save_model(tmp_path / "m", net, {"in": 3, "out": 2})
    state = load_state(tmp_path / "m" / "model.pt")
    assert torch.equal(state["weight"], net.weight.detach())
    assert (tmp_path / "m" / "config.json").read_text().strip().startswith("{")
    with pytest.raises(DataError, match="model weights not found"):
        load_state(tmp_path / "nope.pt")


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    # 'auto' follows torch.cuda.is_available(), both ways
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_saved_weights_are_byte_identical_for_equal_weights(tmp_path):
    """DVC hashes model.pt: equal weights must give equal bytes (no random zip root or id)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    save_model(tmp_path / "a", net, {"in": 4})
    save_model(tmp_path / "b", net, {"in": 4})
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()
