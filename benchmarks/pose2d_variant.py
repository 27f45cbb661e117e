"""Train one variant of train_2d for a learning curve: the stage script on a copy of params.yaml.

    python benchmarks/pose2d_variant.py OUT_DIR --crops data/crops --threads 1 \
        pose2d.epochs=16 "pose2d.lr_steps=[12, 15]" pose2d.lr_schedule=step

Writes OUT_DIR/params.yaml (params.yaml with the overrides, MLflow off, base.num_threads), then
runs ``stages/train_2d.py`` with every output under OUT_DIR (model.pt, config.json, checkpoint,
metrics.json, curves.csv: one row per epoch with the validation numbers). A killed run resumes
from its checkpoint when started again with the same arguments. Values are parsed as YAML.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("overrides", nargs="*", help="section.key=value")
    ap.add_argument("--crops", type=Path, default=REPO / "data/crops", help="folder with crops.h5 + crops.parquet")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    a = ap.parse_intermixed_args(argv)
    p = yaml.safe_load(a.params.read_text())
    p["base"].update(mlflow=False, num_threads=a.threads)
    for item in a.overrides:
        key, sep, value = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or not name or section not in p:
            ap.error(f"override {item!r}: expected section.key=value with a section of {a.params}")
        p[section][name] = yaml.safe_load(value)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    cmd = [sys.executable, str(REPO / "stages/train_2d.py"), "--crops-h5", str(a.crops / "crops.h5"),
           "--crops-index", str(a.crops / "crops.parquet"), "--model-dir", str(a.out),
           "--checkpoint", str(a.out / "checkpoint.pt"), "--metrics", str(a.out / "metrics.json"),
           "--curves", str(a.out / "curves.csv"), "--params", str(a.out / "params.yaml")]
    return subprocess.call(cmd, cwd=REPO)


if __name__ == "__main__":
    raise SystemExit(main())
