"""The MLflow mirror: one run per stage, tags, failure marking, never breaking a stage."""

from __future__ import annotations

import pytest

from pose3d import tracking


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
    assert r.info.artifact_uri.startswith((repo / "mlartifacts").as_uri())


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
        "from pose3d import tracking\n"
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
