"""The one shape of a stage script: arguments, logging, typed params, tracking, one error policy.

    def main(argv=None) -> int:
        return cli.run_stage(__doc__, "triangulate", ARGS, triangulate.run_stage, argv=argv,
                             name=lambda a: f"triangulate@{a.method}")

:func:`run_stage` parses ``ARGS`` (flag -> argparse keywords) plus ``--params``, loads the
params section (a callable picks it from the arguments, e.g. ``lift --model repnet``) and
``base``, applies ``base.num_threads``, removes what a killed earlier run left of the outputs
(the arguments marked ``output=True``: temporary files; its MLflow run still RUNNING is marked
KILLED), opens the MLflow run (params logged as ``section.key``; the dataset of ``--mocap`` and
``--cameras`` logged as an input) and calls ``body(setup, args, run)``, which returns the line
to log.

Training stages pass ``torchrun=__file__``: with ``base.nproc > 1`` the stage re-launches itself
as that many processes under ``torch.distributed.run`` (:mod:`pose3d.runtime.distributed`) and
returns their exit status; each rank joins the process group, and only rank 0 removes stale
outputs, opens the MLflow run and writes; the other ranks exit 0 after training.

Errors: a params problem (unknown key, wrong type, out of range) or an unusable device exits 2
before anything is read; a :class:`~pose3d.data.io.DataError` (bad or missing input, named in
the message) is logged and exits 1, its MLflow run marked FAILED. Every output is written
atomically, so a failed stage leaves no half-written file.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from pose3d.runtime import distributed, params, tracking
from pose3d.data.io import DataError, remove_stale_temporaries
from pose3d.runtime.train import resolve_device

log = logging.getLogger("pose3d.stage")


@dataclass(frozen=True)
class StageSetup:
    params: Any  # the section's frozen dataclass
    base: params.Base
    device: torch.device
    flat: dict[str, Any]  # section.key -> value (and base.key), for MLflow


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def setup(section: str | None, params_path: str = "params.yaml", device: bool = True) -> StageSetup:
    """Configure logging and signals, load ``section`` (None: a tool without one) + ``base``
    and resolve the device.

    A params error or an unusable device is logged with the key and value, and the stage
    exits with status 2 before writing anything.
    """
    setup_logging()
    tracking.install_signal_handlers()
    try:
        p = params.load(section, params_path) if section else None
        base = params.load("base", params_path) if Path(params_path).exists() or section else params.Base()
        dev = resolve_device(base.device) if device else torch.device("cpu")
    except (params.ParamsError, RuntimeError) as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    if base.num_threads:
        torch.set_num_threads(base.num_threads)
    flat = {f"{section}.{k}": v for k, v in params.as_flat_dict(p).items()} if section else {}
    flat.update({f"base.{k}": v for k, v in params.as_flat_dict(base).items()})
    return StageSetup(p, base, dev, flat)


Body = Callable[[StageSetup, argparse.Namespace, tracking.Run], str]


def _log_dataset(run: tracking.Run, stage: str, files: list[str | None]) -> bool:
    """Log the dataset folder of ``files`` (mocap.h5, cameras.json) as an input of ``run``
    (name = folder name, source = the folder as the stage was given it, digest of the files);
    False when the stage has no such files or they do not exist yet."""
    if not all(f and Path(f).exists() for f in files):
        return False
    folder = Path(files[0]).parent
    run.log_dataset(folder.name, folder, files, context=stage)
    return True


def run_stage(doc: str, section: str | None | Callable[[argparse.Namespace], str],
              arguments: Mapping[str, Mapping[str, Any]], body: Body, *, argv=None,
              name: str | Callable[[argparse.Namespace], str] | None = None, device: bool = True,
              track: bool = True, torchrun: str | None = None) -> int:
    """Run one stage (see the module docstring); returns the exit status. ``track=False``: a
    tool outside the DAG (no MLflow run). ``torchrun``: the stage script's path, for a training
    stage that runs as ``base.nproc`` processes (DDP) when asked to."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    outputs = []
    for flag, kw in arguments.items():
        kw = dict(kw)
        if kw.pop("output", False):
            outputs.append(flag.lstrip("-").replace("-", "_"))
        ap.add_argument(flag, **kw)
    ap.add_argument("--params", default="params.yaml")
    a = ap.parse_args(argv)
    section = section(a) if callable(section) else section
    stage = name(a) if callable(name) else (name or section)
    s = setup(section, a.params, device=device)
    if torchrun is not None and distributed.should_launch(s.base.nproc):
        return distributed.launch(torchrun, list(sys.argv[1:] if argv is None else argv), s.base.nproc)
    joined = torchrun is not None and not distributed.active()  # a group this call creates
    ddp = torchrun is not None and distributed.init(s.device)
    try:
        if ddp and not distributed.is_main():
            return _follower_rank(stage, s, a, body)
        return _run(stage, s, a, body, outputs, track)
    finally:
        if ddp and joined:
            distributed.shutdown()


def _run(stage: str, s: StageSetup, a: argparse.Namespace, body: Body, outputs: list[str], track: bool) -> int:
    """The stage in one process (or rank 0 of several): stale outputs, the MLflow run, the body."""
    for dest in outputs:
        for p in [getattr(a, dest)] if isinstance(getattr(a, dest), str) else (getattr(a, dest) or []):
            for stale in remove_stale_temporaries(p):
                log.info("%s: removed %s, left by an interrupted run", stage, stale)
    dataset = [getattr(a, "mocap", None), getattr(a, "cameras", None)]
    try:
        with tracking.stage_run(stage=stage, params=s.flat, base=s.base, enabled=None if track else False) as run:
            read = _log_dataset(run, stage, dataset)  # a dataset the stage reads...
            summary = body(s, a, run)
            if not read:
                _log_dataset(run, stage, dataset)  # ...or writes (studio)
    except (DataError, params.ParamsError) as e:
        log.error("%s: %s", stage, e)
        return 1
    log.info("%s: %s", stage, summary)
    return 0


def _follower_rank(stage: str, s: StageSetup, a: argparse.Namespace, body: Body) -> int:
    """A rank other than 0 under torchrun: trains (no MLflow run, no files) and exits 0 when the
    Trainer says training is over (:class:`~pose3d.runtime.distributed.RankDone`)."""
    logging.getLogger().setLevel(logging.WARNING)  # rank 0 logs for all
    try:
        body(s, a, tracking.Run())
    except distributed.RankDone:
        return 0
    except (DataError, params.ParamsError) as e:
        log.error("%s (rank %d): %s", stage, distributed.rank(), e)
        return 1
    log.error("%s: rank %d finished without training", stage, distributed.rank())
    return 1
