"""One training loop for every model in pose3d.

Models differ only in a *step function*; adversarial models (RepNet, the temporal GAN) take
several optimiser steps inside theirs but reuse the loop, the checkpointing and the logging.

    trainer = Trainer({"model": net}, {"model": opt}, {"model": sched}, config=cfg, run=run)
    history = trainer.fit(step_fn, train_batches, evaluate=evaluate, fingerprint=fp)

* ``train_batches(epoch)`` returns an iterable of batches (tensors, tuples or dicts); shuffle
  with ``numpy.random.default_rng([seed, epoch])`` so that a resumed run sees the same data.
* ``step_fn(ctx, batch, epoch) -> dict`` runs ``with ctx.autocast(): ...`` and
  ``ctx.backward_step(loss, "model")``; returned numbers are averaged over the epoch.
* ``evaluate(ctx, epoch) -> dict`` runs under ``torch.no_grad()`` with modules in eval mode.

Every epoch ends with an atomic checkpoint (loadable with ``weights_only=True``), a CSV row
and MLflow metrics. A run whose checkpoint carries the same ``fingerprint`` (the caller's:
params + input files) and was written by the same code (:func:`code_digest` of the pose3d
package) resumes after the last finished epoch; any other checkpoint is ignored, so a code
change retrains instead of resuming a model the old code finished. torch's RNG is re-seeded per
epoch from ``(seed, epoch)`` so the resumed epochs are identical to uninterrupted ones.

Under ``torchrun`` (``WORLD_SIZE > 1``) the same loop trains data-parallel
(:mod:`pose3d.runtime.distributed`): modules in DistributedDataParallel with synchronised
BatchNorm, each global batch sliced by rank (``batches.shard(rank, world)`` when the epoch's
iterable has it, else :func:`pose3d.runtime.distributed.shard_batch` of every batch), metrics
averaged over the ranks, checkpoints, curves and MLflow on rank 0; ``evaluate`` runs on rank 0
only, on the unwrapped modules. After the last epoch the other ranks raise
:class:`pose3d.runtime.distributed.RankDone`. With one process nothing of this runs.

Precision: CUDA uses autocast (bf16 where supported, else fp16 with a GradScaler);
on the CPU ``cpu_precision="auto"`` uses bf16 autocast only where the CPU has native bf16
(about 2x faster there; emulated bf16 is 2x *slower*; reports/benchmarks/pose2d.md), ``bf16`` asks for it
(falling back to fp32 with a warning where it is emulated) and ``fp32`` disables it. ``channels_last`` converts modules and 4-D
float batches (conv nets are 1.5-2x faster that way on the CPU).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pose3d.runtime import distributed, tracking
from pose3d.data.io import DataError, atomic_path

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"base.device = {device!r} but no CUDA device is available")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512_BF16 or AMX). Without it, oneDNN
    emulates bf16 and autocast is *slower* than fp32 (measured here: ResNet-18 at 128 px trains
    at 12 img/s in bf16 vs 23 img/s in fp32 on an AVX-512 Xeon without avx512_bf16)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return bool({"avx512_bf16", "amx_bf16"} & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision to run in: 'auto' -> bf16 where it is native (CUDA with bf16, CPUs with
    avx512_bf16/AMX), fp16 on older GPUs, else fp32; 'bf16' on a CPU that only emulates it ->
    fp32 with a warning."""
    if device.type == "cuda":
        if precision == "fp32":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision in ("bf16", "auto") and not cpu_has_native_bf16():
        if precision == "bf16":
            log.warning("this CPU has no native bf16 (avx512_bf16/amx): using fp32, which is faster here")
        return "fp32"
    return "bf16" if precision == "auto" else precision


