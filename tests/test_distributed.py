"""DistributedDataParallel under torchrun on the CPU (gloo): two processes train a tiny train_2d
and a tiny lift@repnet along the same per-epoch losses as one process with the same global
batch, and leave one set of outputs and one MLflow run. Also the pieces: batch slicing,
synchronised BatchNorm, per-row random numbers, the launch decision."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pose3d.runtime import distributed
from pose3d.runtime import params as P

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "stages"))
sys.path.insert(0, str(Path(__file__).parent))
from test_video_crops import make_studio  # noqa: E402

#: per-epoch losses of 2 processes vs 1: the same sums in another order (the gradient
#: all-reduce, BatchNorm statistics summed over ranks); measured <= 3e-5 relative
LOSS_RTOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A studio of 3 subjects (S1, S5 train; S9 test) x 2 cameras x 12 frames and its 32 px crops."""
    import extract

    root = tmp_path_factory.mktemp("ddp")
    studio = make_studio(root / "studio", subjects=(("S1", "train"), ("S5", "train"), ("S9", "test")),
                         frames=12)
    params = _params(root / "extract.yaml", nproc=1, mlflow=False)
    assert extract.main(["--mocap", str(studio / "mocap.h5"), "--cameras", str(studio / "cameras.json"),
                         "--videos", str(studio / "videos"), "--out-h5", str(root / "crops.h5"),
                         "--out-index", str(root / "crops.parquet"), "--params", str(params)]) == 0
    return root


def _params(path: Path, nproc: int, mlflow: bool) -> Path:
    p = {"base": {"device": "cpu", "cpu_precision": "fp32", "num_threads": 1, "mlflow": mlflow,
                  "mlflow_experiment": "ddp", "nproc": nproc},
         "extract": {"crop_size": 32},
         # 48 train crops, global batch 8 (2 x 4 under DDP): 6 steps per epoch
         "pose2d": {"depth": 18, "deconv_channels": 16, "epochs": 2, "batch_size": 8, "lr_steps": [1],
                    "val_max_crops": 8, "sigma": 1.0},
         "repnet": {"input_2d": "gt", "epochs": 2, "hidden": 32, "critic_hidden": 16,
                    "critic_kcs_hidden": 32, "batch_size": 8}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(p))
    return path


def _argv(stage: str, root: Path, out: Path, params: Path) -> list[str]:
    if stage == "train_2d":
        return ["--crops-h5", str(root / "crops.h5"), "--crops-index", str(root / "crops.parquet"),
                "--model-dir", str(out / "pose2d"), "--checkpoint", str(out / "pose2d" / "checkpoint.pt"),
                "--metrics", str(out / "train_2d.json"), "--curves", str(out / "curves.csv"),
                "--params", str(params)]
    return ["--model", "repnet", "--mocap", str(root / "studio" / "mocap.h5"),
            "--cameras", str(root / "studio" / "cameras.json"), "--out", str(out / "repnet.parquet"),
            "--model-dir", str(out / "repnet"), "--checkpoint", str(out / "repnet" / "checkpoint.pt"),
            "--curves", str(out / "curves.csv"), "--params", str(params)]


def _env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME", "POSE3D_PARENT_RUN", "WORLD_SIZE", "RANK")}
    env.update({"OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
                "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")})
    return env


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
            if not str(p.relative_to(folder)).startswith(("mlflow.db", "mlartifacts", "params.yaml"))}


STAGES = ("train_2d", "lift")


