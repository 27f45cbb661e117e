"""The MLflow mirror: one run per stage, tags, failure marking, never breaking a stage."""

from __future__ import annotations

import pytest

from pose3d.runtime import tracking


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-test")
    return tmp_path


def _runs(root):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["pose3d-test"], output_format="list")


def test_run_logged_with_tags_params_metrics(repo):
    art = repo / "a.txt"
    art.write_text("hello")
    with tracking.stage_run("lift@repnet", params={"repnet.reproj_weight": 2.0},
                            experiment="pose3d-test") as run:
        run.log_metrics({"mpjpe_mm": 50.5, "bad": "x"}, step=1)
        run.log_artifact(art)
    (r,) = _runs(repo)
    assert r.info.status == "FINISHED"
    assert r.data.tags["dvc.stage"] == "lift@repnet"
    assert r.data.tags["dvc.exp_name"] == "exp-test"
    assert r.data.params["repnet.reproj_weight"] == "2.0"
    assert r.data.metrics["mpjpe_mm"] == 50.5
    # relative to the repo (pose3d.runtime.mlflow_store), the file inside it
    assert r.info.artifact_uri.startswith("pose3d:mlartifacts/")
    assert (repo / r.info.artifact_uri.removeprefix("pose3d:") / "a.txt").read_text() == "hello"


def test_failed_stage_marks_run_failed(repo):
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.stage_run("train_2d", experiment="pose3d-test"):
            raise RuntimeError("boom")
    (r,) = _runs(repo)
    assert r.info.status == "FAILED"


def test_tracking_failure_does_not_break_stage(repo, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus-scheme://nowhere")
    with tracking.stage_run("evaluate", experiment="pose3d-test") as run:
        run.log_metrics({"x": 1.0})
        assert not run.active
    with tracking.stage_run("evaluate", enabled=False) as run:
        assert not run.active


def test_sigterm_marks_run_failed(repo):
    """A stage killed with SIGTERM (what `kill` and job schedulers send) is recorded FAILED."""
    import os
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import time\n"
        "from pose3d.runtime import tracking\n"
        "with tracking.stage_run('train_2d', experiment='pose3d-test') as run:\n"
        "    print('started', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = dict(os.environ, DVC_ROOT=str(repo))
    p = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "started"
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=60) == 128 + signal.SIGTERM
    (r,) = _runs(repo)
    assert r.info.status == "FAILED"


def test_sigterm_inside_a_tracking_call_waits_for_it(monkeypatch):
    """SIGTERM that arrives while MLflow is writing is held until the call returns (raised
    inside it, it left sqlite's write transaction open and the run could not be marked
    FAILED), then unwinds the stage as usual."""
    import os
    import signal

    calls = []

    class Store:  # an MLflow stand-in whose write is interrupted by SIGTERM
        def log_metrics(self, metrics, step=None):
            os.kill(os.getpid(), signal.SIGTERM)
            calls.append(("log_metrics", metrics))

    old = signal.getsignal(signal.SIGTERM)
    try:
        tracking.install_signal_handlers()
        run = tracking.Run(Store(), "run-id")
        with pytest.raises(SystemExit) as e:
            run.log_metrics({"loss": 1.0}, step=3)
        assert e.value.code == 128 + signal.SIGTERM
        assert calls == [("log_metrics", {"loss": 1.0})]  # the write completed first
        assert tracking._pending_signal is None and tracking._tracking_depth == 0
        with pytest.raises(SystemExit):  # outside a tracking call it still acts at once
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, old)


def test_a_run_left_running_by_a_dead_process_is_closed(repo):
    """kill -9 cannot end its own MLflow run: the stage's next run marks it KILLED (only runs
    of that stage whose process is gone; a live one is left alone)."""
    import os
    import socket
    import subprocess

    import mlflow

    dead = subprocess.Popen(["true"])
    dead.wait()
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    exp = mlflow.create_experiment("pose3d-test", artifact_location=(repo / "mlartifacts").as_uri())
    client = mlflow.MlflowClient()
    host = socket.gethostname()
    orphan = client.create_run(exp, tags={"dvc.stage": "train_2d", "pid": str(dead.pid), "host": host})
    alive = client.create_run(exp, tags={"dvc.stage": "train_2d", "pid": str(os.getpid()), "host": host})
    other = client.create_run(exp, tags={"dvc.stage": "evaluate", "pid": str(dead.pid), "host": host})
    with tracking.stage_run("train_2d", experiment="pose3d-test"):
        pass
    status = {r.info.run_id: r.info.status for r in _runs(repo)}
    assert status[orphan.info.run_id] == "KILLED"
    assert status[alive.info.run_id] == "RUNNING" and status[other.info.run_id] == "RUNNING"