def autocast(device: torch.device, precision: str):
    """The autocast context of a resolved ``precision``: bf16 on any device, fp16 on CUDA, else none."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def adam(params, **kw) -> torch.optim.Adam:
    """Adam with the fused kernel (one kernel over all tensors instead of a per-tensor loop):
    the loop took a quarter of a lifter's CPU step and ~10 % of pose_resnet's (fused: 10 vs
    53 ms per step on 4M parameters, 9 vs 40 ms on ResNet-18 + head, one thread). Same update
    rule, different rounding; runs on CUDA and CPU alike."""
    return torch.optim.Adam(params, fused=True, **kw)


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the pose3d package's source (every .py and .cpp file, by relative path and
    content): what a checkpoint must have been written by to be resumed."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".cpp") and p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


class LazyBatches:
    """A sized iterable of batches made on demand: ``make(i)`` for i in range(n) (what a
    ``train_batches(epoch)`` returns, so that batches are built only when reached).

    ``split(batch, rank, world)``: a rank's slice of a global batch under DDP (default
    :func:`pose3d.runtime.distributed.shard_batch`: every tensor cut along its first axis).
    The whole batch is made on every rank, so that augmentation drawn from one sequential
    generator per epoch gives each row what one process would have given it; or, with
    ``make_shard(i, rank, world)``, only the rank's slice of batch i (when its rows do not
    depend on the others': e.g. crops read from disk on demand)."""

    def __init__(self, n: int, make: Callable[[int], Any], split: Callable[[Any, int, int], Any] | None = None,
                 make_shard: Callable[[int, int, int], Any] | None = None):
        self.n, self.make, self.split, self.make_shard = n, make, split, make_shard

    def __len__(self):
        return self.n

    def __iter__(self):
        for i in range(self.n):
            yield self.make(i)

    def shard(self, rank: int, world: int) -> "LazyBatches":
        if self.make_shard is not None:
            return LazyBatches(self.n, lambda i: self.make_shard(i, rank, world))
        split = self.split or distributed.shard_batch
        return LazyBatches(self.n, lambda i: split(self.make(i), rank, world))


class _ShardedBatches:
    """Any sized iterable of global batches -> this rank's slices."""

    def __init__(self, batches: Iterable, rank: int, world: int):
        self.batches, self.rank, self.world = batches, rank, world

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        for b in self.batches:
            yield distributed.shard_batch(b, self.rank, self.world)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    device: str = "auto"
    cpu_precision: str = "auto"  # "auto" | "bf16" | "fp32" (see resolve_precision)
    channels_last: bool = False
    seed: int = 0
    checkpoint: Path | None = None
    curves_csv: Path | None = None
    grad_clip: float | None = None
    desc: str = "train"
    progress: bool = True


