"""What every stage script does first: logging, SIGTERM handling, typed params, device.

    s = cli.setup("triangulate", args.params)     # exits 2 on a params problem
    with tracking.stage_run("triangulate@ransac", params=s.flat, base=s.base) as run: ...

``s.flat`` holds the section's params flattened as ``section.key``, ready for MLflow.
Data stages that declare only ``base.mlflow*`` pass ``device=False``. ``base.num_threads`` (when > 0) is applied to torch here, once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from pose3d import params, tracking
from pose3d.train import resolve_device

log = logging.getLogger("pose3d.stage")


@dataclass(frozen=True)
class StageSetup:
    params: Any  # the section's frozen dataclass
    base: params.Base
    device: torch.device
    flat: dict[str, Any]


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def setup(section: str, params_path: str = "params.yaml", device: bool = True) -> StageSetup:
    """Configure logging and signals, load ``section`` + ``base`` and resolve the device.

    A params error (unknown key, wrong type, out of range) or an unusable device is logged
    with the key and value, and the stage exits with status 2 before writing anything.
    """
    setup_logging()
    tracking.install_signal_handlers()
    try:
        p = params.load(section, params_path)
        base = params.load("base", params_path)
        dev = resolve_device(base.device) if device else torch.device("cpu")
    except (params.ParamsError, RuntimeError) as e:
        log.error("%s", e)
        raise SystemExit(2) from None
    if base.num_threads:
        torch.set_num_threads(base.num_threads)
    flat = {f"{section}.{k}": v for k, v in params.as_flat_dict(p).items()}
    return StageSetup(p, base, dev, flat)
