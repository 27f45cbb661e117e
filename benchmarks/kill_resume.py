"""kill -9 of every training stage at a random epoch, then `dvc repro` again: does it resume,
finish with the uninterrupted run's metrics, and leave no debris and no RUNNING MLflow run?

    python benchmarks/kill_resume.py --out reports/benchmarks/kill_resume.md [--kills 3] [--seed 0]

Works in a temporary copy of the repository with the end-to-end test's tiny params (a small
studio, a few epochs per model; tests/test_pipeline.py's TINY, with more epochs so that a kill
lands mid-training). One uninterrupted `dvc repro` gives the reference metrics; then, per
training stage and kill: delete its checkpoint, start `dvc repro -f -s <stage>`, SIGKILL the
whole process group after a random number of finished epochs, run `dvc repro -s <stage>`, and
compare. Takes ~15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_pipeline import clean_env, make_tiny_repo  # noqa: E402  (the end-to-end test's tiny DAG)

#: stage -> (checkpoint, curves CSV, metrics JSON it decides; a lifter's is scored by evaluate)
STAGES = {
    "train_2d": ("models/pose2d/checkpoint.pt", "reports/plots/curves_train_2d.csv", "reports/metrics/train_2d.json"),
    "lift@martinez": ("models/martinez/checkpoint.pt", "reports/plots/curves_lift_martinez.csv",
                      "reports/metrics/methods/martinez.json"),
    "lift@repnet": ("models/repnet/checkpoint.pt", "reports/plots/curves_lift_repnet.csv",
                    "reports/metrics/methods/repnet.json"),
    "lift@temporal": ("models/temporal/checkpoint.pt", "reports/plots/curves_lift_temporal.csv",
                      "reports/metrics/methods/temporal.json"),
    "train_hg3d": ("models/hg3d/checkpoint.pt", "reports/plots/curves_train_hg3d.csv",
                   "reports/metrics/train_hg3d.json"),
}
MORE_EPOCHS = {"pose2d": {"epochs": 4, "lr_steps": [3]}, "martinez": {"epochs": 150}, "repnet": {"epochs": 40},
               "temporal": {"epochs": 60}, "hg3d": {"epochs_2d": 2, "epochs_3d": 2, "epochs_joint": 2}}


def _run(cmd, cwd, env, timeout=1800) -> str:
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout + p.stderr


def _rows(path: Path) -> int:
    return max(len(path.read_text().splitlines()) - 1, 0) if path.exists() else 0


def _running_runs(root: Path, stage: str) -> int:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["pose3d-e2e"], output_format="list",
                              filter_string=f"tags.`dvc.stage` = '{stage}' and attributes.status = 'RUNNING'")
    return len(runs)


def _debris(root: Path) -> list[str]:
    """Temporary files (``.*.tmp``) and directories (``.<name>.*``) of atomic writes."""
    return [str(q.relative_to(root)) for d in ("data", "models", "reports") for q in (root / d).rglob(".*")
            if q.name.endswith(".tmp") or q.is_dir()]


def kill_once(root: Path, env: dict, stage: str, epochs: int, rng: random.Random) -> dict:
    ckpt, curves, _ = STAGES[stage]
    (root / ckpt).unlink(missing_ok=True)
    (root / curves).unlink(missing_ok=True)
    at = rng.randint(1, max(epochs - 1, 1))
    p = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-f", "-s", stage], cwd=root, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and p.poll() is None and _rows(root / curves) < at:
        time.sleep(0.05)
    # the curves row of an epoch is written just before its checkpoint: the kill lands in the
    # checkpoint write or early in the next epoch
    finished_first = p.poll() is not None
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done = _rows(root / curves)
    had_checkpoint = (root / ckpt).exists()  # killed before the first checkpoint: it must start over
    debris = _debris(root)
    running = _running_runs(root, stage)
    log = _run([sys.executable, "-m", "dvc", "repro", "-s", stage], root, env)
    return {"killed_after_epochs": done, "finished_before_kill": finished_first, "debris_after_kill": len(debris),
            "had_checkpoint": had_checkpoint,
            "running_after_kill": running, "resumed": "resuming after epoch" in log,
            "debris_after_resume": _debris(root), "running_after_resume": _running_runs(root, stage)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "reports/benchmarks/kill_resume.md")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", nargs="+", default=list(STAGES))
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    env = clean_env()
    rows = ["| stage | kill | killed after epoch | debris / RUNNING runs after the kill | resumed | "
            "metrics = uninterrupted | debris / RUNNING runs after the resume |", "|---|---|---|---|---|---|---|"]
    ok = total = 0
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        make_tiny_repo(root, env, MORE_EPOCHS)
        t0 = time.time()
        _run([sys.executable, "-m", "dvc", "repro"], root, env)
        print(f"reference dvc repro: {time.time() - t0:.0f} s", flush=True)
        for stage in a.stages:
            _, curves, metrics = STAGES[stage]
            reference = json.loads((root / metrics).read_text())
            epochs = _rows(root / curves)
            for k in range(1, a.kills + 1):
                r = kill_once(root, env, stage, epochs, rng)
                same = json.loads((root / metrics).read_text()) == reference
                good = (r["resumed"] == r["had_checkpoint"] and same and not r["debris_after_resume"]
                        and not r["running_after_resume"] and not r["finished_before_kill"])
                resumed = ("yes" if r["resumed"] else "NO") if r["had_checkpoint"] else \
                    ("no checkpoint yet: started over" if not r["resumed"] else "NO (resumed without a checkpoint?)")
                ok += good
                total += 1
                rows.append(f"| {stage} | {k} | {r['killed_after_epochs']} of {epochs} | {r['debris_after_kill']} / "
                            f"{r['running_after_kill']} | {resumed} | {'yes' if same else 'NO'} | "
                            f"{len(r['debris_after_resume'])} / {r['running_after_resume']} |")
                print(rows[-1], flush=True)
    head = [f"# kill -9 of the training stages: {ok} of {total} kills resumed cleanly", "",
            f"    python benchmarks/kill_resume.py --kills {a.kills} --seed {a.seed}", "",
            "Tiny DAG (tests/test_pipeline.py's params, more epochs). A kill passes when the next "
            "`dvc repro -s <stage>` resumes from the checkpoint (or starts over when the kill came before "
            "the first one), ends with metrics equal to the "
            "uninterrupted run's, and leaves no temporary file and no RUNNING MLflow run.", ""]
    a.out.write_text("\n".join(head + rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
