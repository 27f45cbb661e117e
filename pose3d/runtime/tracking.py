"""The MLflow mirror: one run per executed stage, nested under one run per pipeline execution,
never in the way of the stage's outputs.

Where runs go: ``MLFLOW_TRACKING_URI`` when set; otherwise ``sqlite:///<repo>/mlflow.db``
with artifacts in ``<repo>/mlartifacts``, where ``<repo>`` is ``DVC_ROOT`` (set by DVC,
also inside queued experiments' temporary copies) or the current directory. An experiment of
a SQLite store is created with the artifact location ``pose3d:mlartifacts``: relative to the
database's folder (:mod:`pose3d.runtime.mlflow_store`), so a moved clone serves its own files and queued
``dvc exp run`` keep their artifacts.

Pipeline runs: the stages one ``dvc repro`` / ``dvc exp run`` executes are separate processes;
they nest under one parent run found or created by :func:`pipeline_key`: ``POSE3D_PARENT_RUN``
when set (a run id to nest under, or any label the stage processes share), else, for a stage
DVC runs (``DVC_STAGE`` set), the dvc process that started it (host, pid, start time). A stage
run by hand has no parent. The parent carries the last stage's status and end time.

Tags: ``dvc.stage``, ``dvc.exp_name``, ``dvc.exp_baseline``, ``git.revision`` (the parent:
``pose3d.pipeline``, ``params.digest`` and the same DVC/git tags). Params are flattened
(``repnet.reproj_weight``). Models saved by :func:`pose3d.runtime.train.save_model` during a stage are
logged to its run (:meth:`Run.log_model`). Any tracking error is logged as a warning once and
the stage goes on; a stage that raises marks its run FAILED.

Flags (environment, so that they never change a stage's outputs or DVC's view of it):
``POSE3D_REGISTER_MODELS=true`` registers each logged model as ``pose3d-<model folder>``;
MLflow's own ``MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true`` logs CPU, memory, disk and network
(psutil) every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (default 10) per stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import psutil

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


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


class Run:
    """A thin facade over an MLflow run whose methods never raise."""

    def __init__(self, mlflow_module=None, run_id: str | None = None, io=None):
        self._mlflow = mlflow_module
        self._io = io  # pose3d.runtime.mlflow_io, imported with mlflow
        self.run_id = run_id
        self._warned = False

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def _call(self, fn, *args, **kwargs):
        if self._mlflow is None:
            return None
        try:
            with _deferred_sigterm():
                return fn(*args, **kwargs)
        except Exception as e:  # tracking must never change a stage's outputs
            if not self._warned:
                log.warning("MLflow tracking failed (%s); the stage continues without it", e)
                self._warned = True
            return None

    def _safe(self, name: str, *args, **kwargs):
        return self._call(lambda: getattr(self._mlflow, name)(*args, **kwargs))

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

    def log_model(self, module, example, *, model_name: str, dynamic_axes: Sequence[int] = (0,)) -> str | None:
        """Log ``module`` as this run's ``model`` (``mlflow.pytorch``, signature from
        ``example``, which is also the input example); registered as ``pose3d-<model_name>``
        when ``POSE3D_REGISTER_MODELS`` is true. Returns the model URI, None when inactive."""
        registered = f"pose3d-{model_name}" if _flag("POSE3D_REGISTER_MODELS") else None
        return self._call(lambda: self._io.log_torch_model(module, example, dynamic_axes=dynamic_axes,
                                                           registered_name=registered))

    def log_dataset(self, name: str, folder: str | os.PathLike, files: Sequence[str | os.PathLike],
                    context: str) -> None:
        """``mlflow.log_input`` of the dataset ``name`` in ``folder``, digest of ``files``."""
        def log():
            dataset, tags = self._io.dataset_input(name, folder, files)
            self._mlflow.log_input(dataset, context=context, tags=tags)
        self._call(log)


def _clean_key(k: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / ; map anything else to '_'
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in str(k))


#: the run of the stage in progress in this process (an inactive Run outside one)
_active_run: Run | None = None


def active_run() -> Run:
    """The run :func:`stage_run` opened in this process, or an inactive :class:`Run`: lets
    shared code (:func:`pose3d.runtime.train.save_model`) log to the stage that calls it."""
    return _active_run or Run()


# --------------------------------------------------------------------------- pipeline runs
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "fish"}


def _launcher() -> psutil.Process | None:
    """The process that started this one, past the shells in between (DVC runs a stage's
    cmd with ``$SHELL -c``): for a DVC stage, the dvc process."""
    try:
        p = psutil.Process().parent()
        while p is not None and p.name() in _SHELLS:
            p = p.parent()
        return p
    except psutil.Error:
        return None


def pipeline_key() -> str | None:
    """What the stage processes of one pipeline execution share, or None (a stage run by hand):
    ``label:<POSE3D_PARENT_RUN>`` when that is set, else ``dvc:<host>:<pid>:<start time>`` of
    the process that runs the DVC stage (``DVC_STAGE`` set). A stage that re-launched itself
    under torchrun hands its own key to its ranks (``POSE3D_PIPELINE_KEY``): their parent
    process is torchrun, not dvc."""
    label = os.environ.get("POSE3D_PARENT_RUN", "").strip()
    if label:
        return f"label:{label}"
    handed = os.environ.get("POSE3D_PIPELINE_KEY", "").strip()
    if handed:
        return handed
    if not os.environ.get("DVC_STAGE"):
        return None
    p = _launcher()
    if p is None:
        return None
    try:
        return f"dvc:{socket.gethostname()}:{p.pid}:{p.create_time():.2f}"
    except psutil.Error:
        return None


def _params_digest(root: Path) -> str:
    path = root / "params.yaml"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.exists() else ""


def pipeline_parent(mlflow, experiment_id: str, root: Path, tags: Mapping[str, str]) -> str | None:
    """The run id the stage's run nests under (see :func:`pipeline_key`): an existing run named
    by ``POSE3D_PARENT_RUN``, else the latest run of this experiment tagged with the key's hash
    ``pose3d.pipeline``, else a new one (status RUNNING, with ``tags``). None: no parent."""
    key = pipeline_key()
    if key is None:
        return None
    client = mlflow.MlflowClient()
    label = os.environ.get("POSE3D_PARENT_RUN", "").strip()
    if len(label) == 32 and all(c in "0123456789abcdef" for c in label):
        with contextlib.suppress(Exception):
            return client.get_run(label).info.run_id
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    found = mlflow.search_runs(experiment_ids=[experiment_id], output_format="list", max_results=1,
                               filter_string=f"tags.`pose3d.pipeline` = '{digest}'",
                               order_by=["attributes.start_time DESC"])
    if found:
        return found[0].info.run_id
    exp_name = tags.get("dvc.exp_name", "workspace")
    name = label if key.startswith("label:") else f"pipeline {exp_name} @{tags.get('git.revision', '')[:7]}"
    run = client.create_run(experiment_id, run_name=name, tags={
        **tags, "pose3d.pipeline": digest, "pose3d.pipeline_key": key, "params.digest": _params_digest(root)})
    log.info("MLflow: new pipeline run %s (%s)", run.info.run_id, name)
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, params: Mapping[str, Any] | None = None, base=None,
              enabled: bool | None = None, experiment: str | None = None) -> Iterator[Run]:
    """Open one MLflow run for a DVC stage, nested under its pipeline's run (see the module
    docstring); yields a :class:`Run` (inactive if disabled), also :func:`active_run` inside.

    SIGTERM is turned into SystemExit for the stage process, so a killed stage unwinds
    through this context (its run is marked FAILED, atomic writes remove their temp files).

    ``base`` is the ``base`` params section (its ``mlflow`` / ``mlflow_experiment`` decide
    whether and where to log). The run is FAILED if the block raises (also on Ctrl-C / kill
    via KeyboardInterrupt/SystemExit), FINISHED otherwise; the parent takes the same status.
    """
    global _active_run
    if enabled is None:
        enabled = bool(getattr(base, "mlflow", True))
    experiment = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or \
        getattr(base, "mlflow_experiment", "pose3d")
    install_signal_handlers()
    run = Run()
    mlflow = None
    parent = None
    if enabled:
        try:
            import mlflow as _mlflow

            from pose3d.runtime import mlflow_io, mlflow_store

            root = repo_root()
            uri = tracking_uri(root)
            _mlflow.set_tracking_uri(uri)
            exp = _mlflow.get_experiment_by_name(experiment)
            if exp is None:
                art = mlflow_store.ARTIFACT_LOCATION if mlflow_store.is_local_store(uri) else None
                exp_id = _mlflow.create_experiment(experiment, artifact_location=art)
            else:
                exp_id = exp.experiment_id
            exp_name = os.environ.get("DVC_EXP_NAME", "")
            close_orphaned_runs(_mlflow, exp_id, stage)
            tags = {"dvc.exp_name": exp_name or "workspace",
                    "dvc.exp_baseline": os.environ.get("DVC_EXP_BASELINE_REV", ""),
                    "git.revision": _git_revision(root), "host": socket.gethostname()}
            parent = pipeline_parent(_mlflow, exp_id, root, tags)
            if parent is not None:
                _mlflow.MlflowClient().update_run(parent, status="RUNNING")
            active = _mlflow.start_run(experiment_id=exp_id, parent_run_id=parent,
                                       run_name=f"{stage}" + (f" [{exp_name}]" if exp_name else ""))
            mlflow = _mlflow
            run = Run(_mlflow, active.info.run_id, mlflow_io)
            run.set_tags({"dvc.stage": stage, **tags, "pid": str(os.getpid())})
            if params:
                run.log_params(params)
        except Exception as e:
            log.warning("MLflow unavailable (%s); stage %s runs without tracking", e, stage)
            mlflow = None
            run = Run()
    _active_run = run
    status = "FINISHED"
    try:
        yield run
    except BaseException:
        status = "FAILED"
        raise
    finally:
        _active_run = None
        if mlflow is not None:
            with contextlib.suppress(Exception), _deferred_sigterm():
                mlflow.end_run(status=status)
                if parent is not None:
                    mlflow.MlflowClient().set_terminated(parent, status=status)


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
    (a kill -9 cannot end its own run), and their pipeline run if it is still RUNNING.
    Returns the stage runs' ids."""
    runs = mlflow.search_runs(experiment_ids=[experiment_id], output_format="list",
                              filter_string=f"tags.`dvc.stage` = '{stage}' and attributes.status = 'RUNNING'")
    host, closed = socket.gethostname(), []
    client = mlflow.MlflowClient()
    for r in runs:
        pid = r.data.tags.get("pid", "")
        if r.data.tags.get("host") == host and pid.isdigit() and not _alive(int(pid)):
            client.set_terminated(r.info.run_id, status="KILLED")
            closed.append(r.info.run_id)
            parent = r.data.tags.get("mlflow.parentRunId")
            if parent and client.get_run(parent).info.status == "RUNNING":
                client.set_terminated(parent, status="KILLED")
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