class StepContext:
    """What a step function sees: device, modules, optimisers, autocast and the update helper."""

    def __init__(self, trainer: "Trainer"):
        self._t = trainer
        self.device = trainer.device
        self.modules = trainer.modules
        self.optimizers = trainer.optimizers
        self.config = trainer.config
        self.epoch = 0
        self.global_step = 0

    def autocast(self):
        return self._t.autocast()

    def backward_step(self, loss: torch.Tensor, name: str, retain_graph: bool = False,
                      params: Iterable[torch.Tensor] | None = None) -> None:
        """zero_grad, backward (scaled under fp16 AMP), optional grad clip, optimiser step."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        scaler = self._t.scalers.get(name)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.config.desc}: non-finite loss {loss.item()} "
                                     f"at epoch {self.epoch} (optimiser {name!r})")
        if scaler is not None:
            scaler.scale(loss).backward(retain_graph=retain_graph)
            scaler.unscale_(opt)
        else:
            loss.backward(retain_graph=retain_graph)
        if self.config.grad_clip:
            ps = list(params) if params is not None else [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(ps, self.config.grad_clip)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def to_device(self, batch):
        return self._t.to_device(batch)


class Trainer:
    def __init__(self, modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
                 schedulers: Mapping[str, Any] | None = None, *, config: TrainConfig, run=None):
        self.config = config
        self.device = resolve_device(config.device)
        #: data-parallel under torchrun (WORLD_SIZE > 1); the plain loop otherwise
        self.distributed = distributed.init(self.device)
        self.device = distributed.device_of_rank(self.device)
        self.modules = dict(modules)
        for m in self.modules.values():
            m.to(self.device)
            if config.channels_last:
                m.to(memory_format=torch.channels_last)
        #: what step functions call: the modules, or under DDP their DistributedDataParallel wrappers
        self.step_modules: dict[str, Any] = self.modules
        self._bn_swaps: list = []
        if self.distributed:
            for m in self.modules.values():
                self._bn_swaps += distributed.sync_batchnorm(m, self.device)
            self.step_modules = {n: distributed.wrap(m, self.device) for n, m in self.modules.items()}
        self.optimizers = dict(optimizers)
        self.schedulers = dict(schedulers or {})
        self.run = run
        self.scalers: dict[str, Any] = {}
        if self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            self.scalers = {n: torch.amp.GradScaler("cuda") for n in self.optimizers}
        self.history: list[dict[str, float]] = []
        #: what the steps run in: "bf16"/"fp16" autocast on CUDA, config.cpu_precision resolved on the CPU
        self.precision = resolve_precision("auto" if self.device.type == "cuda" else config.cpu_precision,
                                           self.device)

    # ------------------------------------------------------------------ helpers
    def autocast(self):
        return autocast(self.device, self.precision)

    def to_device(self, batch):
        if isinstance(batch, torch.Tensor):
            x = batch.to(self.device, non_blocking=True)
            if self.config.channels_last and x.ndim == 4 and x.is_floating_point():
                x = x.contiguous(memory_format=torch.channels_last)
            return x
        if isinstance(batch, Mapping):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def _state(self, epoch: int, fingerprint: str) -> dict:
        return {
            "fingerprint": fingerprint,
            "code": code_digest(),
            "epoch": epoch,
            "modules": {n: m.state_dict() for n, m in self.modules.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            "history": self.history,
        }

    def save_checkpoint(self, epoch: int, fingerprint: str) -> None:
        if self.config.checkpoint is None or not distributed.is_main():
            return
        with atomic_path(self.config.checkpoint) as tmp:
            torch.save(self._state(epoch, fingerprint), tmp)

    def try_resume(self, fingerprint: str) -> int:
        """Load the checkpoint if it matches ``fingerprint``; return the next epoch to run."""
        path = self.config.checkpoint
        if path is None or not Path(path).exists():
            return 0
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as e:  # a damaged checkpoint is not fatal: start over
            log.warning("%s: unreadable checkpoint (%s); training from scratch", path, e)
            return 0
        if state.get("fingerprint") != fingerprint:
            log.info("%s: checkpoint is for other params; training from scratch", path)
            return 0
        if state.get("code") != code_digest():
            log.info("%s: checkpoint was written by other code; training from scratch", path)
            return 0
        for n, m in self.modules.items():
            m.load_state_dict(state["modules"][n])
        for n, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][n])
        for n, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][n])
        for n, s in self.scalers.items():
            if n in state.get("scalers", {}):
                s.load_state_dict(state["scalers"][n])
        self.history = list(state.get("history", []))
        # epochs count from 1 in logs and curves; state["epoch"] is the 0-based index of the last one
        log.info("%s: resuming after epoch %d of %d", path, int(state["epoch"]) + 1, self.config.epochs)
        return int(state["epoch"]) + 1

    def _write_curves(self) -> None:
        if self.config.curves_csv is None or not self.history or not distributed.is_main():
            return
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        with atomic_path(self.config.curves_csv) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                for row in self.history:
                    w.writerow({k: row.get(k, "") for k in keys})

    # ------------------------------------------------------------------ the loop
    def fit(self, step_fn: Callable[[StepContext, Any, int], Mapping[str, Any]],
            train_batches: Callable[[int], Iterable], evaluate: Callable[[StepContext, int], Mapping[str, float]] | None = None,
            fingerprint: str = "") -> list[dict[str, float]]:
        cfg = self.config
        seed_everything(cfg.seed)
        ctx = StepContext(self)
        start = self.try_resume(fingerprint)
        main = distributed.is_main()
        for epoch in range(start, cfg.epochs):
            ctx.epoch = epoch
            # per-epoch seed: epoch e is the same whether or not the run was resumed
            seed_everything(cfg.seed * 100_003 + epoch)
            for m in self.modules.values():
                m.train()
            sums: dict[str, float] = {}
            count = 0
            batches = train_batches(epoch)
            if self.distributed:  # this rank's slice of every global batch
                shard = getattr(batches, "shard", None)
                r, w = distributed.rank(), distributed.world_size()
                batches = shard(r, w) if shard is not None else _ShardedBatches(batches, r, w)
                ctx.modules = self.step_modules
            total = len(batches) if hasattr(batches, "__len__") else None
            bar = tqdm(batches, total=total, desc=f"{cfg.desc} {epoch + 1}/{cfg.epochs}",
                       leave=False, disable=not cfg.progress or not main, mininterval=2.0)
            for batch in bar:
                out = step_fn(ctx, self.to_device(batch), epoch)
                ctx.global_step += 1
                count += 1
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v)
                if count % 10 == 0:
                    bar.set_postfix({k: f"{v / count:.4g}" for k, v in list(sums.items())[:3]})
            for s in self.schedulers.values():
                s.step()
            row: dict[str, float] = {"epoch": epoch + 1}
            if self.distributed:
                ctx.modules = self.modules  # evaluate (rank 0) sees the plain modules
                row.update({f"train_{k}": v for k, v in distributed.mean_over_ranks(sums, count).items()})
            else:
                row.update({f"train_{k}": v / max(count, 1) for k, v in sums.items()})
            if evaluate is not None and main:
                for m in self.modules.values():
                    m.eval()
                with torch.no_grad():
                    row.update({k: float(v) for k, v in evaluate(ctx, epoch).items()})
            lrs = {f"lr_{n}": o.param_groups[0]["lr"] for n, o in self.optimizers.items()}
            row.update(lrs)
            self.history.append(row)
            if main:
                log.info("%s epoch %d/%d: %s", cfg.desc, epoch + 1, cfg.epochs,
                         ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
            if any(isinstance(v, float) and math.isnan(v) for v in row.values()):
                log.warning("%s: NaN in epoch metrics %s", cfg.desc, row)
            self._write_curves()
            if self.run is not None and main:
                self.run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            self.save_checkpoint(epoch, fingerprint)
        self._write_curves()
        if self.distributed:
            distributed.restore_batchnorm(self._bn_swaps)
            self._bn_swaps = []
            distributed.barrier()
            if not main:
                raise distributed.RankDone()
        return self.history


def save_model(model_dir: str | Path, module: nn.Module, config: Mapping[str, Any] | Any,
               name: str = "model.pt", example: torch.Tensor | None = None,
               dynamic_axes: tuple[int, ...] = (0,)) -> Path:
    """Write ``<model_dir>/<name>`` (state_dict) and ``config.json`` atomically.

    ``config`` is a dataclass or a mapping; it is what rebuilds the module.

    Inside a stage's MLflow run the module is also logged to it (``mlflow.pytorch``, see
    :meth:`pose3d.runtime.tracking.Run.log_model`) with ``example`` as its input example (axes
    ``dynamic_axes`` of any length in the signature). Without ``example``, an image model
    (``input_size`` in ``config``) gets one blank normalised crop ``(1, 3, S, S)``.
    """
    model_dir = Path(model_dir)
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    buf = io.BytesIO()  # not the temporary file: its random name would become the zip's root folder
    torch.save(state, buf)
    with atomic_path(model_dir / name) as tmp:
        tmp.write_bytes(buf.getvalue())
    with atomic_path(model_dir / "config.json") as tmp:
        tmp.write_text(json.dumps(cfg, indent=2, default=str) + "\n")
    if example is None and "input_size" in cfg:
        example = torch.zeros(1, 3, int(cfg["input_size"]), int(cfg["input_size"]))
    run = tracking.active_run()
    if run.active and example is not None:
        run.log_model(module, example, model_name=model_dir.name, dynamic_axes=dynamic_axes)
    return model_dir / name


def load_state(path: str | Path, map_location="cpu") -> dict:
    """Load a state_dict saved by :func:`save_model` (weights only, safe)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: model weights not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a pickle with code in it, a truncated or foreign file
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # torch colours its message
        first = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
        raise DataError(f"{path}: not loadable as plain weights ({first})") from None
