"""``p3d train-lifter``: the footage route's temporal lifter trained on the studio + real mocap.

    p3d train-lifter --mocap ../shared/data/real-mocap/real_mocap_h36m17.npz --studio data/studio \\
        --out models/footage_temporal
    p3d infer clip.mp4 --lifter models/footage_temporal --out out/

Trains :func:`~pose3d.tasks.lifting.realmocap.train_footage_lifter` (GT 2D of the studio's
train subjects through their cameras + every real-mocap subject through a Human3.6M-like
virtual rig, each real clip also as ``--bone-copies`` re-proportioned copies) with params.yaml's
``temporal`` section (``input_2d`` forced to gt) and scores it on the studio's test subjects. ``--out`` is written as a whole when training succeeds.
reports/benchmarks/footage.md and lifting.md (session 10) measure this recipe leave-one-subject-out
on the real mocap.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pose3d.data.io import DataError, atomic_dir
from pose3d.tasks.lifting.realmocap import BONE_COPIES, BONE_SPREAD

HELP = "train the footage lifter on the studio + real mocap (npz) -> a --lifter folder for p3d infer"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train-lifter", help=HELP, description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mocap", required=True, type=Path, metavar="NPZ",
                   help="real mocap npz (positions (N, 17, 3) mm Z up, clip_id, subject, activity, frame_in_clip, fps)")
    p.add_argument("--studio", type=Path, metavar="DIR",
                   help="studio folder with mocap.h5 + cameras.json (e.g. data/studio); without it the lifter "
                        "trains on the real mocap alone, its last subject held out for the score")
    p.add_argument("--out", required=True, type=Path, help="model folder to write (config.json + model.pt)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"),
                   help="params.yaml whose temporal section to use (default: ./params.yaml; the code's "
                        "defaults when absent)")
    p.add_argument("--epochs", type=int, help="override the section's epochs")
    p.add_argument("--stride", type=int, default=3, help="train on every N-th window (default 3)")
    p.add_argument("--real-scales", nargs="+", type=float, default=[1.0], metavar="F",
                   help="train on each real clip once per body-size factor (default: 1, no copies)")
    p.add_argument("--bone-copies", type=int, default=BONE_COPIES, metavar="N",
                   help="also train on N re-proportioned copies of each real clip (bone lengths x "
                        f"g x u, g and u ~ U(1 - S, 1 + S); default {BONE_COPIES}, 0 = the clips alone)")
    p.add_argument("--bone-spread", type=float, default=BONE_SPREAD, metavar="S",
                   help=f"the bone copies' size and proportion spread S (default {BONE_SPREAD})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from pose3d.runtime import params as P
    from pose3d.tasks.lifting.realmocap import train_footage_lifter

    section = P.load("temporal", args.params) if args.params.exists() else P.Temporal()
    section = dataclasses.replace(section, epochs=args.epochs or section.epochs, train_stride=args.stride)
    base = P.Base(seed=args.seed, device=args.device, num_threads=args.threads, mlflow=False)
    studio = args.studio
    if studio is not None and not (studio / "mocap.h5").exists():
        raise DataError(f"{studio}/mocap.h5: not found (--studio wants the folder of mocap.h5 + cameras.json)")
    with atomic_dir(args.out) as tmp:
        res = train_footage_lifter(tmp, npz=args.mocap, studio_mocap=studio and studio / "mocap.h5",
                                   studio_cameras=studio and studio / "cameras.json", params=section, base=base,
                                   real_scales=args.real_scales, bone_copies=args.bone_copies,
                                   bone_spread=args.bone_spread,
                                   progress=not getattr(args, "quiet", False))
    m = res.metrics
    print(f"{args.out}: temporal lifter; test subjects {', '.join(m['test_subjects'])} (GT 2D): "
          f"P1 {m['mpjpe_mm']:.1f} mm, P2 {m['pa_mpjpe_mm']:.1f} mm on {m['num_test_frames']} frames")
    return 0
