"""End to end: `dvc repro` of the whole DAG on tiny params in a copy of the repo, then a
`dvc exp run -S repnet...` that must re-execute exactly lift@repnet and evaluate.

This is the slowest test of the suite (a few minutes on 2 cores): it renders a tiny studio,
trains every model for an epoch or two and checks the contracts between stages, not accuracy.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "base": {"cpu_precision": "fp32", "mlflow_experiment": "pose3d-e2e"},
    "studio": {"subjects": {"S1": "train", "S5": "train", "S9": "test"},
               "actions": ["Walking", "Sitting"], "seconds": 1.0, "fps": 10.0,
               "width": 192, "height": 192, "num_cameras": 3, "workers": 1},
    "extract": {"crop_size": 64},
    "pose2d": {"epochs": 1, "max_train_crops": 48, "val_max_crops": 16, "lr_steps": [1]},
    "martinez": {"epochs": 1, "hidden": 64, "batch_size": 64},
    # reproj_weight pinned: the test's `-S repnet.reproj_weight=2.0` must change it even after
    # a user ran the README's own `dvc exp run -S repnet.reproj_weight=2.0` in this workspace
    "repnet": {"epochs": 2, "hidden": 64, "critic_hidden": 16, "critic_kcs_hidden": 32,
               "batch_size": 64, "reproj_weight": 1.0},
    "temporal": {"epochs": 1, "channels": 32, "traj_channels": 16, "filter_widths": [3, 3],
                 "batch_size": 64},
    # noise-free ground-truth 2D: calibrated triangulation must be exact
    "triangulate": {"input": "gt", "noise_px": 0.0, "prob_samples": 16, "prob_iters": 4,
                    "prob_score_frames": 4},
    "hg3d": {"epochs_2d": 1, "epochs_3d": 1, "epochs_joint": 1, "samples_per_epoch": 32,
             "batch_size": 16, "input_size": 64, "depth_channels": 16},
    "evaluate": {"gif_frames": 4},
}


def _merge(dst: dict, src: dict) -> dict:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict) and k != "subjects":
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def _run(cmd: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def clean_env() -> dict:
    """The environment for a tiny repo's dvc/MLflow subprocesses (this venv first, no outer run)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update({"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"})
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(k, None)
    return env


#: where a checkout's not-yet-committed code lives (copied into the tiny repo with the tracked files)
SOURCE_DIRS = ("pose3d/", "stages/", "tests/", "benchmarks/", ".dvc/plots/")


