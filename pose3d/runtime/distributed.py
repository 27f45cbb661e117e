"""Data-parallel training under ``torchrun``: DistributedDataParallel (DDP) for the one loop.

A training stage started with ``base.nproc = N > 1`` re-launches itself through
``torch.distributed.run`` (:func:`launch`); each of the N processes finds ``WORLD_SIZE`` and
``RANK`` in its environment, joins the process group (:func:`init`: ``nccl`` on CUDA, ``gloo`` on
the CPU) and runs the same stage code. :class:`pose3d.runtime.train.Trainer` then

* wraps every module in :class:`torch.nn.parallel.DistributedDataParallel` (:func:`wrap`),
  generator and critic alike; BatchNorm layers become synchronised (:func:`sync_batchnorm`), so
  a batch is normalised with the statistics of the whole global batch, as in one process;
* splits each global batch of the epoch's seeded order into N equal slices, rank r taking the
  r-th (:func:`shard_batch`): the batch size in params stays the *global* batch, and every
  rank builds and augments exactly the samples one process would have put in that slice;
* averages the epoch's metrics over the ranks (:func:`mean_over_ranks`);
* leaves checkpoints, curves, model files, predictions, metrics and MLflow to rank 0; the other
  ranks stop after the last epoch (:class:`RankDone`, which the stage wrapper turns into exit 0).

So ``base.nproc`` changes the speed, not the numbers: N processes follow one process's
trajectory up to float rounding (summation order of the gradient all-reduce), except where a
step draws torch random numbers of its own for the local rows (dropout masks): those differ.
Random numbers drawn per batch row through :func:`rand_rows` (WGAN-GP's interpolation
weights) are the global batch's, sliced.

With one process (``WORLD_SIZE`` unset or 1) none of this runs: no process group, no
wrapper, no extra random numbers; the single-process path is the plain loop.

References: PyTorch's DDP notes (https://pytorch.org/docs/stable/notes/ddp.html) and
``torchrun`` (https://pytorch.org/docs/stable/elastic/run.html).
"""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
import types
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

#: environment variable carrying the MLflow pipeline key of the process that re-launched a stage
#: through torchrun (its ranks' parent is torchrun, not dvc; see pose3d.runtime.tracking)
PIPELINE_KEY_ENV = "POSE3D_PIPELINE_KEY"


class RankDone(Exception):
    """Raised on ranks other than 0 when training is over: rank 0 alone writes the outputs."""


