"""The native DLT kernel (``_dlt_kernel.cpp``): built at first use with the system C++ compiler
and loaded with ctypes, for ``triangulate(compiled=True)`` on float64 CPU tensors.

Why not torch.compile alone: inductor's code for the same steps runs at ~4-7M joints/s on one
core here, this hand-fused loop at ~15M with the layout changes and outputs done in C++ as well
(reports/benchmarks/triangulation.md). Why ctypes and not ``torch.utils.cpp_extension``: no
Python binding is needed (plain arrays in, arrays out), and the extension builder needs ninja,
which a fresh machine with only Python and git does not have.

One library per number of views (1..8), cached per source, flags, compiler and CPU
(``-march=native``) under ``$POSE3D_CACHE`` (default ``~/.cache/pose3d``), written to a
temporary name and renamed, so concurrent first uses do not see a half-written file. ctypes releases the GIL during the call,
so chunks run in parallel threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("_dlt_kernel.cpp")
FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd",
         "-fPIC", "-shared"]
X86_FLAGS = ["-mprefer-vector-width=512"]  # AVX-512 machines: 8 doubles per op (1.1x here)

_libs: dict = {}  # views -> ctypes function
MAX_VIEWS = 8  # more views: the torch.compile path (fully unrolled, 31 views took 8 min to compile)
_error: str | None = None


def compiler() -> str | None:
    """The C++ compiler: ``$CXX``, else the first of g++, c++, clang++ on PATH."""
    for c in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


def _cpu_id() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next((line for line in text.splitlines() if line.startswith("flags")), platform.processor())
    except OSError:
        return platform.processor()


def build(views: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """Compile the kernel for ``views`` cameras (or find it in the cache) -> path of the shared
    library. The number of views is a compile-time constant (the view loops unroll; a generic
    loop ran 5x slower), so each camera count gets its own library (~10-20 s of compiler per
    count, once). Raises RuntimeError naming the compiler and its output when no compiler or
    the build fails."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("pose3d native DLT kernel: no C++ compiler (set CXX or install g++)")
    if not 1 <= views <= MAX_VIEWS:
        raise ValueError(f"pose3d native DLT kernel: {views} views, expected 1..{MAX_VIEWS}")
    flags = FLAGS + (X86_FLAGS if platform.machine() in ("x86_64", "AMD64") else []) + [f"-DPOSE3D_VIEWS={views}"]
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(flags), version, platform.machine(),
                                    _cpu_id()]).encode()).hexdigest()[:16]
    root = Path(cache_dir or os.environ.get("POSE3D_CACHE") or Path.home() / ".cache" / "pose3d")
    out = root / "native" / f"dlt{views}_{key}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cxx, *flags, str(SOURCE), "-o", tmp]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        Path(tmp).unlink(missing_ok=True)
        raise RuntimeError(f"pose3d native DLT kernel: {' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    os.replace(tmp, out)
    log.info("built %s", out)
    return out


def load(views: int):
    """The kernel's ctypes function for ``views`` cameras, or None (reason logged once) when it
    cannot be built."""
    global _error
    if views not in _libs and _error is None:
        try:
            fn = ctypes.CDLL(str(build(views))).pose3d_triangulate
            fn.argtypes = ([ctypes.c_int] + [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 2
                           + [ctypes.c_double, ctypes.c_int] + [ctypes.c_void_p] * 6)
            fn.restype = ctypes.c_int
            _libs[views] = fn
        except (RuntimeError, OSError) as e:
            _error = str(e)
            log.warning("%s; using the torch.compile path", e)
    return _libs.get(views)


_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """A persistent pool per thread count (starting threads per call costs ~0.2 ms)."""
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="pose3d-dlt")
    return _pools[threads]


def triangulate(pts: torch.Tensor, scores: torch.Tensor | None, score_threshold: float, weighted: bool,
                cp: torch.Tensor, threads: int | None = None, min_chunk: int = 16384
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """The kernel on float64 CPU tensors in :func:`pose3d.geometry.triangulation.triangulate`'s
    layout: pixels ``pts`` (N, V, J, 2) (NaN = missing), ``scores`` (N, V, J) or None, cameras
    ``cp`` (V, 22) (:func:`pose3d.geometry.triangulation._camera_vector`) -> X (N * J, 3) (NaN
    where fewer than 2 views), rep (N * J,) float64, used (N, V, J) bool (finite pixels with
    score >= ``score_threshold``; row weights the score if ``weighted``, else 1), redo (N * J,) bool (as
    :func:`pose3d.geometry.triangulation._k_fused`), the number of joints with >= 2 views and
    the number to redo. ``threads`` (default torch's) chunks of the points run in parallel."""
    N, V, J, _ = pts.shape
    fn = load(V)  # ValueError (from build) outside 1..MAX_VIEWS views
    if fn is None:
        raise RuntimeError(f"pose3d native DLT kernel unavailable: {_error}")
    ins = [t.contiguous() for t in (pts, cp)] + ([scores.contiguous()] if scores is not None else [])
    if any(t.dtype != torch.float64 or t.device.type != "cpu" for t in ins):
        raise ValueError("pose3d native DLT kernel: needs float64 CPU tensors")
    pts, cp = ins[:2]
    sc = ins[2] if scores is not None else None
    P = N * J
    X = torch.empty(P, 3, dtype=torch.float64)
    rep = torch.empty(P, dtype=torch.float64)
    used = torch.empty(N, V, J, dtype=torch.bool)
    redo = torch.empty(P, dtype=torch.bool)
    threads = max(1, min(threads or torch.get_num_threads(), P // min_chunk))
    bounds = [P * k // threads for k in range(threads + 1)]
    counts = torch.zeros(threads, 2, dtype=torch.int64)

    def run(k):
        if bounds[k + 1] > bounds[k]:
            rc = fn(V, J, bounds[k], bounds[k + 1], pts.data_ptr(), sc.data_ptr() if sc is not None else None,
                    float(score_threshold), int(bool(weighted)), cp.data_ptr(), X.data_ptr(),
                    rep.data_ptr(), used.data_ptr(), redo.data_ptr(), counts[k].data_ptr())
            if rc != 0:
                raise RuntimeError(f"pose3d native DLT kernel failed (code {rc})")

    if threads == 1:
        run(0)
    else:
        list(_pool(threads).map(run, range(threads)))
    n_ok, n_redo = (sum(c) for c in zip(*counts.tolist()))
    return X, rep, used, redo, n_ok, n_redo
