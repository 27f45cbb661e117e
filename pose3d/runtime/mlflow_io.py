"""What pose3d puts into MLflow besides params and metrics: trained models and dataset inputs.

:mod:`pose3d.runtime.tracking` imports this module only where it imports ``mlflow`` itself (a stage
with tracking off never loads MLflow).

Models: :func:`log_torch_model` logs a module with ``mlflow.pytorch.log_model`` under the
name ``model`` (so ``mlflow.pytorch.load_model("runs:/<run id>/model")`` works), with a tensor
signature and an input example. That format is a (cloud)pickle of the module, for MLflow users only:
pose3d's own loaders read ``models/<name>/model.pt`` with ``torch.load(weights_only=True)``.
Loading the pickle needs ``pose3d`` importable (``pip install -e .`` of a clone).
"""

from __future__ import annotations

import copy
import os
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Sequence

import mlflow.pytorch
import numpy as np
import torch
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from pose3d.data.io import file_digest


# --------------------------------------------------------------------------- models
def _spec(t: torch.Tensor, dynamic_axes: Sequence[int], name: str | None = None) -> TensorSpec:
    shape = tuple(-1 if i in dynamic_axes else int(n) for i, n in enumerate(t.shape))
    return TensorSpec(np.dtype(str(t.dtype).removeprefix("torch.")), shape, name)


def signature_of(module: torch.nn.Module, example: torch.Tensor,
                 dynamic_axes: Sequence[int] = (0,)) -> ModelSignature:
    """The tensor signature of ``module`` on ``example``; ``dynamic_axes`` (batch, and time for
    sequence models) are -1. A tuple output (HG3D: heatmaps, depth maps) gives named outputs
    ``output_0``, ``output_1``, ... with their batch axis dynamic."""
    with torch.no_grad():
        out = module(example)
    inputs = Schema([_spec(example, dynamic_axes)])
    if isinstance(out, torch.Tensor):
        return ModelSignature(inputs, Schema([_spec(out, dynamic_axes)]))
    return ModelSignature(inputs, Schema([_spec(o, (0,), f"output_{i}") for i, o in enumerate(out)]))


def log_torch_model(module: torch.nn.Module, example: torch.Tensor, *, dynamic_axes: Sequence[int] = (0,),
                    registered_name: str | None = None) -> str:
    """Log a copy of ``module`` (CPU, eval mode) as ``model`` of the active run, with its
    signature and ``example`` as the input example; register it as ``registered_name`` when
    given. Returns the model URI (``models:/<model id>``)."""
    model = copy.deepcopy(module).cpu().eval()
    example = example.detach().cpu()
    info = mlflow.pytorch.log_model(
        model, name="model", signature=signature_of(model, example, dynamic_axes),
        input_example=example.numpy(), registered_model_name=registered_name,
        # the module itself (cloudpickle), not MLflow's default torch.export graph: that one is
        # specialised to the example's shapes (the lifters' batch x time reshape), this one is
        # the stage's own class and predicts the same on any batch and sequence length
        serialization_format="pickle",
        # pinned here: inferring them would start a second Python that loads the model
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                          f"cloudpickle=={version('cloudpickle')}", f"numpy=={np.__version__}"])
    return info.model_uri


# --------------------------------------------------------------------------- datasets
def dataset_input(name: str, folder: str | os.PathLike, files: Sequence[str | os.PathLike]) -> tuple[MetaDataset, dict]:
    """A dataset entry for ``mlflow.log_input``: ``name``, the digest of ``files`` in order
    (SHA-256, 16 hex), source ``folder`` as given (relative to the repo in the stages), and
    tags with each file's own digest."""
    with warnings.catch_warnings():  # the local source is registered twice by MLflow itself
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(folder))
    tags = {Path(f).name: file_digest(f) for f in files if Path(f).exists()}
    return MetaDataset(source, name=name, digest=file_digest(*files)), tags
