"""Beyond one machine, exercised once on the end-to-end test's tiny DAG: an MLflow tracking
server, the DVC experiment queue, DDP through `dvc exp run -S base.nproc=2`, and a DVC remote.

    python benchmarks/scale_out.py --out reports/benchmarks/scale_out.json

In a temporary copy of the repository with tests/test_pipeline.py's tiny params:

1. starts `mlflow server` on 127.0.0.1 (SQLite store, artifacts in the temporary folder) and
   points every command at it with MLFLOW_TRACKING_URI;
2. `dvc repro` (the baseline), committed;
3. queues two experiments (`dvc exp run --queue -S repnet.reproj_weight=...`) and runs them
   with `dvc queue start -j 2`; reads their metrics with `dvc exp show --json`;
4. `dvc exp run -S base.nproc=2` in the workspace, checkpoints deleted first (a finished one of
   the same params would be resumed, whatever nproc): every training stage re-launches itself
   under torchrun (2 gloo processes) and trains; its metrics against the baseline's;
5. `dvc push` to a local-directory remote, `git clone`, `dvc pull`, `dvc status` (nothing to run);
6. counts the MLflow runs the server holds, per stage, experiment and base.nproc.

Writes the timings, metrics and counts as JSON. Takes ~15-25 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_pipeline import clean_env, make_tiny_repo  # noqa: E402  (the end-to-end test's tiny DAG)

EXPERIMENT = "pose3d-e2e"
METRICS = {"train_2d": ("reports/metrics/train_2d.json", "mean_px_error"),
           "lift@martinez": ("reports/metrics/methods/martinez.json", "mpjpe_mm"),
           "lift@repnet": ("reports/metrics/methods/repnet.json", "mpjpe_mm"),
           "lift@temporal": ("reports/metrics/methods/temporal.json", "mpjpe_mm"),
           "train_hg3d": ("reports/metrics/methods/hg3d.json", "mpjpe_mm")}


def _run(cmd, cwd, env, timeout=3600) -> tuple[str, float]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout + p.stderr, round(time.perf_counter() - t0, 1)


def dvc(*args) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(folder: Path, env: dict) -> tuple[subprocess.Popen, str, float]:
    port = _free_port()
    folder.mkdir(parents=True)
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
           "--artifacts-destination", str(folder / "artifacts")]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=folder, env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                         stdout=open(folder / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - t0 < 180:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return p, url, round(time.perf_counter() - t0, 1)
        except OSError:
            time.sleep(0.5)
    p.kill()
    raise RuntimeError(f"mlflow server did not answer on {url}: {(folder / 'server.log').read_text()[-2000:]}")


CURVES = {"train_2d": "reports/plots/curves_train_2d.csv", "lift@martinez": "reports/plots/curves_lift_martinez.csv",
          "lift@repnet": "reports/plots/curves_lift_repnet.csv", "lift@temporal": "reports/plots/curves_lift_temporal.csv",
          "train_hg3d": "reports/plots/curves_train_hg3d.csv"}


def metrics_of(root: Path) -> dict:
    """Each training stage's test metric and its last epoch's train_loss (full precision)."""
    import csv

    out = {}
    for stage, (path, key) in METRICS.items():
        rows = list(csv.DictReader(open(root / CURVES[stage])))
        out[stage] = {key: json.loads((root / path).read_text())[key], "last_train_loss": float(rows[-1]["train_loss"])}
    return out


def wait_for_queue(root: Path, env: dict, timeout: float = 3600) -> str:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        out, _ = _run(dvc("queue", "status"), root, env)
        if not any(w in out for w in ("Queued", "Running")):
            return out
        time.sleep(5)
    raise RuntimeError("queue did not finish")


def exp_metrics(root: Path, env: dict, names: list[str]) -> dict:
    out, _ = _run(dvc("exp", "show", "--json"), root, env)
    found = {}

    def walk(node):
        if isinstance(node, dict):
            name = node.get("name")
            data = node.get("data") or {}
            if name in names and data.get("metrics"):
                m = data["metrics"]
                found[name] = {stage: m.get(path, {}).get("data", {}).get(key) for stage, (path, key) in METRICS.items()
                               if stage == "lift@repnet"}
                found[name]["params.repnet.reproj_weight"] = \
                    data["params"]["params.yaml"]["data"]["repnet"]["reproj_weight"]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(json.loads(out))
    return found


def server_runs(url: str) -> dict:
    import mlflow

    mlflow.set_tracking_uri(url)
    runs = mlflow.search_runs(experiment_names=[EXPERIMENT], output_format="list")
    stage_runs = [r for r in runs if "dvc.stage" in r.data.tags]
    return {"runs": len(runs), "pipeline_runs": len(runs) - len(stage_runs),
            "stage_runs_by_experiment": dict(Counter(r.data.tags.get("dvc.exp_name") for r in stage_runs)),
            "stage_runs_with_nproc_2": sorted(r.data.tags["dvc.stage"] for r in stage_runs
                                              if r.data.params.get("base.nproc") == "2"),
            "statuses": dict(Counter(r.info.status for r in runs))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "reports/benchmarks/scale_out.json")
    a = ap.parse_args(argv)
    env = clean_env()
    res: dict = {"seconds": {}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        root = tmp / "repo"
        root.mkdir()
        make_tiny_repo(root, env)
        server, url, res["seconds"]["mlflow_server_ready"] = start_mlflow_server(tmp / "server", env)
        env["MLFLOW_TRACKING_URI"] = url
        try:
            _, res["seconds"]["dvc_repro"] = _run(dvc("repro"), root, env)
            res["baseline"] = metrics_of(root)
            _run(["git", "add", "-A"], root, env)
            _run(["git", "commit", "-qm", "baseline results"], root, env)

            names = ["rw25", "rw35"]
            for name, w in zip(names, ("2.5", "3.5")):
                _run(dvc("exp", "run", "--queue", "-n", name, "-S", f"repnet.reproj_weight={w}"), root, env)
            t0 = time.perf_counter()
            _run(dvc("queue", "start", "-j", "2"), root, env)
            res["queue_status"] = wait_for_queue(root, env)
            res["seconds"]["queue_two_experiments_j2"] = round(time.perf_counter() - t0, 1)
            res["queued"] = exp_metrics(root, env, names)

            # a finished checkpoint of the same params is resumed whatever base.nproc (fingerprints
            # leave it out): delete them, so that the models are trained again, by 2 processes
            for ckpt in root.glob("models/*/checkpoint.pt"):
                ckpt.unlink()
            log, res["seconds"]["exp_run_nproc_2"] = _run(dvc("exp", "run", "-n", "ddp2", "-S", "base.nproc=2"), root, env)
            res["nproc_2"] = metrics_of(root)
            res["torchrun_launches"] = log.count("torch.distributed.run")
            _run(["git", "checkout", "--", "."], root, env)
            _run(dvc("checkout", "-f"), root, env)

            remote, clone = tmp / "remote", tmp / "clone"
            _run(dvc("remote", "add", "-d", "store", str(remote)), root, env)
            _run(["git", "commit", "-qam", "remote"], root, env)
            _, res["seconds"]["dvc_push"] = _run(dvc("push"), root, env)
            _run(["git", "clone", "-q", str(root), str(clone)], tmp, env)
            _, res["seconds"]["dvc_pull"] = _run(dvc("pull"), clone, env)
            out, res["seconds"]["dvc_repro_in_clone"] = _run(dvc("repro"), clone, env)
            res["clone_repro"] = {"stages_run": out.count("Running stage"),
                                  "up_to_date": "Data and pipelines are up to date" in out}
            res["mlflow_server"] = server_runs(url)
        finally:
            server.terminate()
            server.wait(30)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
