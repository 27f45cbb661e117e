"""Triangulation benchmarks on the real 31-camera CMU Panoptic rig (not tests).

    .venv-bench/bin/python benchmarks/triangulation.py \
        --panoptic ../shared/data/panoptic/panoptic_band_multiview.npz \
        --out reports/benchmarks/triangulation.md

1. Cramér-Rao: 2 px Gaussian noise, 4 cameras; the bound on E|X_hat - X|^2 is
   tr((J^T J)^-1) sigma^2 with J the (2V x 3) Jacobian of the distorted projection at the true X
   (unbiased estimators, independent pixel noise). Reports RMS error / sqrt(mean bound).
2. Outliers: each observation replaced with probability 0.2 by a uniform random pixel;
   RANSAC's error against the outlier-free DLT error.
3. Speed: joints/s of pose3d's batched DLT vs aniposelib's CameraGroup.triangulate on the same
   points in the same process (aniposelib only in the benchmark venv, see TOOLCHAIN/README).
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
                  f"2 px noise, 20 noise draws; RANSAC {a.ransac_px} px (LO refits, MSAC, ambiguity "
                  f"{a.ambiguity}) + LM on inliers", "",
                  "Mean errors over the joints returned (NaN = RANSAC declined: < 2 consistent views or two "
                  "competing consensus sets). 'Recoverable' = joints with >= 2 clean views; the others "
                  "(>= V-1 views replaced) cannot be recovered by any method.", "",
                  "| cameras | min inliers | DLT no outliers (mm) | DLT with outliers | RANSAC (mm) | RANSAC / outlier-free "
                  "| NaN | unrecoverable joints | RANSAC / outlier-free on recoverable | NaN on recoverable | > 50 mm |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for cset, mins in ((idx, (2, 3)), (list(range(0, 31, 4)), (2,))):
            c = pick(rig, cset)
            uv, _ = observe(X, c)
            uvn = uv.unsqueeze(0) + sigma * torch.randn(20, *uv.shape, dtype=D)
            out = torch.rand(uvn.shape[:-1]) < 0.2
            rnd = torch.rand(uvn.shape, dtype=D) * torch.tensor([1920.0, 1080.0], dtype=D)
            uvo = torch.where(out.unsqueeze(-1), rnd, uvn)
            rec = (~out).sum(-2) >= 2  # (20, N)
            e0 = (triangulate(uvn, c).points_3d - X).norm(dim=-1).mean()
            e1 = (triangulate(uvo, c).points_3d - X).norm(dim=-1).mean()
            for mi in mins:
                r = triangulate(uvo, c, method="ransac", ransac_threshold_px=a.ransac_px, refine=True,
                                ransac_ambiguity=a.ambiguity, ransac_min_inliers=mi).points_3d
                e = (r - X).norm(dim=-1)
                e2 = e.nanmean()
                lines.append(f"| {len(cset)} | {mi} | {e0 * 1000:.2f} | {e1 * 1000:.1f} | {e2 * 1000:.2f} | {e2 / e0:.2f} "
                             f"| {e.isnan().double().mean():.2%} | {(~rec).double().mean():.2%} "
                             f"| {e[rec].nanmean() / e0:.2f} | {e[rec].isnan().double().mean():.2%} "
                             f"| {(e > 0.05).double().mean():.3%} |")

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
        inp = uvn.transpose(0, 1).unsqueeze(-2)  # (N, V, 1, 2): the same points

        def best_of(f, k=a.repeats):
            f()  # warm-up (numba jit, allocator)
            ts = []
            for _ in range(k):
                t0 = time.perf_counter()
                out = f()
                ts.append(time.perf_counter() - t0)
            return min(ts), out

        load0 = os.getloadavg()[0]
        ta, Xa = best_of(lambda: group.triangulate(pts, undistort=True))
        tp, Xp = best_of(lambda: triangulate(inp, cams).points_3d[:, 0])
        tr, Xr = best_of(lambda: triangulate(inp, cams, refine=True).points_3d[:, 0])
        load1 = os.getloadavg()[0]
        ea = np.linalg.norm(Xa - Xs.numpy(), axis=-1).mean() * 1000
        ep = (Xp - Xs).norm(dim=-1).mean() * 1000
        er = (Xr - Xs).norm(dim=-1).mean() * 1000
        lines += ["", f"## Speed, {n} joints, 4 cameras, 2 px noise, {torch.get_num_threads()} torch thread(s), "
                  f"best of {a.repeats}; 1-min load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores", "",
                  "| method | joints/s | mean error (mm) |", "|---|---|---|",
                  f"| aniposelib CameraGroup.triangulate (undistort=True) | {n / ta:,.0f} | {ea:.3f} |",
                  f"| pose3d triangulate (weighted DLT, incl. per-joint reprojection error) | {n / tp:,.0f} | {ep:.3f} |",
                  f"| pose3d triangulate + LM refine | {n / tr:,.0f} | {er:.3f} |",
                  "", f"speed-up (DLT): {ta / tp:.1f}x; (DLT + LM): {ta / tr:.1f}x"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