@pytest.fixture(scope="module")
def runs(tiny):
    """Both stages in one process (base.nproc = 1, the plain loop) and under one
    ``torchrun --nproc_per_node 2`` (gloo) launch: ``{nproc: out folder}``."""
    one, two = tiny / "one", tiny / "two"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for stage in STAGES:
            mod = __import__(stage)
            assert mod.main(_argv(stage, tiny, one / stage, _params(one / "params.yaml", 1, False))) == 0
    finally:
        torch.set_num_threads(n)
    params = _params(two / "params.yaml", nproc=2, mlflow=True)
    argv = [x for stage in STAGES for x in (stage, *_argv(stage, tiny, two / stage, params), "--")][:-1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).parent / "ddp_stages.py"), *argv]
    # its own process group, so that a hang is killed whole (torchrun's ranks included)
    proc = subprocess.Popen(cmd, env=_env(two), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    p = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "rank 1 of 2 joined (gloo)" in p.stderr
    return {1: one, 2: two}


@pytest.mark.parametrize("stage", STAGES)
def test_two_processes_train_like_one(runs, stage):
    one, two = runs[1] / stage, runs[2] / stage
    a, b = pd.read_csv(one / "curves.csv"), pd.read_csv(two / "curves.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(b) == 2
    losses = [c for c in a.columns if c.startswith("train_")]
    assert "train_loss" in losses and (stage == "train_2d" or "train_loss_critic" in losses)
    np.testing.assert_allclose(b[losses].to_numpy(), a[losses].to_numpy(), rtol=LOSS_RTOL)
    # one set of outputs: the files one process writes, no rank's copies
    assert _files(two) == _files(one)
    # one MLflow run, by rank 0, with both epochs' metrics
    import mlflow

    name = {"train_2d": "train_2d", "lift": "lift@repnet"}[stage]
    mlflow.set_tracking_uri(f"sqlite:///{runs[2] / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["ddp"], output_format="list",
                               filter_string=f"tags.`dvc.stage` = '{name}'")
    assert [r.info.status for r in found] == ["FINISHED"]
    hist = mlflow.MlflowClient().get_metric_history(found[0].info.run_id, "train_loss")
    assert sorted(m.step for m in hist) == [1, 2]
    assert found[0].data.params["base.nproc"] == "2"
    if stage == "lift":  # the two models predict alike
        from pose3d.data.contracts import read_predictions

        pa, pb = read_predictions(one / "repnet.parquet"), read_predictions(two / "repnet.parquet")
        np.testing.assert_allclose(pb.joints, pa.joints, atol=1e-4)


def test_a_stage_relaunches_itself_under_torchrun(monkeypatch, tmp_path):
    """base.nproc = 2 outside torchrun: the stage runs itself through torch.distributed.run
    (what `dvc exp run -S base.nproc=2` does) and returns its status; the ranks get the
    MLflow pipeline key of the stage process, so their run nests under the same pipeline."""
    import train_2d

    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("POSE3D_PARENT_RUN", "grid-1")
    monkeypatch.setattr(distributed.subprocess, "run",
                        lambda cmd, env: calls.append((cmd, env)) or subprocess.CompletedProcess(cmd, 3))
    argv = ["--crops-h5", "c.h5", "--crops-index", "c.parquet", "--model-dir", "m", "--checkpoint", "m/c.pt",
            "--metrics", "m.json", "--curves", "c.csv", "--params", str(_params(tmp_path / "p.yaml", 2, False))]
    assert train_2d.main(argv) == 3
    (cmd, env), = calls
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   train_2d.__file__, *argv]
    assert env["POSE3D_PIPELINE_KEY"] == "label:grid-1"


# --------------------------------------------------------------------------- the pieces
def test_batch_slices_tile_the_global_batch():
    batch = {"x": torch.arange(12).reshape(6, 2), "rows": np.arange(6), "index": 3, "pair": (torch.ones(6), "a")}
    parts = [distributed.shard_batch(batch, r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p["x"] for p in parts]), batch["x"])
    assert [list(p["rows"]) for p in parts] == [[0, 1], [2, 3], [4, 5]]
    assert all(p["index"] == 3 and p["pair"][1] == "a" and len(p["pair"][0]) == 2 for p in parts)
    assert distributed.shard_batch(batch, 0, 1) is batch
    with pytest.raises(ValueError, match="7 rows cannot be split evenly over 2 processes.*base.nproc"):
        distributed.shard_batch(torch.zeros(7), 0, 2)


def test_one_process_is_the_plain_loop(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.init(torch.device("cpu")) and not distributed.active()
    torch.manual_seed(5)
    a = distributed.rand_rows(4, 1, 1)
    torch.manual_seed(5)
    assert torch.equal(a, torch.rand(4, 1, 1))  # no extra random numbers with one process
    assert distributed.mean_over_ranks({"loss": 3.0}, 2) == {"loss": 1.5}
    # the launch decision: nproc > 1 outside torchrun only
    assert distributed.should_launch(2) and not distributed.should_launch(1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not distributed.should_launch(2)


def test_nproc_is_checked_and_left_out_of_checkpoint_fingerprints():
    with pytest.raises(P.ParamsError, match=r"base.nproc = 0: must be >= 1"):
        P.from_dict(P.Base, {"nproc": 0}, "base")
    assert P.fingerprint(P.Base(nproc=8)) == P.fingerprint(P.Base())
    assert P.fingerprint(P.Base(seed=1)) != P.fingerprint(P.Base())