# --------------------------------------------------------------------------- pipeline runs
def _by_stage(root, name="pose3d-test"):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[name], output_format="list")
    return [r for r in runs if "dvc.stage" in r.data.tags], [r for r in runs if "dvc.stage" not in r.data.tags]


def test_stages_of_one_dvc_process_nest_under_one_pipeline_run(repo, monkeypatch):
    """DVC runs each stage as its own process; those of one `dvc repro` (one launching dvc
    process) share a parent run, whose status is that of the last stage; another dvc process
    gets another parent, and a stage run by hand (no DVC_STAGE) gets none."""
    import psutil

    me, other = psutil.Process(), psutil.Process(psutil.Process().ppid())
    monkeypatch.setattr(tracking, "_launcher", lambda: me)
    monkeypatch.setenv("DVC_STAGE", "lift@martinez")
    with tracking.stage_run("lift@martinez", experiment="pose3d-test"):
        pass
    with pytest.raises(RuntimeError):
        with tracking.stage_run("evaluate", experiment="pose3d-test"):
            raise RuntimeError("boom")
    stages, parents = _by_stage(repo)
    assert len(parents) == 1 and len(stages) == 2
    parent = parents[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in stages} == {parent.info.run_id}
    assert parent.info.status == "FAILED"  # the pipeline stopped at evaluate
    assert parent.data.tags["dvc.exp_name"] == "exp-test" and parent.data.tags["pose3d.pipeline"]

    monkeypatch.setattr(tracking, "_launcher", lambda: other)  # the next dvc repro
    with tracking.stage_run("evaluate", experiment="pose3d-test"):
        pass
    monkeypatch.delenv("DVC_STAGE")  # python stages/evaluate.py by hand
    with tracking.stage_run("evaluate", experiment="pose3d-test"):
        pass
    stages, parents = _by_stage(repo)
    assert len(parents) == 2 and len(stages) == 4
    newest, by_hand = sorted(stages, key=lambda r: r.info.start_time)[-2:]
    assert newest.data.tags["mlflow.parentRunId"] not in (None, parent.info.run_id)
    assert "mlflow.parentRunId" not in by_hand.data.tags
    assert {p.info.run_id: p.info.status for p in parents}[newest.data.tags["mlflow.parentRunId"]] == "FINISHED"


