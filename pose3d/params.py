"""Typed params: each params.yaml section is a frozen dataclass.

``load("repnet")`` reads ``params.yaml`` (or ``path``), checks the section against its
dataclass and returns an instance. An unknown key, a wrong type or an out-of-range value
raises :class:`ParamsError` naming the key (``repnet.reproj_weight``) and the value.
A stage loads only the sections it declares in dvc.yaml, so ``dvc exp run -S x.y=...``
re-runs exactly the stages that read ``x``.

Sections register themselves with ``@section("name")``. Range checks live in each
dataclass's ``validate`` method and call :func:`require`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SECTIONS: dict[str, type] = {}


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key and the value."""


def section(name: str):
    """Class decorator: register a frozen dataclass as the schema of params section ``name``."""

    def deco(cls):
        cls = dataclass(frozen=True)(cls)
        cls._section = name
        SECTIONS[name] = cls
        return cls

    return deco


def require(ok: bool, key: str, value: Any, what: str) -> None:
    """Raise ParamsError('<key> = <value>: <what>') unless ``ok``."""
    if not ok:
        raise ParamsError(f"{key} = {value!r}: {what}")


def _convert(tp, value, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{key} = {value!r}: expected a mapping")
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, key)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(errors[0] if len(errors) == 1 else f"{key} = {value!r}: expected {tp}")
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{key} = {value!r}: expected one of {list(args)}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{key} = {value!r}: expected a list")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if origin is tuple:
            if len(value) != len(args):
                raise ParamsError(f"{key} = {value!r}: expected {len(args)} values")
            return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        return [_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key} = {value!r}: expected a mapping")
        return {str(k): _convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key} = {value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key} = {value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key} = {value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key} = {value!r}: expected a string")
        return value
    raise TypeError(f"params: unsupported annotation {tp!r} for {key}")


def from_dict(cls, data: dict, prefix: str | None = None):
    """Build dataclass ``cls`` from ``data``; unknown/missing keys and bad values raise."""
    prefix = prefix or getattr(cls, "_section", cls.__name__)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ParamsError(f"{prefix}.{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}"
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{key}: missing required key")
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):
        obj.validate(prefix)
    return obj


