"""The native DLT kernel (``_dlt_kernel.cpp``): built at first use with the system C++ compiler
and loaded with ctypes, for ``triangulate(compiled=True)`` on float64 CPU tensors.

Why not torch.compile alone: inductor's code for the same steps runs at ~4-7M joints/s on one
core here, a hand-fused loop at ~10M (reports/benchmarks/triangulation.md). Why ctypes and not
``torch.utils.cpp_extension``: no Python binding is needed (plain arrays in, arrays out), and the
extension builder needs ninja, which a fresh machine with only Python and git does not have.

The library is cached per source, flags, compiler and CPU (``-march=native``) under
``$POSE3D_CACHE`` (default ``~/.cache/pose3d``), written to a temporary name and renamed, so
concurrent first uses do not see a half-written file. ctypes releases the GIL during the call,
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

_lib = None
_split = None
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


def build(cache_dir: str | os.PathLike | None = None) -> Path:
    """Compile the kernel (or find it in the cache) -> path of the shared library.
    Raises RuntimeError naming the compiler and its output when no compiler or the build fails."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("pose3d native DLT kernel: no C++ compiler (set CXX or install g++)")
    flags = FLAGS + (X86_FLAGS if platform.machine() in ("x86_64", "AMD64") else [])
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(flags), version, platform.machine(),
                                    _cpu_id()]).encode()).hexdigest()[:16]
    root = Path(cache_dir or os.environ.get("POSE3D_CACHE") or Path.home() / ".cache" / "pose3d")
    out = root / "native" / f"dlt_{key}.so"
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


def load():
    """The kernel's ctypes function, or None (reason logged once) when it cannot be built."""
    global _lib, _split, _error
    if _lib is None and _error is None:
        try:
            lib = ctypes.CDLL(str(build()))
            fn = lib.pose3d_dlt
            fn.argtypes = ([ctypes.c_int, ctypes.c_int64, ctypes.c_int64] + [ctypes.c_void_p] * 3
                          + [ctypes.c_double, ctypes.c_int] + [ctypes.c_void_p] * 8)
            fn.restype = ctypes.c_int
            split = lib.pose3d_split
            split.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int64] + [ctypes.c_void_p] * 3
            split.restype = ctypes.c_int
            _lib = fn
            _split = split
        except (RuntimeError, OSError) as e:
            _error = str(e)
            log.warning("%s; using the torch.compile path", e)
    return _lib


MAX_VIEWS = 64  # as in _dlt_kernel.cpp
_pools: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """A persistent pool per thread count (starting threads per call costs ~0.2 ms)."""
    if threads not in _pools:
        _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="pose3d-dlt")
    return _pools[threads]


def split_pixels(pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V, J, 2) float64 CPU pixels -> u, v (V, N * J) contiguous (the kernel's layout)."""
    if load() is None:
        raise RuntimeError(f"pose3d native DLT kernel unavailable: {_error}")
    pts = pts.contiguous()
    N, V, J, _ = pts.shape
    uv = torch.empty(2, V, N * J, dtype=torch.float64)
    _split(N, V, J, pts.data_ptr(), uv[0].data_ptr(), uv[1].data_ptr())
    return uv[0], uv[1]


def dlt(u: torch.Tensor, v: torch.Tensor, scores: torch.Tensor | None, score_threshold: float,
        weighted: bool, cp: torch.Tensor, C: torch.Tensor, threads: int | None = None,
        min_chunk: int = 16384) -> tuple[torch.Tensor, ...]:
    """The kernel on float64 CPU tensors: pixels u, v (V, N) (NaN = missing), scores (V, N) or
    None, cameras cp (V, 22), coefficients C (V, 4, 10) -> X0, X1, X2, rep (N,) float64, redo
    (N,) bool (as :func:`pose3d.geometry.triangulation._k_fused`) and used (V, N) bool (finite
    pixels with score >= ``score_threshold``; row weights the score if ``weighted``, else 1).
    ``threads`` (default torch's) chunks of the points run in parallel."""
    fn = load()
    if fn is None:
        raise RuntimeError(f"pose3d native DLT kernel unavailable: {_error}")
    V, N = u.shape
    if not 1 <= V <= MAX_VIEWS:
        raise ValueError(f"pose3d native DLT kernel: {V} views, at most {MAX_VIEWS}")
    ins = [t.contiguous() for t in (u, v, cp, C)] + ([scores.contiguous()] if scores is not None else [])
    if any(t.dtype != torch.float64 or t.device.type != "cpu" for t in ins):
        raise ValueError("pose3d native DLT kernel: needs float64 CPU tensors")
    u, v, cp, C = ins[:4]
    sc = ins[4] if scores is not None else None
    outs = [torch.empty(N, dtype=torch.float64) for _ in range(4)]
    redo = torch.empty(N, dtype=torch.uint8)
    w = torch.empty(V, N, dtype=torch.float64)
    threads = max(1, min(threads or torch.get_num_threads(), N // min_chunk))
    bounds = [N * k // threads for k in range(threads + 1)]

    def run(k):
        a, b = bounds[k], bounds[k + 1]
        if b > a:  # the chunk's columns: offset pointers, row stride N
            fn(V, b - a, N, u[:, a].data_ptr(), v[:, a].data_ptr(), sc[:, a].data_ptr() if sc is not None else None,
               float(score_threshold), int(bool(weighted)), w[:, a].data_ptr(), cp.data_ptr(), C.data_ptr(),
               *(o[a:].data_ptr() for o in outs), redo[a:].data_ptr())

    if threads == 1 or N == 0:
        run(0)
    else:
        list(_pool(threads).map(run, range(threads)))
    return (*outs, redo.bool(), w > 0)