def test_parent_run_named_by_the_environment(repo, monkeypatch):
    """POSE3D_PARENT_RUN: a label shared by stages run by hand groups them; a run id nests
    under that run."""
    monkeypatch.setenv("POSE3D_PARENT_RUN", "ablation-1")
    for stage in ("lift@martinez", "evaluate"):
        with tracking.stage_run(stage, experiment="pose3d-test"):
            pass
    stages, parents = _by_stage(repo)
    assert [p.info.run_name for p in parents] == ["ablation-1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in stages} == {parents[0].info.run_id}
    target = stages[0].info.run_id
    monkeypatch.setenv("POSE3D_PARENT_RUN", target)
    with tracking.stage_run("evaluate", experiment="pose3d-test") as run:
        pass
    stages, parents = _by_stage(repo)
    (nested,) = [r for r in stages if r.info.run_id == run.run_id]
    assert nested.data.tags["mlflow.parentRunId"] == target
    assert len(parents) == 1


def test_the_launcher_is_found_past_the_shell():
    """DVC runs a stage's cmd with `$SHELL -c`: the process that shares a pipeline run is the
    one that started the shell (here: this test's process)."""
    import os
    import subprocess
    import sys

    code = "from pose3d.runtime import tracking; print(tracking._launcher().pid)"
    # `; true` keeps the shell alive between us and python (a lone command is exec'd)
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c '{code}'; true"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert int(out.strip()) == os.getpid()


# --------------------------------------------------------------------------- models, datasets, artifacts
def _tiny_hg3d():
    import torch

    from pose3d.models.hg3d import HG3D, HG3DConfig

    torch.manual_seed(0)
    return HG3D(HG3DConfig(deconv_channels=16, depth_channels=8)).eval()


def test_saved_image_model_is_logged_and_loads_back(repo, monkeypatch):
    """save_model inside a stage run logs the model (mlflow.pytorch, signature, input
    example); runs:/<id>/model loads a module that predicts exactly what the saved weights do,
    and POSE3D_REGISTER_MODELS registers it as pose3d-<model folder>."""
    import mlflow
    import torch

    from pose3d.models.hg3d import HG3D, HG3DConfig
    from pose3d.runtime.train import load_state, save_model

    monkeypatch.setenv("POSE3D_REGISTER_MODELS", "true")
    model = _tiny_hg3d()
    with tracking.stage_run("train_hg3d", experiment="pose3d-test") as run:
        save_model(repo / "models" / "hg3d", model, {**model.config.to_dict(), "input_size": 64})
    logged = mlflow.pytorch.load_model(f"runs:/{run.run_id}/model")
    own = HG3D(HG3DConfig(deconv_channels=16, depth_channels=8))  # the project's loader path
    own.load_state_dict(load_state(repo / "models" / "hg3d" / "model.pt"))
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for a, b in zip(own.eval()(x), logged(x)):  # (heatmaps, depth maps)
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    info = mlflow.models.get_model_info(f"runs:/{run.run_id}/model")
    assert info.signature.inputs.inputs[0].shape == (-1, 3, 64, 64)
    assert [o.name for o in info.signature.outputs.inputs] == ["output_0", "output_1"]
    assert info.saved_input_example_info["type"] == "ndarray"
    (version,) = mlflow.MlflowClient().search_model_versions("name = 'pose3d-hg3d'")
    assert version.run_id == run.run_id


def test_artifacts_resolve_inside_a_moved_copy(repo, tmp_path, monkeypatch):
    """Artifact locations are relative to the repo: after the clone is moved (the original
    folder gone), its database still serves its own artifacts and models."""
    import shutil

    import mlflow
    import torch

    (repo / "m.json").write_text('{"mpjpe_mm": 1}')
    model = torch.nn.Linear(4, 2).eval()
    with tracking.stage_run("lift@martinez", experiment="pose3d-test") as run:
        run.log_artifact(repo / "m.json")
        run.log_model(model, torch.ones(1, 4), model_name="martinez")
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.move(repo, moved)
    monkeypatch.setenv("DVC_ROOT", str(moved))
    mlflow.set_tracking_uri(f"sqlite:///{moved / 'mlflow.db'}")
    r = mlflow.get_run(run.run_id)
    assert r.info.artifact_uri == f"pose3d:mlartifacts/{run.run_id}/artifacts"
    local = mlflow.artifacts.download_artifacts(run_id=run.run_id, artifact_path="m.json", dst_path=str(moved / "dl"))
    assert open(local).read() == '{"mpjpe_mm": 1}'
    loaded = mlflow.pytorch.load_model(f"runs:/{run.run_id}/model")
    torch.testing.assert_close(loaded(torch.ones(2, 4)), model(torch.ones(2, 4)), rtol=0, atol=0)
    repo.mkdir()  # a new clone at the old path is not read
    assert mlflow.MlflowClient().list_artifacts(run.run_id)[0].path == "m.json"


def test_dataset_logged_as_an_input(repo, monkeypatch):
    """A stage given --mocap/--cameras logs the dataset: name = folder, digest of both files,
    source = the folder as given (relative in dvc.yaml), each file's digest as a tag."""
    import mlflow

    from pose3d.runtime import cli
    from pose3d.data.io import file_digest

    monkeypatch.chdir(repo)
    (repo / "data" / "studio").mkdir(parents=True)
    for f in ("mocap.h5", "cameras.json"):
        (repo / "data" / "studio" / f).write_bytes(f.encode() * 100)
    files = ["data/studio/mocap.h5", "data/studio/cameras.json"]
    with tracking.stage_run("triangulate@ransac", experiment="pose3d-test") as run:
        assert cli._log_dataset(run, "triangulate@ransac", files)
        assert not cli._log_dataset(run, "x", ["data/studio/mocap.h5", None])
    (d,) = mlflow.get_run(run.run_id).inputs.dataset_inputs
    assert d.dataset.name == "studio" and d.dataset.digest == file_digest(*files)
    assert '"data/studio"' in d.dataset.source and d.dataset.source_type == "local"
    tags = {t.key: t.value for t in d.tags}
    assert tags["mocap.h5"] == file_digest(files[0]) and tags["mlflow.data.context"] == "triangulate@ransac"


def test_system_metrics_on_mlflows_flag(repo, monkeypatch):
    """MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true gives each stage run CPU/memory metrics."""
    import time

    import mlflow

    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    with tracking.stage_run("extract", experiment="pose3d-test") as run:
        time.sleep(2.5)
    metrics = mlflow.get_run(run.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