def env_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0, or the only process."""
    return rank() == 0


# --------------------------------------------------------------------------- launching
def launch(script: str, argv: list[str], nproc: int) -> int:
    """Run ``script argv`` as ``nproc`` processes under ``torchrun --standalone`` and return
    its exit status (non-zero when any rank failed). The ranks inherit this process's
    environment, plus the MLflow pipeline key of this process so that their run nests under
    the same pipeline run as the other stages of a ``dvc repro``."""
    from pose3d.runtime import tracking

    env = dict(os.environ)
    key = tracking.pipeline_key()
    if key:
        env[PIPELINE_KEY_ENV] = key
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           script, *argv]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    return subprocess.run(cmd, env=env).returncode


def should_launch(nproc: int) -> bool:
    """True when a stage must re-launch itself: ``nproc > 1`` and not already under torchrun."""
    return nproc > 1 and "WORLD_SIZE" not in os.environ


def init(device: torch.device) -> bool:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` (nccl on CUDA, gloo on the CPU;
    each rank takes the GPU ``LOCAL_RANK``). Returns True when distributed."""
    if env_world_size() <= 1 or active():
        return active()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    log.info("rank %d of %d joined (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def device_of_rank(device: torch.device) -> torch.device:
    """``cuda`` -> this rank's GPU (``cuda:LOCAL_RANK``); other devices unchanged."""
    if device.type == "cuda" and active() and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


# --------------------------------------------------------------------------- batches
def _rows(x: Any) -> int | None:
    return len(x) if isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim > 0 else None


def shard_batch(batch: Any, rank_: int | None = None, world: int | None = None) -> Any:
    """This rank's slice of a global batch: every tensor or array is cut along its first axis
    into ``world`` equal contiguous parts (an error when its length is not a multiple);
    scalars and other leaves are kept. Mappings, lists and tuples are sliced leaf by leaf."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    if w == 1:
        return batch
    n = _rows(batch)
    if n is not None:
        if n % w:
            raise ValueError(f"a batch of {n} rows cannot be split evenly over {w} processes: "
                             f"make the batch size a multiple of base.nproc")
        k = n // w
        return batch[r * k:(r + 1) * k]
    if isinstance(batch, Mapping):
        return {key: shard_batch(v, r, w) for key, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(shard_batch(v, r, w) for v in batch)
    return batch


def rand_rows(n: int, *shape: int, dtype=None, device=None) -> torch.Tensor:
    """``torch.rand(n, *shape)`` for the ``n`` local rows of a batch. Under DDP every rank draws
    the global batch's numbers (``n * world`` rows, from the same seeded generator) and keeps
    its own slice, so the values are those one process would have drawn for these rows."""
    w = world_size()
    if w == 1:
        return torch.rand((n, *shape), dtype=dtype, device=device)
    r = rank()
    return torch.rand((n * w, *shape), dtype=dtype, device=device)[r * n:(r + 1) * n]


# --------------------------------------------------------------------------- metrics
def mean_over_ranks(sums: Mapping[str, float], count: int) -> dict[str, float]:
    """Per-key mean over ranks of ``sums[k] / count`` (each rank's epoch mean of its slices):
    with equal slices, the epoch mean of the global batches' means. Keys missing on a rank
    (a loss part its slices never had) are averaged over the ranks that have them."""
    if not active():
        return {k: v / max(count, 1) for k, v in sums.items()}
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, ({k: float(v) for k, v in sums.items()}, int(count)))
    keys: list[str] = []
    for s, _ in gathered:
        keys += [k for k in s if k not in keys]
    out = {}
    for k in keys:
        vals = [s[k] / max(c, 1) for s, c in gathered if k in s]
        out[k] = sum(vals) / len(vals)
    return out


# --------------------------------------------------------------------------- modules
class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its gradient: the gradient of a sum over ranks, seen by each rank,
    is the sum over ranks of the incoming gradients."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g)
        return g


class _SyncBatchNormCPU(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the whole global batch for the CPU (gloo), where
    :class:`torch.nn.SyncBatchNorm` refuses to run: the per-channel sum and sum of squares
    (shifted by the running mean, against cancellation) are summed over the ranks by a
    differentiable all-reduce, so the backward pass sums the statistics' gradients over the
    ranks as torch's SyncBatchNorm does. In eval mode
    it is plain BatchNorm on the running statistics. Shares parameters and buffers with the
    layer it replaces (:func:`sync_batchnorm`)."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        self._check_input_dim(x)
        C = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        view = (1, C) + (1,) * (x.dim() - 2)
        xf = x.float()
        shift = (self.running_mean.detach().float() if self.running_mean is not None
                 else torch.zeros(C, device=x.device))
        d = xf - shift.view(view)
        n_local = torch.tensor([x.numel() / C], dtype=torch.float32, device=x.device)
        stats = _SumOverRanks.apply(torch.cat([d.sum(dims), (d * d).sum(dims), n_local]))
        n = stats[-1]
        mean_d = stats[:C] / n
        var = (stats[C:2 * C] / n - mean_d * mean_d).clamp_min(0)  # biased: what normalises
        mean = mean_d + shift
        y = (xf - mean.view(view)) * torch.rsqrt(var + self.eps).view(view)
        if self.affine:
            y = y * self.weight.float().view(view) + self.bias.float().view(view)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp_min(1)) * m)
        return y.to(x.dtype)


def sync_batchnorm(module: nn.Module, device: torch.device) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace every BatchNorm layer inside ``module`` by a synchronised one
    (:class:`torch.nn.SyncBatchNorm` on CUDA, :class:`_SyncBatchNormCPU` elsewhere) sharing its
    parameters and buffers. Returns what :func:`restore_batchnorm` needs to put them back."""
    swaps = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
                    child, (nn.SyncBatchNorm, _SyncBatchNormCPU)):
                cls = nn.SyncBatchNorm if device.type == "cuda" else _SyncBatchNormCPU
                new = cls(child.num_features, child.eps, child.momentum, child.affine,
                          child.track_running_stats)
                if child.affine:
                    new.weight, new.bias = child.weight, child.bias
                if child.track_running_stats:
                    new.running_mean, new.running_var = child.running_mean, child.running_var
                    new.num_batches_tracked = child.num_batches_tracked
                new.training = child.training
                setattr(parent, name, new)
                swaps.append((parent, name, child))
    return swaps


def restore_batchnorm(swaps: list[tuple[nn.Module, str, nn.Module]]) -> None:
    """Put the original BatchNorm layers back (their parameters and buffers were shared, so
    they hold the trained values)."""
    for parent, name, child in reversed(swaps):
        child.training = getattr(parent, name).training
        setattr(parent, name, child)


class _Dispatch(nn.Module):
    """Calls the method of the wrapped module named by the first argument, so that DDP's
    forward (which prepares the gradient all-reduce) runs for every entry point a step
    function uses (``generate``, ``forward_root``, ...), not only ``forward``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, method: str, *args, **kwargs):
        return getattr(self.module, method)(*args, **kwargs)


class DDPModule:
    """What a step function sees in place of a module under DDP: calling it, or calling one of
    the module's own methods (not :class:`torch.nn.Module`'s), goes through
    DistributedDataParallel's forward; attributes (buffers, sub-modules) are the module's."""

    def __init__(self, module: nn.Module, ddp: nn.parallel.DistributedDataParallel):
        self.module = module
        self.ddp = ddp

    def __call__(self, *args, **kwargs):
        return self.ddp("forward", *args, **kwargs)

    def __getattr__(self, name: str):
        attr = getattr(self.module, name)
        if isinstance(attr, types.MethodType) and name not in vars(nn.Module):
            return lambda *args, **kwargs: self.ddp(name, *args, **kwargs)
        return attr


def wrap(module: nn.Module, device: torch.device) -> DDPModule:
    """``module`` (already on ``device``, BatchNorm already synchronised) in DDP. Buffers are
    not broadcast at each forward: every rank computes the same values (synchronised BatchNorm,
    constants; they are broadcast once, at the start), and an in-place broadcast between two forwards of one step (a GAN's critic on
    real and fake poses) would invalidate the first forward's graph."""
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(_Dispatch(module), device_ids=ids, forward_sync_buffers=False)
    return DDPModule(module, ddp)
