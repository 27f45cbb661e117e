"""Lifting benchmarks. Numbers go to reports/benchmarks/lifting.md.

    python benchmarks/lifting.py loso  [--npz ../shared/data/real-mocap/real_mocap_h36m17.npz] [--with-studio data/studio]
    python benchmarks/lifting.py semi  --mocap data/studio/mocap.h5 --cameras data/studio/cameras.json
    python benchmarks/lifting.py studio --mocap ... --cameras ... [--detections ...]

* loso: real optical mocap (HDM05 + CMU), leave one subject out; every clip is filmed by a
  Human3.6M-like virtual rig (4 cameras, 4.5 m, 1.5 m high, f = 1145 px, 1000x1000, H36M-size
  distortion); GT 2D input; --with-studio adds the studio's train subjects (own cameras) to every
  fold's training set (the footage lifter of ``p3d train-lifter``); --real-scales F.. trains on
  body-size copies of the real clips, --bone-copies N re-proportioned ones; --exclude S.. drops subjects entirely (inner validation). P1/P2 on the 13 reliable joints and on all 17, per held-out subject.
* semi: temporal model (GT 2D input) fully supervised vs. 1 labelled subject alone vs. 1
  labelled + the other train subjects unlabelled (reprojection + bone lengths, without and with
  the temporal GAN), over --seeds; --val S holds train subject S out instead of testing;
  --set key=value overrides temporal params (e.g. --set semi_warmup_epochs=10).
* studio: the three lifters on the default studio with GT and detected 2D.
Each run writes nothing into data/ or models/ (temporary directories).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pose3d.runtime import params as P
from pose3d.tasks.lifting.data import split_of
from pose3d.tasks.lifting.realmocap import BONE_SPREAD, mixed_dataset
from pose3d.tasks.lifting.pipeline import run_lift, score

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO.parent / "shared" / "data" / "real-mocap" / "real_mocap_h36m17.npz"


def _base():
    # one thread: on the shared 2-core machine spinning OpenMP threads cost more than they give
    return P.Base(mlflow=False, cpu_precision="fp32", num_threads=1)


def loso(args) -> str:
    d = np.load(args.npz, allow_pickle=False)
    reliable = d["reliable_joint_mask"].astype(bool)
    subjects = sorted(np.unique(d["subject"]).tolist())
    if args.subjects:
        unknown = sorted(set(args.subjects) - set(subjects))
        if unknown:
            raise SystemExit(f"--subjects: {unknown} not in {args.npz} (subjects: {subjects})")
        subjects = [s for s in subjects if s in args.subjects]
    # --exclude: inner validation; these subjects are neither trained on nor held out
    bad = sorted(set(args.exclude or []) - set(np.unique(d["subject"]).tolist()))
    if bad:
        raise SystemExit(f"--exclude: {bad} not in {args.npz}")
    subjects = [s for s in subjects if s not in (args.exclude or [])]
    p1_rel = []
    lines = ["| held-out subject | model | frames | P1 all-17 (mm) | P2 all-17 (mm) | P1 13 reliable (mm) | P2 13 reliable (mm) | time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for model in args.models:
        # the model's params.yaml section on GT 2D (real mocap has no images); --epochs overrides
        p = _override(dataclasses.replace(P.load(model, args.params), input_2d="gt"), args.set)
        p = dataclasses.replace(p, epochs=args.epochs or p.epochs, train_stride=args.stride)
        for held in subjects:
            with tempfile.TemporaryDirectory() as tmp:
                studio = args.with_studio
                mocap, cams = mixed_dataset(tmp, args.npz, [held], studio and studio / "mocap.h5",
                                            studio and studio / "cameras.json", args.real_scales,
                                            args.bone_copies, args.seeds[0], args.bone_spread)
                train = [s for s in split_of(mocap, "train") if s not in (args.exclude or [])]
                t0 = time.time()
                # train: the other real subjects (+ the studio's train subjects); test: the held-out one
                out = run_lift(model, p, dataclasses.replace(_base(), seed=args.seeds[0]), mocap=mocap,
                               cameras=cams, progress=False, train_subjects=train, test_subjects=[held])
                res, test = out.metrics, out.test
                rel = score(test, out.pose, joint_mask=reliable)
                p1_rel.append(rel["mpjpe_mm"])
                lines.append(f"| {held} | {model} | {test.num_frames} | {res['mpjpe_mm']:.1f} | "
                             f"{res['pa_mpjpe_mm']:.1f} | {rel['mpjpe_mm']:.1f} | {rel['pa_mpjpe_mm']:.1f} | "
                             f"{time.time() - t0:.0f} |")
                print(lines[-1], flush=True)
                worst = sorted(res["per_action_mpjpe_mm"].items(), key=lambda kv: -kv[1])[:4]
                print(f"worst clips {held} (P1 all 17): " + ", ".join(f"{a} {v:.0f}" for a, v in worst), flush=True)
                # P1 (all 17, no flip) of a fixed 1/16 of the held-out sequences after each epoch
                curve = {int(r["epoch"]): r["val_mpjpe_mm"] for r in out.history}
                print(f"curve {held}: " + " ".join(f"{e}:{curve[e]:.1f}" for e in sorted(curve)
                                                    if e % 5 == 0 or e == 1), flush=True)
        lines.append(f"{model}: mean P1 13 reliable over {len(p1_rel)} held-out subjects "
                     f"{np.mean(p1_rel):.1f} mm")
        p1_rel = []
    return "\n".join(lines)


def _override(p, assignments: list[str]):
    """``key=value`` strings (values parsed as YAML) applied to a params section."""
    import yaml
    kv = {}
    for a in assignments or []:
        k, _, v = a.partition("=")
        if not hasattr(p, k):
            raise SystemExit(f"--set {a}: {type(p).__name__} has no field {k!r}")
        v = yaml.safe_load(v)
        kv[k] = tuple(v) if isinstance(v, list) else v
    return dataclasses.replace(p, **kv)


SEMI_ROWS = {  # name -> description (labelled/unlabelled subjects: see semi())
    "full": "fully supervised",
    "alone": "1 labelled only",
    "reproj": "1 labelled + unlabelled (back-projection losses)",
    "gan": "1 labelled + unlabelled (back-projection losses + GAN)",
}


def semi(args) -> str:
    """Rows of :data:`SEMI_ROWS` x seeds. ``--val S``: hold train subject S out as the test
    subject (settings are chosen there; the test subjects are not read)."""
    mocap, cams = args.mocap, args.cameras
    train = split_of(mocap, "train")
    test = split_of(mocap, "test")
    if args.val:
        if args.val not in train:
            raise SystemExit(f"--val {args.val}: not a train subject ({train})")
        train, test = [s for s in train if s != args.val], [args.val]
    one, rest = train[0], tuple(train[1:])
    base_p = _override(dataclasses.replace(P.load("temporal", args.params), input_2d="gt"), args.set)
    if args.epochs:
        base_p = dataclasses.replace(base_p, epochs=args.epochs)
    settings = {"full": ((), ()), "alone": ((one,), ()), "reproj": ((one,), rest), "gan": ((one,), rest)}
    lines, results = [], {}
    for name in args.rows:
        lab, unl = settings[name]
        p = dataclasses.replace(base_p, labeled_subjects=lab, unlabeled_subjects=unl)
        if name in ("reproj", "gan"):  # the same settings without and with the critic
            p = dataclasses.replace(p, adv_weight=args.adv_weight if name == "gan" else 0.0)
        for seed in args.seeds:
            t0 = time.process_time()
            res = run_lift("temporal", p, dataclasses.replace(_base(), seed=seed), mocap=mocap,
                           cameras=cams, progress=False, train_subjects=train,
                           test_subjects=test).metrics
            results.setdefault(name, []).append(res)
            print(f"{name} seed {seed}: P1 {res['mpjpe_mm']:.1f} P2 {res['pa_mpjpe_mm']:.1f} "
                  f"N-MPJPE {res['n_mpjpe_mm']:.1f} "
                  f"MPJVE {res['mpjve_mm']:.2f} root {res['root_mm']:.0f} mm "
                  f"({time.process_time() - t0:.0f} CPU s)", flush=True)
    ms = lambda name, k: (np.mean([r[k] for r in results[name]]),  # noqa: E731
                          np.std([r[k] for r in results[name]], ddof=1) if len(results[name]) > 1 else 0.0)
    lines = [f"test subjects: {', '.join(test)}; seeds {', '.join(map(str, args.seeds))}; "
             f"overrides: {' '.join(args.set or []) or '-'}; gan row: adv_weight {args.adv_weight}",
             "| setting | labelled | unlabelled | P1 (mm) | P2 (mm) | N-MPJPE (mm) | MPJVE (mm) | root (mm) | P1 per seed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in results:
        lab, unl = settings[name]
        cells = [f"{ms(name, k)[0]:.{d}f} ± {ms(name, k)[1]:.{d}f}"
                 for k, d in (("mpjpe_mm", 1), ("pa_mpjpe_mm", 1), ("n_mpjpe_mm", 1), ("mpjve_mm", 2),
                             ("root_mm", 0))]
        lines.append(f"| {SEMI_ROWS[name]} | {', '.join(lab) or 'all train'} | {', '.join(unl) or '-'} | "
                     + " | ".join(cells) + " | " + ", ".join(f"{r['mpjpe_mm']:.1f}" for r in results[name]) + " |")
    return "\n".join(lines)


def studio(args) -> str:
    rows = ["| model | 2D input | P1 (mm) | P2 (mm) | MPJVE (mm) | time (s) |", "|---|---|---|---|---|---|"]
    for model in args.models:
        for inp in (["gt", "detections"] if args.detections else ["gt"]):
            p = dataclasses.replace(P.load(model, args.params), input_2d=inp)
            t0 = time.time()
            res = run_lift(model, p, _base(), mocap=args.mocap, cameras=args.cameras,
                           detections=args.detections, progress=False).metrics
            rows.append(f"| {model} | {inp} | {res['mpjpe_mm']:.1f} | {res['pa_mpjpe_mm']:.1f} | "
                        f"{res['mpjve_mm']:.2f} | {time.time() - t0:.0f} |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["loso", "semi", "studio"])
    ap.add_argument("--npz", type=Path, default=NPZ)
    ap.add_argument("--mocap", type=Path, default=REPO / "data/studio/mocap.h5")
    ap.add_argument("--cameras", type=Path, default=REPO / "data/studio/cameras.json")
    ap.add_argument("--detections", type=Path, default=None)
    ap.add_argument("--models", nargs="+", default=["martinez", "temporal"])
    ap.add_argument("--epochs", type=int, default=None, help="override every model's params.yaml epochs")
    ap.add_argument("--stride", type=int, default=1, help="train_stride for loso")
    ap.add_argument("--subjects", nargs="+", default=None, help="loso: hold out only these subjects")
    ap.add_argument("--val", default=None, help="semi: hold out this train subject as the test subject")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="semi: base seeds; loso: the first is the seed")
    ap.add_argument("--rows", nargs="+", choices=list(SEMI_ROWS), default=list(SEMI_ROWS),
                    help="semi: which settings")
    ap.add_argument("--adv-weight", type=float, default=0.05, help="semi: the critic's weight in the gan row")
    ap.add_argument("--set", nargs="*", default=None,
                    help="semi, loso: the model's params key=value (YAML values)")
    ap.add_argument("--with-studio", type=Path, default=None, metavar="DIR",
                    help="loso: also train on DIR/mocap.h5's train subjects (DIR/cameras.json), e.g. data/studio")
    ap.add_argument("--exclude", nargs="+", default=None,
                    help="loso: leave these real subjects out of training and testing (inner validation)")
    ap.add_argument("--real-scales", nargs="+", type=float, default=[1.0], metavar="F",
                    help="loso: each training real clip once per body-size factor (e.g. 0.9 1 1.1)")
    ap.add_argument("--bone-spread", type=float, default=0.1, metavar="S",
                    help="loso: --bone-copies' bone factors g * u with g, u ~ U(1 - S, 1 + S) (default 0.1, "
                         f"session 10's; p3d train-lifter's is {BONE_SPREAD})")
    ap.add_argument("--bone-copies", type=int, default=0, metavar="N",
                    help="loso: N re-proportioned copies of each training real clip (bone lengths x "
                         "U(1 - S, 1 + S)^2, S = --bone-spread)")
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml",
                    help="params.yaml whose model sections every benchmark starts from (epochs included)")
    args = ap.parse_args(argv)
    table = {"loso": loso, "semi": semi, "studio": studio}[args.what](args)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
