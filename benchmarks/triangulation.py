"""Triangulation benchmarks on the real 31-camera CMU Panoptic rig (not tests).

    .venv-bench/bin/python benchmarks/triangulation.py \
        --panoptic ../shared/data/panoptic/panoptic_band_multiview.npz \
        --out reports/benchmarks/triangulation.md

1. Cramér-Rao: 2 px Gaussian noise, 4 cameras; the bound on E|X_hat - X|^2 is
   tr((J^T J)^-1) sigma^2 with J the (2V x 3) Jacobian of the distorted projection at the true X
   (unbiased estimators, independent pixel noise). Reports RMS error / sqrt(mean bound).
2. Outliers: each observation replaced with probability 0.2 by a uniform random pixel;
   RANSAC's error against the outlier-free DLT error.
3. Speed: joints/s of pose3d's batched DLT (eager, and ``compiled=True``: the native C++
   kernel, and its torch.compile'd fallback) vs aniposelib's CameraGroup.triangulate on the
   same points in the same process, interleaved rounds (aniposelib only in the benchmark venv, see TOOLCHAIN/README).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from pose3d.geometry.triangulation import _project_with_jacobian, triangulate

D = torch.float64


def load_rig(path, seq="160906_band1"):
    d = np.load(path, allow_pickle=False)
    R = torch.as_tensor(d[f"{seq}/hd_R"], dtype=D)
    U, _, Vh = torch.linalg.svd(R)
    cams = {"K": torch.as_tensor(d[f"{seq}/hd_K"], dtype=D), "dist": torch.as_tensor(d[f"{seq}/hd_dist"], dtype=D),
            "R": U @ Vh, "t": torch.as_tensor(d[f"{seq}/hd_t_mm"], dtype=D) / 1000}
    X = torch.as_tensor(d[f"{seq}/joints19_mm"], dtype=D).reshape(-1, 3) / 1000
    return cams, X[torch.isfinite(X).all(-1)]


def pick(cams, idx):
    return {k: v[idx] for k, v in cams.items()}


def observe(X, cams):
    return _project_with_jacobian(X, cams)


def _without_native(f):
    """Run f with the native DLT kernel unavailable (the torch.compile fallback)."""
    from unittest import mock

    from pose3d.geometry import native
    with mock.patch.object(native, "load", lambda views: None):
        return f()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--panoptic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cams", default="0,8,16,24")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--speed-points", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ransac-px", type=float, default=8.0)
    ap.add_argument("--ambiguity", type=float, default=0.25)
    ap.add_argument("--pair-px", type=float, default=12.0)
    ap.add_argument("--pair-frac", type=float, default=0.25)
    ap.add_argument("--draws", type=int, default=20, help="noise/outlier draws in the outlier section")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sections", default="crb,outliers,speed")
    a = ap.parse_args()
    torch.manual_seed(0)
    # one thread: with 2 cores shared by many processes, OpenMP threads spin-wait (40x slower)
    torch.set_num_threads(a.threads)
    rig, X = load_rig(a.panoptic)
    idx = [int(i) for i in a.cams.split(",")]
    cams = pick(rig, idx)
    lines = [f"# Triangulation benchmarks (CMU Panoptic 160906_band1, cameras {idx}, {len(X)} real joints)", ""]

    sigma = 2.0
    sections = a.sections.split(",")
    # ---- 1. CRB
    if 'crb' in sections:
        uv, Jac = observe(X, cams)  # (V, N, 2), (V, N, 2, 3)
        F = torch.einsum("vnck,vncl->nkl", Jac, Jac) / sigma**2
        bound = torch.linalg.inv(F).diagonal(dim1=-2, dim2=-1).sum(-1)  # (N,) m^2
        noisy = uv.unsqueeze(0) + sigma * torch.randn(a.trials, *uv.shape, dtype=D)
        res = {}
        for name, kw in (("DLT", {}), ("DLT + LM", {"refine": True})):
            Xh = triangulate(noisy, cams, **kw).points_3d  # (trials, N, 3)
            res[name] = ((Xh - X) ** 2).sum(-1).mean().sqrt()
        crb = bound.mean().sqrt()
        lines += ["## Cramér-Rao bound, 2 px noise, 4 cameras", "",
                  f"sqrt(mean CRB) = {crb * 1000:.3f} mm ({a.trials} noise draws x {len(X)} joints)", "",
                  "| estimator | RMS error (mm) | ratio to bound |", "|---|---|---|"]
        lines += [f"| {k} | {v * 1000:.3f} | {v / crb:.3f} |" for k, v in res.items()]

    # ---- 2. outliers
    if 'outliers' in sections:
        lines += ["", f"## 20 % outlier views (each observation replaced by a uniform random pixel with p = 0.2), "
                  f"2 px noise, {a.draws} noise draws; RANSAC {a.ransac_px} px (LO refits, MSAC, ambiguity "
                  f"{a.ambiguity}) + LM on inliers", "",
                  "Mean errors over the joints returned (NaN = RANSAC declined: < 2 consistent views or two "
                  "competing consensus sets). 'Recoverable' = joints with >= 2 clean views; the others "
                  "(>= V-1 views replaced) cannot be recovered by any method.", "",
                  "Oracle: DLT + LM on exactly the clean views (knowing which were replaced), on the "
                  "recoverable joints: the best any method can do with the views left.", "",
                  "Settings: 'default' = threshold --ransac-px, min_inliers 2, no two-view test; "
                  "'min 3' = min_inliers 3; 'pair' = threshold --pair-px with --pair-frac: a joint whose "
                  "consensus is only two views is declined unless both residuals are below "
                  "pair_frac x threshold.", "",
                  "| cameras | setting | DLT no outliers (mm) | DLT with outliers | RANSAC (mm) | RANSAC / outlier-free "
                  "| NaN | unrecoverable joints | RANSAC / outlier-free on recoverable | NaN on recoverable | > 50 mm "
                  "| oracle on recoverable (mm) | oracle / outlier-free | RANSAC / oracle on recoverable |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        settings = {"default": dict(ransac_threshold_px=a.ransac_px),
                    "min 3": dict(ransac_threshold_px=a.ransac_px, ransac_min_inliers=3),
                    f"pair {a.pair_px:g} px x {a.pair_frac:g}": dict(ransac_threshold_px=a.pair_px,
                                                                     ransac_pair_threshold=a.pair_frac)}
        names = list(settings)
        for cset, use in ((idx, names), (list(range(0, 31, 4)), [names[0], names[2]])):
            c = pick(rig, cset)
            uv, _ = observe(X, c)
            uvn = uv.unsqueeze(0) + sigma * torch.randn(a.draws, *uv.shape, dtype=D)
            out = torch.rand(uvn.shape[:-1]) < 0.2
            rnd = torch.rand(uvn.shape, dtype=D) * torch.tensor([1920.0, 1080.0], dtype=D)
            uvo = torch.where(out.unsqueeze(-1), rnd, uvn)
            rec = (~out).sum(-2) >= 2  # (draws, N)
            e0 = (triangulate(uvn, c).points_3d - X).norm(dim=-1).mean()
            e1 = (triangulate(uvo, c).points_3d - X).norm(dim=-1).mean()
            clean = torch.where(out.unsqueeze(-1), torch.full_like(uvo, float("nan")), uvo)
            eo = (triangulate(clean, c, refine=True).points_3d - X).norm(dim=-1)[rec]  # oracle
            for mi in use:
                r = triangulate(uvo, c, method="ransac", refine=True, ransac_ambiguity=a.ambiguity,
                                **settings[mi]).points_3d
                e = (r - X).norm(dim=-1)
                e2 = e.nanmean()
                lines.append(f"| {len(cset)} | {mi} | {e0 * 1000:.2f} | {e1 * 1000:.1f} | {e2 * 1000:.2f} | {e2 / e0:.2f} "
                             f"| {e.isnan().double().mean():.2%} | {(~rec).double().mean():.2%} "
                             f"| {e[rec].nanmean() / e0:.2f} | {e[rec].isnan().double().mean():.2%} "
                             f"| {(e > 0.05).double().mean():.3%} | {eo.mean() * 1000:.2f} | {eo.mean() / e0:.2f} "
                             f"| {e[rec].nanmean() / eo.mean():.2f} |")

    # ---- 3. speed vs aniposelib
    if 'speed' in sections:
        from aniposelib.cameras import Camera as ACam, CameraGroup
        import cv2

        n = a.speed_points
        Xs = X[torch.randint(len(X), (n,))] + 0.01 * torch.randn(n, 3, dtype=D)
        uv, _ = observe(Xs, cams)
        uvn = uv + sigma * torch.randn(uv.shape, dtype=D)
        acams = [ACam(matrix=cams["K"][v].numpy(), dist=cams["dist"][v].numpy(), size=(1920, 1080),
                      rvec=cv2.Rodrigues(cams["R"][v].numpy())[0].ravel(), tvec=cams["t"][v].numpy(), name=str(v))
                 for v in range(len(idx))]
        group = CameraGroup(acams)
        pts = uvn.numpy()  # (C, N, 2)
        # (N, V, 1, 2): the same points, contiguous in pose3d's layout as pts is in aniposelib's
        inp = uvn.transpose(0, 1).unsqueeze(-2).contiguous()

        # interleaved rounds (one call of each method per round, best round kept per method), so
        # that a change of the shared machine's load hits all methods alike
        methods = {
            "aniposelib": lambda: group.triangulate(pts, undistort=True),
            "eager": lambda: triangulate(inp, cams).points_3d[:, 0],
            "compiled": lambda: triangulate(inp, cams, compiled=True).points_3d[:, 0],
            "inductor": lambda: _without_native(lambda: triangulate(inp, cams, compiled=True).points_3d[:, 0]),
            "lm": lambda: triangulate(inp, cams, refine=True).points_3d[:, 0],
            "lm_compiled": lambda: triangulate(inp, cams, refine=True, compiled=True).points_3d[:, 0],
        }
        t0 = time.perf_counter()
        triangulate(inp[:1000], cams, refine=True, compiled=True)  # torch.compile (inductor disk cache may be warm)
        _without_native(lambda: triangulate(inp[:1000], cams, compiled=True))
        t_compile = time.perf_counter() - t0
        load0 = os.getloadavg()[0]
        out = {k: f() for k, f in methods.items()}  # warm-up: numba JIT, allocator, compiled shapes
        best = dict.fromkeys(methods, float("inf"))
        for _ in range(a.repeats):
            for k, f in methods.items():
                t1 = time.perf_counter()
                out[k] = f()
                best[k] = min(best[k], time.perf_counter() - t1)
        load1 = os.getloadavg()[0]
        err = {k: float(np.linalg.norm(np.asarray(v) - Xs.numpy(), axis=-1).mean() * 1000) for k, v in out.items()}
        ta = best["aniposelib"]
        names = {"aniposelib": "aniposelib CameraGroup.triangulate (undistort=True)",
                 "eager": "pose3d triangulate, weighted DLT, eager (incl. per-joint reprojection error)",
                 "compiled": "pose3d triangulate(compiled=True): native C++ kernel, weighted DLT (incl. reprojection error)",
                 "inductor": "pose3d triangulate(compiled=True) without the native kernel: torch.compile'd kernel",
                 "lm": "pose3d triangulate(refine=True), DLT + 10 LM iterations, eager",
                 "lm_compiled": "pose3d triangulate(refine=True, compiled=True), DLT + 10 LM iterations"}
        lines += ["", f"## Speed, {n} joints, 4 cameras, 2 px noise, {torch.get_num_threads()} torch thread(s), "
                  f"best of {a.repeats} interleaved rounds; 1-min load average {load0:.1f} -> {load1:.1f} "
                  f"on {os.cpu_count()} cores", "",
                  "| method | joints/s | speed-up vs aniposelib | mean error (mm) | max diff to eager DLT (mm) |",
                  "|---|---|---|---|---|"]
        for k in methods:
            diff = float(np.abs(np.asarray(out[k]) - out["eager"].numpy()).max() * 1000)
            lines.append(f"| {names[k]} | {n / best[k]:,.0f} | {ta / best[k]:.1f}x | {err[k]:.3f} | {diff:.2e} |")
        lines += ["", f"Building the compiled paths (native kernel from its cache, torch.compile; first calls in the process): {t_compile:.1f} s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
