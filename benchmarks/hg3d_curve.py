"""hg3d learning curve and paired seed statistics from ``benchmarks/hg3d.py`` JSON outputs.

    python benchmarks/hg3d_curve.py curve RUN.json [...] [--epoch-log LOG:SAMPLES_PER_EPOCH] --png FIG.png
    python benchmarks/hg3d_curve.py paired RUN.json [...]

``curve``: one table row per (JSON, run, seed): training samples of the depth phases
((epochs_3d + epochs_joint) x samples_per_epoch), the final test metrics, and the CPU seconds read
from ``RUN.time`` beside the JSON when present (``/usr/bin/time -f "CPU user %U sys %S wall %e"``).
``--epoch-log`` adds the per-epoch evaluations (``eval_max`` evenly spaced test crops) that
``pose3d.runtime.train`` logs, to show where inside a run the curve flattens. ``--png`` draws
MPJPE, P-MPJPE and the depth branch's P-MPJPE (GT 2D) against samples.

``paired``: results pooled by (run, seed) over all JSONs: mean ± sd per run, then the paired
differences (c) - (b) (positive: the constraint helps) and the gap (c) - (a), each with its sd
and the seeds a paired t-test would need to resolve the mean difference (two-sided 5 %, 80 %
power: n ~ ((1.96 + 0.84) sd / mean)^2, at least 3), the smallest effect these seeds resolve
(2.8 sd / sqrt(n)) and the seeds a 2 mm effect would need.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np

METRICS = ("mpjpe_mm", "pa_mpjpe_mm", "err2d_px", "gt2d_mpjpe_mm", "gt2d_pa_mpjpe_mm")
_EPOCH = re.compile(r"train_hg3d epoch (\d+)/\d+: (.*)$")


def load(path: Path) -> dict:
    d = json.loads(path.read_text())
    p = d["params"]
    if p["samples_per_epoch"] == 0:
        raise SystemExit(f"{path}: samples_per_epoch 0 (whole pools) is not supported here; give the count")
    d["samples"] = (p["epochs_3d"] + p["epochs_joint"]) * p["samples_per_epoch"]
    t = path.with_suffix(".time")
    d["cpu_s"] = None
    if t.exists():
        m = re.search(r"user ([\d.]+) sys ([\d.]+)", t.read_text())
        if not m:
            raise SystemExit(f"{t}: no 'user X sys Y' line")
        d["cpu_s"] = float(m.group(1)) + float(m.group(2))
    return d


def epoch_log(spec: str) -> tuple[list[int], list[dict[str, float]]]:
    """``LOG:SAMPLES_PER_EPOCH`` -> (samples after each epoch, the logged test metrics)."""
    log, per = spec.rsplit(":", 1)
    xs, rows = [], []
    for line in Path(log).read_text().splitlines():
        m = _EPOCH.search(line)
        if m:
            kv = dict(item.split("=", 1) for item in m.group(2).split(", "))
            xs.append(int(m.group(1)) * int(per))
            rows.append({k[len("test_"):]: float(v) for k, v in kv.items() if k.startswith("test_")})
    if not rows:
        raise SystemExit(f"{log}: no 'train_hg3d epoch k/N: ...' lines")
    return xs, rows


def seeds_needed(effect: float, sd: float) -> float:
    """Seeds (pairs) for a paired two-sided 5 % test with 80 % power to resolve ``effect``."""
    if sd == 0:
        return 3.0
    if effect == 0:
        return math.inf
    return max(3.0, math.ceil(((1.96 + 0.84) * sd / abs(effect)) ** 2))


def _count(n: float) -> str:
    return ">1000" if n > 1000 else f"{n:.0f}"


def curve(a) -> int:
    runs = sorted((load(Path(f)) for f in a.json), key=lambda d: d["samples"])
    print("| samples | schedule (3d/joint x per epoch) | run | seed | MPJPE mm | P-MPJPE mm | 2D err px "
          "| GT-2D MPJPE mm | GT-2D P-MPJPE mm | CPU s | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    points = []
    for d in runs:
        p = d["params"]
        for key, res in d["results"].items():
            for m in res:
                cpu = f"{d['cpu_s']:.0f}" if d["cpu_s"] is not None else "-"
                print(f"| {d['samples']:,} | {p['epochs_3d']}/{p['epochs_joint']} x {p['samples_per_epoch']} | "
                      f"({key}) | {m['seed']} | {m['mpjpe_mm']:.1f} | {m['pa_mpjpe_mm']:.1f} | "
                      f"{m['err2d_px']:.2f} | {m['gt2d_mpjpe_mm']:.1f} | {m['gt2d_pa_mpjpe_mm']:.1f} | {cpu} | "
                      f"{m['seconds']:.0f} |")
                points.append((d["samples"], key, m))
    logs = [(spec, *epoch_log(spec)) for spec in a.epoch_log]
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        from pose3d.data.io import atomic_path

        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
        panels = (("mpjpe_mm", "MPJPE (mm)"), ("pa_mpjpe_mm", "P-MPJPE (mm)"),
                  ("gt2d_pa_mpjpe_mm", "depth branch: P-MPJPE with GT 2D (mm)"))
        for ax, (metric, title) in zip(axes, panels):
            for key in sorted({k for _, k, _ in points}):
                pts = sorted((x, m[metric]) for x, k, m in points if k == key)
                ax.plot([x / 1000 for x, _ in pts], [y for _, y in pts], "o-", label=f"({key}) final, "
                        f"{runs[0]['results'][key][0]['n_test']} test crops")
            for spec, xs, rows in logs:
                ax.plot([x / 1000 for x in xs], [r[metric] for r in rows], ".--", alpha=0.6,
                        label=f"per epoch of {Path(spec.rsplit(':', 1)[0]).name} (eval crops)")
            if metric == "mpjpe_mm" and a.target:
                ax.axhline(a.target, color="k", lw=0.8, ls=":", label=f"target {a.target:g} mm")
            ax.set(xscale="log", xlabel="training samples, 3D + joint phases (k = 1024)", title=title)
            ticks = sorted({x for x, _, _ in points})
            ax.set_xticks([x / 1000 for x in ticks], [f"{x / 1024:g}k" for x in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(a.png) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
    return 0


def paired(a) -> int:
    by: dict[str, dict[int, dict]] = {}
    for f in a.json:
        for key, res in load(Path(f))["results"].items():
            for m in res:
                if m["seed"] in by.setdefault(key, {}):
                    raise SystemExit(f"{f}: run ({key}) seed {m['seed']} appears twice")
                by[key][m["seed"]] = m
    print("| run | seeds | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    for key in sorted(by):
        ms = [by[key][s] for s in sorted(by[key])]
        cells = [f"{np.mean([m[k] for m in ms]):.{2 if k == 'err2d_px' else 1}f} ± "
                 f"{np.std([m[k] for m in ms], ddof=1) if len(ms) > 1 else float('nan'):.{2 if k == 'err2d_px' else 1}f}"
                 for k in METRICS]
        print(f"| ({key}) | {', '.join(map(str, sorted(by[key])))} | " + " | ".join(cells) + " |")
    print()
    print("| difference | metric | seeds | per seed | mean | sd | seeds to resolve the mean "
          "| smallest effect these seeds resolve | seeds for 2 mm |")
    print("|---|---|---|---|---|---|---|---|---|")
    for hi, lo, name in (("c", "b", "(c) - (b): constraint effect"), ("c", "a", "(c) - (a): gap")):
        if hi not in by or lo not in by:
            continue
        seeds = sorted(set(by[hi]) & set(by[lo]))
        for k in METRICS:
            dif = np.array([by[hi][s][k] - by[lo][s][k] for s in seeds])
            sd = float(np.std(dif, ddof=1)) if len(dif) > 1 else float("nan")
            if len(dif) < 2:
                continue
            mde = 2.8 * sd / math.sqrt(len(dif))
            print(f"| {name} | {k} | {', '.join(map(str, seeds))} | {', '.join(f'{x:+.2f}' for x in dif)} | "
                  f"{dif.mean():+.2f} | {sd:.2f} | {_count(seeds_needed(float(dif.mean()), sd))} | {mde:.2f} | "
                  f"{_count(seeds_needed(2.0, sd)) if k != 'err2d_px' else '-'} |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curve")
    c.add_argument("json", nargs="+")
    c.add_argument("--epoch-log", nargs="*", default=[], help="LOG:SAMPLES_PER_EPOCH")
    c.add_argument("--target", type=float, default=70.0, help="MPJPE line on the figure (0: none)")
    c.add_argument("--png")
    p = sub.add_parser("paired")
    p.add_argument("json", nargs="+")
    a = ap.parse_args(argv)
    return curve(a) if a.cmd == "curve" else paired(a)


if __name__ == "__main__":
    raise SystemExit(main())
