"""Learning curves of train_2d runs: validation error against training samples seen.

    python benchmarks/pose2d_curves.py --png reports/figures/pose2d_learning_curves.png \
        LABEL:RUN_DIR:CROPS_PER_EPOCH:IMG_PER_S [...]

RUN_DIR holds the ``curves.csv`` (or is that CSV itself) that ``stages/train_2d.py --curves`` wrote (one row per epoch:
val_pck_0.05, val_pck_0.1, val_mean_px_error, val_median_px_error on the validation crops).
CROPS_PER_EPOCH turns epochs into samples seen; IMG_PER_S (the measured training rate of that
crop size and precision on 2 threads) turns samples into CPU-minutes of an idle 2-core machine.
Prints one markdown table row per epoch; draws mean px and PCK@0.1 against samples seen.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def read_curve(run: Path) -> list[dict[str, float]]:
    """A run folder's curves.csv, or a curves CSV given directly."""
    with open(run if run.suffix == ".csv" else run / "curves.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="LABEL:RUN_DIR:CROPS_PER_EPOCH:IMG_PER_S")
    ap.add_argument("--png")
    a = ap.parse_args(argv)
    curves = []
    print("| run | epoch | samples seen | 2-core minutes | lr after | PCK@0.05 | PCK@0.1 | mean px | median px |")
    print("|---|---|---|---|---|---|---|---|---|")
    for spec in a.runs:
        label, run_dir, per_epoch, rate = spec.rsplit(":", 3)
        rows = read_curve(Path(run_dir))
        xs = []
        for r in rows:
            n = int(r["epoch"]) * int(per_epoch)
            xs.append(n)
            print(f"| {label} | {int(r['epoch'])} | {n:,} | {n / float(rate) / 60:.1f} | {r['lr_model']:.2g} | "
                  f"{100 * r['val_pck_0.05']:.1f} | {100 * r['val_pck_0.1']:.1f} | {r['val_mean_px_error']:.2f} | "
                  f"{r['val_median_px_error']:.2f} |")
        curves.append((label, xs, rows))
    if a.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker

        from pose3d.data.io import atomic_path

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
        for label, xs, rows in curves:
            ax1.plot([x / 1000 for x in xs], [r["val_mean_px_error"] for r in rows], "o-", ms=3, label=label)
            ax2.plot([x / 1000 for x in xs], [100 * r["val_pck_0.1"] for r in rows], "o-", ms=3, label=label)
        ax1.set(xlabel="training samples seen (thousands)", ylabel="validation mean error (px, 512 px frames)",
                yscale="log", title="mean error")
        ax2.set(xlabel="training samples seen (thousands)", ylabel="PCK@0.1 (%)", ylim=(80, 100), title="PCK@0.1")
        ax1.set_yticks([3, 4, 5, 6, 8, 10, 15, 20])
        ax1.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax1.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for ax in (ax1, ax2):
            ax.grid(alpha=0.3)
        ax1.legend(fontsize=8)
        fig.tight_layout()
        with atomic_path(a.png) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
        plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