def read_yaml(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections")
    return data


def load(name: str, path: str | Path = "params.yaml"):
    """Load and validate params section ``name`` from ``path``."""
    if name not in SECTIONS:
        raise ParamsError(f"{name}: no such params section (known: {', '.join(sorted(SECTIONS))})")
    data = read_yaml(path)
    if name not in data:
        raise ParamsError(f"{path}: missing section '{name}'")
    return from_dict(SECTIONS[name], data[name] or {}, name)


def as_flat_dict(obj, prefix: str = "") -> dict[str, Any]:
    """Flatten a params dataclass to {'section.key.sub': value} (for MLflow)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            out.update(as_flat_dict(v, key + "."))
        elif isinstance(v, dict):
            for k, vv in v.items():
                out[f"{key}.{k}"] = vv
        else:
            out[key] = v
    return out


def fingerprint(*objs) -> str:
    """A short stable hash of params dataclasses (used to decide if a checkpoint matches)."""
    import hashlib
    import json

    blob = json.dumps([dataclasses.asdict(o) for o in objs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# =====================================================================================
# Sections. Each owner extends its own dataclass; keep defaults equal to params.yaml.
# =====================================================================================
@section("base")
class Base:
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: CPU precision for training: fp32 or bf16 autocast (CUDA always uses AMP).
    cpu_precision: Literal["fp32", "bf16"] = "bf16"
    num_threads: int = 0  # 0 = torch default
    mlflow: bool = True
    mlflow_experiment: str = "pose3d"

    def validate(self, p):
        require(self.num_threads >= 0, f"{p}.num_threads", self.num_threads, "must be >= 0")


@section("evaluate")
class Evaluate:
    #: which mocap split the numbers come from: test | train | all
    split: Literal["test", "train", "all"] = "test"
    pck_threshold_mm: float = 150.0
    auc_max_mm: float = 150.0
    auc_steps: int = 31
    #: extra numbers on a joint subset (by H36M-17 name); empty = none. For real mocap, the 13
    #: reliable joints (all but spine, thorax, neck_nose, head_top).
    joint_subset: tuple[str, ...] = ()
    subset_name: str = "subset"
    #: the side-by-side animation: frames, stride in source frames, playback fps, dpi
    gif_frames: int = 30
    gif_step: int = 2
    gif_fps: float = 10.0
    gif_dpi: int = 50

    def validate(self, p):
        from pose3d.skeleton import JOINT_NAMES

        for k in ("pck_threshold_mm", "auc_max_mm", "gif_fps"):
            require(getattr(self, k) > 0, f"{p}.{k}", getattr(self, k), "must be > 0")
        require(self.auc_steps >= 2, f"{p}.auc_steps", self.auc_steps, "must be >= 2")
        for k in ("gif_frames", "gif_step", "gif_dpi"):
            require(getattr(self, k) >= 1, f"{p}.{k}", getattr(self, k), "must be >= 1")
        bad = [n for n in self.joint_subset if n not in JOINT_NAMES]
        require(not bad, f"{p}.joint_subset", list(self.joint_subset), f"unknown joint names {bad}")
        require(self.subset_name.isidentifier(), f"{p}.subset_name", self.subset_name,
                "must be a short identifier (it becomes part of metric keys)")


@section("prepare")
class Prepare:
    """Bring your own data: convert a Human3.6M layout into ``data/prepared`` (docs/byod.md)."""

    #: none (default: writes empty files, the studio drives the DAG) | vp3d | h36m_fetch |
    #: learnable_triangulation | gluon_annot
    layout: Literal["none", "vp3d", "h36m_fetch", "learnable_triangulation", "gluon_annot"] = "none"
    #: the layout's main input: data_3d_h36m.npz | processed/ folder | labels .npy | Gluon root
    source: str = ""
    #: vp3d only: data_2d_h36m_<source>.npz imported as detections ("" = none)
    source_2d: str = ""
    #: camera file for vp3d and h36m_fetch: Martinez cameras.h5 or VideoPose3D-form .json
    cameras: str = ""
    #: image root ("" = the layout's usual place; "none" = no image folders)
    images: str = ""
    #: VideoPose3D's npz and learnable-triangulation's npy are pickles: read only when true
    allow_pickle: bool = False
    subjects: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
    test_subjects: tuple[str, ...] = ("S9", "S11")
    #: S11 Directions: camera 54138969's video is damaged; drop these actions of S11 when true
    drop_s11_directions: bool = True
    s11_directions_actions: tuple[str, ...] = ("Directions-2",)
    #: S9 sequences with damaged 3D ground truth; dropped when true
    drop_s9_damaged: bool = True
    s9_damaged_actions: tuple[str, ...] = ("Greeting-2", "SittingDown-2", "Waiting-1")
    #: frame sampling: 1 = all frames at 50 fps; n = every n-th frame (50/n fps)
    every_nth: int = 1
    source_fps: float = 50.0
    #: vp3d: cut 2D sequences longer than the 3D (VideoPose3D does); shorter 2D is an error
    trim_extra_2d: bool = True
    link_mode: Literal["symlink", "copy"] = "symlink"

    def validate(self, p):
        require(self.every_nth >= 1, f"{p}.every_nth", self.every_nth, "must be >= 1")
        require(self.source_fps > 0, f"{p}.source_fps", self.source_fps, "must be > 0")
        require(self.layout == "none" or bool(self.source), f"{p}.source", self.source,
                f"required for layout {self.layout}")
        require(self.layout not in ("vp3d", "h36m_fetch") or bool(self.cameras), f"{p}.cameras",
                self.cameras, f"layout {self.layout} needs a camera file (cameras.h5 or .json)")
        require(self.layout == "vp3d" or not self.source_2d, f"{p}.source_2d", self.source_2d,
                "only the vp3d layout has 2D files")
