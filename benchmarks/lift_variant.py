"""Train one variant of a lifter and score it: settings are chosen on a held-out train subject.

    python benchmarks/lift_variant.py repnet OUT.json --split val --threads 1 \
        --detections data/detections_2d.parquet repnet.batch_size=256 repnet.lr=1e-3

``--split val`` trains on the train subjects but ``--holdout`` (default S8) and scores that one;
``--split test`` trains on every train subject and scores the test subjects (the DAG's split).
The model's section comes from params.yaml with the overrides (values parsed as YAML); MLflow
off, nothing is written into data/ or models/. OUT.json gets P1/P2/N-MPJPE/MPJVE, the wall and
CPU seconds (getrusage of this process) and the overrides. ``--seed`` overrides base.seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import yaml

from pose3d.runtime import params as P
from pose3d.tasks.lifting.data import split_of
from pose3d.tasks.lifting.pipeline import run_lift

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=["martinez", "repnet", "temporal"])
    ap.add_argument("out", type=Path)
    ap.add_argument("overrides", nargs="*", help="section.key=value (section = the model's)")
    ap.add_argument("--split", choices=["val", "test"], default="val")
    ap.add_argument("--holdout", default="S8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=None,
                    help="base.cpu_precision (default: params.yaml's)")
    ap.add_argument("--mocap", type=Path, default=REPO / "data/studio/mocap.h5")
    ap.add_argument("--cameras", type=Path, default=REPO / "data/studio/cameras.json")
    ap.add_argument("--detections", type=Path, default=REPO / "data/detections_2d.parquet")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    a = ap.parse_intermixed_args(argv)
    p = P.load(a.model, a.params)
    changes = {}
    for item in a.overrides:
        key, sep, value = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or section != a.model or name not in {f.name for f in dataclasses.fields(p)}:
            ap.error(f"override {item!r}: expected {a.model}.<key>=<value> with a key of that section")
        changes[name] = yaml.safe_load(value)
    p = P.from_dict(type(p), {**dataclasses.asdict(p), **changes}, a.model)
    base = P.Base(mlflow=False, num_threads=a.threads,
                  seed=a.seed if a.seed is not None else P.Base().seed,
                  cpu_precision=a.precision or P.load("base", a.params).cpu_precision)
    train = split_of(a.mocap, "train")
    if a.split == "val":
        if a.holdout not in train:
            ap.error(f"--holdout {a.holdout}: not a train subject of {a.mocap} ({train})")
        subjects = dict(train_subjects=[s for s in train if s != a.holdout], test_subjects=[a.holdout])
    else:
        subjects = dict(train_subjects=train, test_subjects=split_of(a.mocap, "test"))
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    res = run_lift(a.model, p, base, mocap=a.mocap, cameras=a.cameras, detections=a.detections,
                   progress=False, **subjects)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {k: res.metrics[k] for k in ("mpjpe_mm", "pa_mpjpe_mm", "n_mpjpe_mm", "mpjve_mm")}
    out.update(wall_s=round(time.time() - t0, 1),
               cpu_s=round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 1),
               split=a.split, seed=base.seed, cpu_precision=base.cpu_precision, overrides=changes, input_2d=p.input_2d,
               val_curve=[h.get("val_mpjpe_mm") for h in res.history])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "val_curve"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