def make_tiny_repo(dst: Path, env: dict, *overrides: dict) -> None:
    """A git repo at ``dst`` with this checkout's tracked files and its new (untracked, not
    ignored) source files (no data/, reports/ or dvc.lock; nothing a README command wrote, such as
    footage output or a calibrated cameras.json) and params.yaml merged with TINY and
    ``overrides``; committed. Used by this test and by the benchmarks that need a tiny DAG
    (kill_resume, scale_out)."""
    def ls(*flags):
        return subprocess.run(["git", "ls-files", *flags], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.split()
    files = ls("-c") + [f for f in ls("-o", "--exclude-standard") if f.startswith(SOURCE_DIRS)]
    for f in files:
        src = REPO / f
        if not src.is_file() or f.startswith(("reports/", "data/")) or f == "dvc.lock":
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / f)
    params = _merge(yaml.safe_load((dst / "params.yaml").read_text()), TINY)
    for o in overrides:
        params = _merge(params, o)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "e2e@pose3d.invalid"],
                ["git", "config", "user.name", "pose3d e2e"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        _run(cmd, dst, env)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("git not available")
    dst = tmp_path_factory.mktemp("repo")
    env = clean_env()
    make_tiny_repo(dst, env)
    repro = _run([sys.executable, "-m", "dvc", "repro"], dst, env, timeout=1200)
    return dst, env, repro


def _stage_outputs(dvc_yaml: dict) -> list[str]:
    """Every declared out/metric/plot path, foreach items expanded."""
    paths = []
    for name, st in dvc_yaml["stages"].items():
        items = st.get("foreach", [None])
        body = st.get("do", st)
        for item in items:
            for key in ("outs", "metrics", "plots"):
                for o in body.get(key, []):
                    p = next(iter(o)) if isinstance(o, dict) else o
                    paths.append(p.replace("${item}", str(item)))
    return paths


def _mlflow_runs(root: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["pose3d-e2e"], output_format="list")


def test_every_declared_output_exists(tiny_repo):
    root, _, _ = tiny_repo
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    missing = [p for p in _stage_outputs(dvc_yaml) if not (root / p).exists()]
    assert not missing, f"declared outputs not written: {missing}"


def test_metrics_are_finite_and_triangulation_exact(tiny_repo):
    root, _, _ = tiny_repo
    methods = {"martinez", "repnet", "temporal", "hg3d", "triangulate_algebraic",
               "triangulate_ransac", "triangulate_probabilistic"}
    metrics = {m: json.loads((root / "reports" / "metrics" / "methods" / f"{m}.json").read_text()) for m in methods}
    for m in methods:
        assert math.isfinite(metrics[m]["pa_mpjpe_mm"]), (m, metrics[m])
    # noise-free GT 2D through the calibrated cameras: sub-millimetre
    assert metrics["triangulate_algebraic"]["mpjpe_mm"] < 1.0
    assert metrics["triangulate_ransac"]["mpjpe_mm"] < 1.0
    assert (root / "reports" / "report.md").read_text().count("|") > 20


def test_each_number_in_one_metrics_file(tiny_repo):
    """`dvc metrics show`: a method's 3D accuracy is only in its headline file (written by
    evaluate), each file is a handful of flat numbers, and no key holds per-joint/per-action details."""
    root, env, _ = tiny_repo
    shown = json.loads(_run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], root, env).stdout)
    files = {f: v["data"] for f, v in shown[""]["data"].items()}
    methods = [f for f in files if f.startswith("reports/metrics/methods/")]
    assert len(methods) == 7
    headline = ["mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "mpjve_mm", "pck3d_150mm", "auc", "valid_fraction"]
    assert all(list(files[f]) == headline for f in methods)
    for f, numbers in files.items():
        assert all(isinstance(v, (int, float)) for v in numbers.values()), f  # flat: no nesting, no lists
        assert len(numbers) <= 7, (f, list(numbers))
        if f not in methods:
            assert not {"mpjpe_mm", "pa_mpjpe_mm"} & set(numbers), f  # stored once, by evaluate
    assert not any(k for n in files.values() for k in n if k.startswith("per_") or k.endswith("_actionwise"))


def _stage_runs(runs):
    return [r for r in runs if "dvc.stage" in r.data.tags]


def test_one_mlflow_run_per_executed_stage(tiny_repo):
    """One run per executed stage, all nested under one pipeline run; every trained model is
    logged with it; triangulation and hg3d have runs (and metrics) of their own; artifact
    locations are relative to the repo."""
    import mlflow

    root, _, _ = tiny_repo
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    stages = set(lock["stages"])
    runs = _mlflow_runs(root)
    stage_runs = _stage_runs(runs)
    tagged = [r.data.tags.get("dvc.stage") for r in stage_runs]
    assert sorted(tagged) == sorted(stages), (sorted(tagged), sorted(stages))
    assert all(r.info.status == "FINISHED" for r in runs)
    (parent,) = [r for r in runs if "dvc.stage" not in r.data.tags]
    assert {r.data.tags["mlflow.parentRunId"] for r in stage_runs} == {parent.info.run_id}
    assert all(r.info.artifact_uri.startswith("pose3d:mlartifacts/") for r in runs)
    by_stage = {r.data.tags["dvc.stage"]: r for r in stage_runs}
    for stage in ("train_hg3d", "triangulate@algebraic", "triangulate@ransac", "triangulate@probabilistic"):
        assert "mpjpe_mm" in by_stage[stage].data.metrics, stage
    for stage in ("train_2d", "lift@martinez", "lift@repnet", "lift@temporal", "train_hg3d"):
        models = mlflow.search_logged_models(experiment_ids=[parent.info.experiment_id], output_format="list",
                                             filter_string=f"source_run_id = '{by_stage[stage].info.run_id}'")
        assert [m.name for m in models] == ["model"], stage
    inputs = by_stage["lift@martinez"].inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["studio"]


def test_second_repro_is_a_noop(tiny_repo):
    root, env, _ = tiny_repo
    out = _run([sys.executable, "-m", "dvc", "repro"], root, env).stdout
    assert "Running stage" not in out, out


def test_remote_round_trip_recomputes_nothing(tiny_repo, tmp_path):
    """The DVC-remote workflow of the README: commit, `dvc push` to a (local-directory) remote,
    a fresh `git clone` + `dvc pull` has every cached output, and `dvc repro` there recomputes
    nothing but `prepare`, whose uncached videos folder (a user's own footage, by design never
    copied into the cache) no remote holds. Training checkpoints are resume state, not outputs:
    a missing one must not re-run training."""
    root, env, _ = tiny_repo
    remote, clone = tmp_path / "remote", tmp_path / "clone"
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(remote)], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "results"], root, env)
    _run([sys.executable, "-m", "dvc", "push"], root, env)
    _run(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    _run([sys.executable, "-m", "dvc", "pull"], clone, env)
    out = _run([sys.executable, "-m", "dvc", "repro"], clone, env).stdout
    assert re.findall(r"Running stage '([^']+)'", out) == ["prepare"], out
    status = _run([sys.executable, "-m", "dvc", "status"], clone, env).stdout
    assert "up to date" in status, status
    for f in ("data/detections_2d.parquet", "models/pose2d/model.pt", "data/predictions/martinez.parquet"):
        assert (clone / f).read_bytes() == (root / f).read_bytes(), f


def test_exp_run_reruns_only_repnet_and_evaluate(tiny_repo):
    root, env, _ = tiny_repo
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "baseline", "--allow-empty"], root, env)
    before = len(_mlflow_runs(root))
    # a value other than the workspace's: the README's own `-S repnet.reproj_weight=2.0` may have
    # been applied to the params.yaml this repo was copied from
    value = float(yaml.safe_load((root / "params.yaml").read_text())["repnet"]["reproj_weight"]) + 1.0
    out = _run([sys.executable, "-m", "dvc", "exp", "run", "-S", f"repnet.reproj_weight={value}"],
               root, env, timeout=600).stdout
    ran = sorted(line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage"))
    assert ran == ["evaluate", "lift@repnet"], out
    runs = _mlflow_runs(root)
    assert len(runs) == before + 3  # the two stages and their pipeline run
    new = runs[: len(runs) - before]
    stage_runs = {r.data.tags["dvc.stage"]: r for r in _stage_runs(new)}
    assert set(stage_runs) == {"lift@repnet", "evaluate"}
    assert stage_runs["lift@repnet"].data.params["repnet.reproj_weight"] == str(value)
    (parent,) = [r for r in new if "dvc.stage" not in r.data.tags]
    assert {r.data.tags["mlflow.parentRunId"] for r in stage_runs.values()} == {parent.info.run_id}
    assert parent.data.tags["dvc.exp_name"] == stage_runs["evaluate"].data.tags["dvc.exp_name"] != "workspace"


def _stage_cmd(root: Path, stage: str, item: str | None = None) -> str:
    """A stage's cmd with DVC's ${...} interpolation done from params.yaml."""
    import re

    st = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]
    cmd = (st["do"] if item else st)["cmd"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    values = {"item": item}

    def lookup(m):
        key = m.group(1)
        if key in values:
            return str(values[key])
        node = params
        for part in key.split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", lookup, cmd)


def test_failing_stage_leaves_previous_outputs_intact(tiny_repo):
    root, env, _ = tiny_repo
    before = (root / "reports" / "metrics" / "methods" / "martinez.json").read_bytes()
    cmd = _stage_cmd(root, "evaluate").replace("data/predictions/repnet.parquet",
                                                "data/predictions/missing.parquet")
    p = subprocess.run(cmd, shell=True, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    assert "missing.parquet" in p.stderr + p.stdout
    assert (root / "reports" / "metrics" / "methods" / "martinez.json").read_bytes() == before
    assert not list((root / "reports").rglob(".*.tmp"))


def test_killed_training_resumes_cleanly(tiny_repo):
    """Kill lift@martinez mid-training (SIGTERM to dvc and the stage), then `dvc repro`:
    the killed attempt's MLflow run is FAILED, no temp files are left, and the stage
    resumes from its last checkpoint instead of starting over."""
    import signal
    import time

    root, env, _ = tiny_repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["martinez"]["epochs"] = 400
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    curves = root / "reports" / "plots" / "curves_lift_martinez.csv"
    p = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "lift@martinez"], cwd=root, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if curves.exists() and len(curves.read_text().splitlines()) >= 4:
            break
        if p.poll() is not None:
            pytest.fail("training finished before it could be killed:\n" + p.stdout.read())
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=120)
    killed_log = p.stdout.read()
    assert p.returncode != 0, killed_log[-3000:]
    killed_at = len(curves.read_text().splitlines()) - 1
    assert killed_at < 400, killed_log[-3000:]
    runs = [r for r in _mlflow_runs(root) if r.data.tags.get("dvc.stage") == "lift@martinez"]
    runs.sort(key=lambda r: r.info.start_time, reverse=True)
    assert runs[0].info.status == "FAILED", (runs[0].info, killed_log[-3000:])
    leftovers = [q for d in ("data", "models", "reports") for q in (root / d).rglob(".*.tmp")]
    assert not leftovers, leftovers
    out = _run([sys.executable, "-m", "dvc", "repro", "lift@martinez"], root, env, timeout=600)
    log = out.stdout + out.stderr
    assert "resuming after epoch" in log, log[-3000:]
    rows = curves.read_text().splitlines()
    assert len(rows) == 401 and rows[1].startswith("1,") and rows[-1].startswith("400,"), rows[:3]
    from pose3d.data.io import read_table

    table, meta = read_table(root / "data" / "predictions" / "martinez.parquet")
    assert table.num_rows > 0 and meta["method"] == "martinez"


def test_free_text_params_are_never_pasted_into_the_shell(tiny_repo):
    """DVC runs ``cmd`` in a shell: a params value with shell syntax must stay a value."""
    root, env, _ = tiny_repo
    for name, st in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].items():
        cmd = (st.get("do") or st)["cmd"]
        assert "${prepare." not in cmd and "${studio." not in cmd, (name, cmd)
    params = (root / "params.yaml").read_text()
    p = yaml.safe_load(params)
    p["prepare"]["source"] = "$(touch PWNED); `touch PWNED2`"
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    try:
        _run([sys.executable, "-m", "dvc", "repro", "prepare"], root, env)
        assert not (root / "PWNED").exists() and not (root / "PWNED2").exists()
    finally:
        (root / "params.yaml").write_text(params)
