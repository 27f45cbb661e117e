"""The MLflow mirror: one run per executed stage, never in the way of the stage's outputs.

Where runs go: ``MLFLOW_TRACKING_URI`` when set; otherwise ``sqlite:///<repo>/mlflow.db``
with artifacts in ``<repo>/mlartifacts``, where ``<repo>`` is ``DVC_ROOT`` (set by DVC,
also inside queued experiments' temporary copies) or the current directory. The
experiment is created with an explicit artifact location inside the repo, so runs of
queued ``dvc exp run`` keep their artifacts.

Tags: ``dvc.stage``, ``dvc.exp_name``, ``dvc.exp_baseline``, ``git.revision``. Params are
flattened (``repnet.reproj_weight``). Any tracking error is logged as a warning once and
the stage goes on; a stage that raises marks its run FAILED.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping

log = logging.getLogger(__name__)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def repo_root() -> Path:
    """DVC_ROOT when DVC runs us (also for queued experiments), else the current directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri(root: Path | None = None) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = root or repo_root()
    return f"sqlite:///{root / 'mlflow.db'}"


def _git_revision(root: Path) -> str:
    rev = os.environ.get("DVC_EXP_BASELINE_REV")
    if rev:
        return rev
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Run:
    """A thin facade over an MLflow run whose methods never raise."""

    def __init__(self, mlflow_module=None, run_id: str | None = None):
        self._mlflow = mlflow_module
        self.run_id = run_id
        self._warned = False

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def _safe(self, name: str, *args, **kwargs):
        if self._mlflow is None:
            return None
        try:
            with _deferred_sigterm():
                return getattr(self._mlflow, name)(*args, **kwargs)
        except Exception as e:  # tracking must never change a stage's outputs
            if not self._warned:
                log.warning("MLflow tracking failed (%s); the stage continues without it", e)
                self._warned = True
            return None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        clean = {}
        for k, v in metrics.items():
            try:
                clean[_clean_key(k)] = float(v)
            except (TypeError, ValueError):
                continue
        if clean:
            self._safe("log_metrics", clean, step=step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        flat = {_clean_key(k): str(v)[:6000] for k, v in params.items()}
        if flat:
            self._safe("log_params", flat)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._safe("set_tags", {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if Path(path).exists():
            self._safe("log_artifact", str(path), artifact_path=artifact_path)


def _clean_key(k: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / ; map anything else to '_'
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(k))


@contextlib.contextmanager
def stage_run(stage: str, params: Mapping[str, Any] | None = None, base=None,
              enabled: bool | None = None, experiment: str | None = None) -> Iterator[Run]:
    """Open one MLflow run for a DVC stage; yields a :class:`Run` (inactive if disabled).

    SIGTERM is turned into SystemExit for the stage process, so a killed stage unwinds
    through this context (its run is marked FAILED, atomic writes remove their temp files).

    ``base`` is the ``base`` params section (its ``mlflow`` / ``mlflow_experiment`` decide
    whether and where to log). The run is FAILED if the block raises (also on Ctrl-C / kill
    via KeyboardInterrupt/SystemExit), FINISHED otherwise.
    """
    if enabled is None:
        enabled = bool(getattr(base, "mlflow", True))
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or \
        getattr(base, "mlflow_experiment", "pose3d")
    install_signal_handlers()
    run = Run()
    mlflow = None
    if enabled:
        try:
            import mlflow as _mlflow

            root = repo_root()
            _mlflow.set_tracking_uri(tracking_uri(root))
            exp = _mlflow.get_experiment_by_name(experiment)
            if exp is None:
                art = (root / "mlartifacts").as_uri()
                exp_id = _mlflow.create_experiment(experiment, artifact_location=art)
            else:
                exp_id = exp.experiment_id
            exp_name = os.environ.get("DVC_EXP_NAME", "")
            close_orphaned_runs(_mlflow, exp_id, stage)
            active = _mlflow.start_run(experiment_id=exp_id,
                                       run_name=f"{stage}" + (f" [{exp_name}]" if exp_name else ""))
            mlflow = _mlflow
            run = Run(_mlflow, active.info.run_id)
            run.set_tags({"dvc.stage": stage, "dvc.exp_name": exp_name or "workspace",
                          "dvc.exp_baseline": os.environ.get("DVC_EXP_BASELINE_REV", ""),
                          "git.revision": _git_revision(root), "pid": str(os.getpid()),
                          "host": socket.gethostname()})
            if params:
                run.log_params(params)
        except Exception as e:
            log.warning("MLflow unavailable (%s); stage %s runs without tracking", e, stage)
            mlflow = None
            run = Run()
    try:
        yield run
    except BaseException:
        if mlflow is not None:
            with contextlib.suppress(Exception), _deferred_sigterm():
                mlflow.end_run(status="FAILED")
        raise
    else:
        if mlflow is not None:
            with contextlib.suppress(Exception), _deferred_sigterm():
                mlflow.end_run(status="FINISHED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def close_orphaned_runs(mlflow, experiment_id: str, stage: str) -> list[str]:
    """Mark KILLED the RUNNING runs of ``stage`` left by a process of this host that is gone
    (a kill -9 cannot end its own run). Returns their run ids."""
    runs = mlflow.search_runs(experiment_ids=[experiment_id], output_format="list",
                              filter_string=f"tags.`dvc.stage` = '{stage}' and attributes.status = 'RUNNING'")
    host, closed = socket.gethostname(), []
    for r in runs:
        pid = r.data.tags.get("pid", "")
        if r.data.tags.get("host") == host and pid.isdigit() and not _alive(int(pid)):
            mlflow.MlflowClient().set_terminated(r.info.run_id, status="KILLED")
            closed.append(r.info.run_id)
    if closed:
        log.info("%s: marked %d orphaned RUNNING run(s) of a dead process KILLED", stage, len(closed))
    return closed


# SIGTERM during an MLflow call is held until the call returns: raised inside it, the SystemExit
# could leave the tracking store's write transaction open (sqlite: "database is locked"), and the
# end_run(status="FAILED") on the way out then failed, leaving the killed run RUNNING.
_tracking_depth = 0
_pending_signal: int | None = None


@contextlib.contextmanager
def _deferred_sigterm() -> Iterator[None]:
    global _tracking_depth, _pending_signal
    _tracking_depth += 1
    try:
        yield
    finally:
        _tracking_depth -= 1
        if _tracking_depth == 0 and _pending_signal is not None:
            signum, _pending_signal = _pending_signal, None
            raise SystemExit(128 + signum)


def install_signal_handlers() -> None:
    """Turn SIGTERM into SystemExit so a killed stage unwinds: its MLflow run is marked
    FAILED and temporary files are removed (atomic writes), instead of dying silently. A
    SIGTERM that arrives inside an MLflow call takes effect when the call returns."""

    def _term(signum, frame):
        global _pending_signal
        if _tracking_depth > 0:
            _pending_signal = signum
            return
        raise SystemExit(128 + signum)

    with contextlib.suppress(ValueError):  # only in the main thread
        signal.signal(signal.SIGTERM, _term)
