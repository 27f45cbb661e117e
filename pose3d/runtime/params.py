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
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pose3d.skeleton import JOINT_NAMES

SECTIONS: dict[str, type] = {}


class ParamsError(ValueError):
    """A params.yaml problem; the message names the key and the value."""


def section(name: str):
    """Class decorator: register a frozen dataclass as the schema of params section ``name``."""

    def deco(cls):
        # a class decorated with @dataclass itself (e.g. for default_factory fields) is kept;
        # a subclass of a dataclass still needs its own fields processed
        if "__dataclass_fields__" not in cls.__dict__:
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
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
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

    def fields(o) -> dict:
        d = dataclasses.asdict(o)
        for k in getattr(o, "_fingerprint_exclude", ()):
            d.pop(k, None)
        return d

    blob = json.dumps([fields(o) for o in objs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@section("dataset")
class Dataset:
    """Where downstream stages read data (interpolated into dvc.yaml paths, not read by code)."""

    root: str = "data/studio"
    detections: str = "data/detections_2d.parquet"

    def validate(self, p):
        require(bool(self.root), f"{p}.root", self.root, "must name a folder")
        require(self.detections.endswith(".parquet"), f"{p}.detections", self.detections,
                "must be a .parquet file")


# =====================================================================================
# Sections. Each owner extends its own dataclass; keep defaults equal to params.yaml.
# =====================================================================================
@section("base")
class Base:
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: CPU precision for training: auto (bf16 where the CPU has it natively), fp32 or bf16
    #: autocast (CUDA always uses AMP).
    cpu_precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_threads: int = 0  # 0 = torch default
    mlflow: bool = True
    mlflow_experiment: str = "pose3d"
    #: processes per training stage (train_2d, lift@*, train_hg3d): > 1 re-launches the stage
    #: under torchrun with DistributedDataParallel (pose3d.runtime.distributed); batch sizes
    #: stay global, so it changes the speed, not the results (up to float rounding)
    nproc: int = 1

    #: keys left out of checkpoint fingerprints (:func:`fingerprint`): how many processes train
    #: does not change what is trained, so a run may resume with another count
    _fingerprint_exclude = ("nproc",)

    def validate(self, p):
        require(self.num_threads >= 0, f"{p}.num_threads", self.num_threads, "must be >= 0")
        require(self.nproc >= 1, f"{p}.nproc", self.nproc, "must be >= 1")


# ------------------------------------------------------------------ lifters
@dataclass(frozen=True)
class LifterParams:
    """Fields every lifter section has (a new lifter's section subclasses it)."""

    #: 2D input: "detections" = data/detections_2d.parquet (train subjects' own detections for
    #: training, as with a real dataset), "gt" = the camera model's projection of the mocap
    #: (+ Gaussian noise_px).
    input_2d: Literal["gt", "detections"] = "detections"
    noise_px: float = 0.0
    #: rotate training poses about the vertical axis and re-project (virtual cameras)
    virtual_cameras: bool = True
    virtual_max_deg: float = 180.0
    flip_aug: bool = True   # mirror training poses left/right (by joint names)
    flip_tta: bool = True   # average with the mirrored input's prediction at test time
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    lr_decay: float = 0.95  # exponential decay per epoch
    train_stride: int = 1   # use every k-th training frame (CPU budget)

    def validate(self, p):
        require(self.noise_px >= 0, f"{p}.noise_px", self.noise_px, "must be >= 0")
        require(0 <= self.virtual_max_deg <= 180, f"{p}.virtual_max_deg", self.virtual_max_deg,
                "must be in [0, 180]")
        require(self.epochs >= 1, f"{p}.epochs", self.epochs, "must be >= 1")
        require(self.batch_size >= 2, f"{p}.batch_size", self.batch_size, "must be >= 2")
        require(self.lr > 0, f"{p}.lr", self.lr, "must be > 0")
        require(0 < self.lr_decay <= 1, f"{p}.lr_decay", self.lr_decay, "must be in (0, 1]")
        require(self.train_stride >= 1, f"{p}.train_stride", self.train_stride, "must be >= 1")


@section("martinez")
@dataclass(frozen=True)  # explicit: the base is already a dataclass
class Martinez(LifterParams):
    epochs: int = 20
    lr_decay: float = 0.93
    hidden: int = 1024
    num_blocks: int = 2
    dropout: float = 0.5
    max_norm: float = 1.0

    def validate(self, p):
        super().validate(p)
        require(self.hidden >= 1, f"{p}.hidden", self.hidden, "must be >= 1")
        require(0 <= self.dropout < 1, f"{p}.dropout", self.dropout, "must be in [0, 1)")


@section("repnet")
@dataclass(frozen=True)  # explicit: the base is already a dataclass
class RepNet(LifterParams):
    epochs: int = 30
    batch_size: int = 32            # RepNet's
    lr: float = 2e-4
    hidden: int = 1000
    num_blocks: int = 2
    critic_hidden: int = 100
    critic_kcs_hidden: int = 1000
    #: reprojection weight at epoch 0, multiplied by reproj_growth each epoch up to reproj_max
    reproj_weight: float = 1.0
    reproj_growth: float = 1.3
    reproj_max: float = 10.0
    camera_weight: float = 1.0
    adv_weight: float = 1.0
    gp_weight: float = 10.0
    #: lazy regularisation: the gradient penalty on every gp_every-th critic step, weighted x gp_every
    gp_every: int = 1
    critic_steps: int = 2
    critic_lr: float = 4e-4
    #: input 2D scale: one global RMS radius (global) or each pose's own (sample)
    norm_2d: Literal["global", "sample"] = "global"

    def validate(self, p):
        super().validate(p)
        require(self.gp_every >= 1, f"{p}.gp_every", self.gp_every, "must be >= 1")
        require(self.reproj_weight >= 0, f"{p}.reproj_weight", self.reproj_weight, "must be >= 0")
        require(self.reproj_growth >= 1, f"{p}.reproj_growth", self.reproj_growth, "must be >= 1")
        require(self.critic_steps >= 1, f"{p}.critic_steps", self.critic_steps, "must be >= 1")


@section("temporal")
@dataclass(frozen=True)  # explicit: the base is already a dataclass
class Temporal(LifterParams):
    epochs: int = 60
    batch_size: int = 128
    lr: float = 3e-3
    lr_decay: float = 0.965
    filter_widths: tuple[int, ...] = (3, 3)
    causal: bool = False
    dropout: float = 0.0
    channels: int = 256
    traj_channels: int = 128
    traj_weight: float = 1.0
    #: weight of a velocity term ||(y_t+1 - y_t) - (gt_t+1 - gt_t)|| on pairs of adjacent
    #: output frames (0 = VideoPose3D's MPJPE only); pairs are two strided windows one frame
    #: apart with the same augmentation, so batch_size windows are batch_size / 2 pairs
    velocity_weight: float = 5.0
    #: semi-supervision: 3D labels only for labeled_subjects ([] = every train subject);
    #: unlabeled_subjects contribute 2D only (reprojection through the known intrinsics and
    #: the temporal discriminator). A subject may not be in both.
    labeled_subjects: tuple[str, ...] = ()
    unlabeled_subjects: tuple[str, ...] = ()
    reproj_weight: float = 1.0
    #: weight of the temporal critic (0: no critic); 0.05 cost 3-9 mm P2 on the held-out train
    #: subject in every setting measured (reports/benchmarks/lifting.md, session 8)
    adv_weight: float = 0.0
    #: VideoPose3D's mean-bone-length match of the unlabelled batch to the labelled one; 0: on the
    #: studio's subjects (sizes up to 20 % apart) it forces the labelled subject's size on the
    #: others and cost 9 mm P1 on the held-out train subject (reports/benchmarks/lifting.md)
    bone_weight: float = 0.0
    gp_weight: float = 10.0
    gan_frames: int = 9       # length of the 3D sequences the discriminator judges
    critic_lr: float = 1e-4
    #: epochs on the labelled subjects alone before the unlabelled losses start (VideoPose3D)
    semi_warmup_epochs: int = 30
    #: the reprojection's gradient also trains the trajectory net (False: the pose net only)
    reproj_trains_traj: bool = True
    #: the critic judges sequences divided by their mean bone length (shape and motion only)
    critic_scale_free: bool = False
    #: ground contact of the unlabelled predictions through the known extrinsics: |lower ankle's
    #: height - the labelled subjects' median| (metres); anchors depth and scale
    floor_weight: float = 1.0
    #: the floor term moves the trajectory only (the pose's shape is left to the other losses)
    floor_root_only: bool = False
    #: the unlabelled forward passes update BatchNorm's running statistics (False: only the
    #: labelled batches do, so the test-time statistics are those the supervised losses saw)
    unlabeled_bn_stats: bool = True

    def validate(self, p):
        super().validate(p)
        require(len(self.filter_widths) >= 1 and all(w >= 1 and w % 2 == 1 for w in self.filter_widths),
                f"{p}.filter_widths", self.filter_widths, "must be odd positive integers")
        require(not set(self.labeled_subjects) & set(self.unlabeled_subjects),
                f"{p}.unlabeled_subjects", self.unlabeled_subjects, "overlaps labeled_subjects")
        require(self.gan_frames >= 7, f"{p}.gan_frames", self.gan_frames, "must be >= 7")
        require(0 <= self.semi_warmup_epochs, f"{p}.semi_warmup_epochs", self.semi_warmup_epochs,
                "must be >= 0")


# ------------------------------------------------------------------ 2D pose
@section("extract")
class Extract:
    crop_size: int = 96             # S: crops are S x S (the 2D network's input size)
    frame_stride: int = 1           # keep frames 0, k, 2k, ... of every video
    box_source: Literal["gt", "background"] = "gt"
    box_margin: float = 0.25        # square box side = max(w, h) of the person * (1 + margin)
    bg_frames: int = 25             # frames sampled per video for the median background
    bg_threshold: float = 30.0      # |frame - background| (0..255) above which a pixel is foreground
    on_error: Literal["raise", "skip"] = "raise"  # a corrupt/truncated video: fail, or skip and count
    compression: int = 1            # gzip level of crops.h5 (0-9)

    def validate(self, p):
        require(16 <= self.crop_size <= 1024 and self.crop_size % 32 == 0, f"{p}.crop_size",
                self.crop_size, "must be a multiple of 32 in [32, 1024]")
        require(self.frame_stride >= 1, f"{p}.frame_stride", self.frame_stride, "must be >= 1")
        require(self.box_margin >= 0, f"{p}.box_margin", self.box_margin, "must be >= 0")
        require(self.bg_frames >= 3, f"{p}.bg_frames", self.bg_frames, "must be >= 3")
        require(0 < self.bg_threshold < 255, f"{p}.bg_threshold", self.bg_threshold, "must be in (0, 255)")
        require(0 <= self.compression <= 9, f"{p}.compression", self.compression, "must be in [0, 9]")


@section("pose2d")
class Pose2D:
    architecture: str = "pose_resnet"  # a name of pose3d.tasks.pose2d.MODELS_2D
    depth: Literal[18, 34, 50, 101, 152] = 18
    deconv_channels: int = 128
    deconv_kernel: Literal[2, 3, 4] = 4
    num_deconv: int = 3
    sigma: float = 1.5              # Gaussian target sigma, heatmap pixels
    epochs: int = 14
    batch_size: int = 32
    lr: float = 2e-3                # Adam
    lr_schedule: Literal["step", "cosine"] = "step"  # step: lr_steps/lr_factor; cosine: lr -> 0 over epochs
    lr_steps: tuple[int, ...] = (10, 13)  # epochs after which lr *= lr_factor (lr_schedule: step)
    lr_factor: float = 0.1
    weight_decay: float = 0.0
    max_train_crops: int = 0        # 0 = every train crop; else an evenly spaced subset
    warmup_epochs: int = 0          # the first epochs train (and validate) on crops resampled to
    warmup_size: int = 64           # warmup_size px: cheaper steps while the net learns left from right
    val_max_crops: int = 256        # test-subject crops scored after every epoch
    channels_last: bool = True
    # augmentation
    aug_scale: float = 0.15
    aug_rotation: float = 10.0      # degrees (sigma; clipped at 2 sigma)
    aug_rotation_prob: float = 0.3
    aug_flip_prob: float = 0.5
    aug_color: float = 0.2
    aug_brightness: float = 0.2
    aug_shift: float = 0.05
    # decoding (validation)
    flip_test: bool = True
    decode: Literal["argmax", "quarter", "dark"] = "dark"

    def validate(self, p):
        require(self.num_deconv in (1, 2, 3), f"{p}.num_deconv", self.num_deconv, "must be 1, 2 or 3")
        require(self.sigma > 0, f"{p}.sigma", self.sigma, "must be > 0")
        require(self.epochs >= 1, f"{p}.epochs", self.epochs, "must be >= 1")
        require(self.batch_size >= 2, f"{p}.batch_size", self.batch_size, "must be >= 2")
        require(self.lr > 0, f"{p}.lr", self.lr, "must be > 0")
        require(0 < self.lr_factor <= 1, f"{p}.lr_factor", self.lr_factor, "must be in (0, 1]")
        require(self.max_train_crops >= 0, f"{p}.max_train_crops", self.max_train_crops, "must be >= 0")
        require(0 <= self.warmup_epochs < self.epochs, f"{p}.warmup_epochs", self.warmup_epochs,
                "must be >= 0 and < epochs")
        require(self.warmup_size >= 32 and self.warmup_size % 32 == 0, f"{p}.warmup_size", self.warmup_size,
                "must be a multiple of 32 (the backbone's stride), >= 32")
        require(self.val_max_crops >= 1, f"{p}.val_max_crops", self.val_max_crops, "must be >= 1")
        require(0 <= self.aug_scale < 1, f"{p}.aug_scale", self.aug_scale, "must be in [0, 1)")
        for k in ("aug_rotation_prob", "aug_flip_prob"):
            require(0 <= getattr(self, k) <= 1, f"{p}.{k}", getattr(self, k), "must be in [0, 1]")


@section("detect")
class Detect:
    batch_size: int = 64
    flip_test: bool = True
    decode: Literal["argmax", "quarter", "dark"] = "dark"
    #: backbone precision; auto = bf16 on CUDA or on CPUs with native bf16, else fp32.
    #: The heatmap layer and decoding always run in fp32.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    figure_crops: int = 16          # test crops drawn in reports/figures/detect_2d_crops.png

    def validate(self, p):
        require(self.batch_size >= 1, f"{p}.batch_size", self.batch_size, "must be >= 1")
        require(self.figure_crops >= 1, f"{p}.figure_crops", self.figure_crops, "must be >= 1")


# ------------------------------------------------------------------ hg3d
@section("hg3d")
class HG3DParams:
    """Image -> 3D, pose-hg-3d style (Zhou et al. 2017): stage ``train_hg3d``."""

    #: training subjects that keep their 3D labels / that are treated as 2D-only
    subjects_3d: list[str] = field(default_factory=lambda: ["S1", "S5"])
    subjects_2d_only: list[str] = field(default_factory=lambda: ["S6", "S7", "S8"])
    input_size: int = 64    # CPU budget (128 costs 4x)
    resnet_depth: int = 18
    depth_channels: int = 128
    depth_blocks: int = 1
    init_from_2d: bool = True  # start the 2D module from models/pose2d (the 2D stage)
    epochs_2d: int = 0      # phase 1: heatmaps on all training images (0: models/pose2d is phase 1)
    epochs_3d: int = 8      # phase 2: + depth regression on the 3D-labelled images
    epochs_joint: int = 8   # phase 3: all images; depth on 3D ones, constraint on 2D-only ones
    samples_per_epoch: int = 2048  # 0 = every crop of the phase's pool each epoch (8 + 8 epochs = 32k samples: the learning curve's knee)
    frame_stride: int = 1   # use every k-th crop
    batch_size: int = 32
    lr: float = 1.0e-3
    sigma: float = 1.0      # heatmap Gaussian sigma, heatmap px
    depth_weight: float = 1.0
    geo_weight: float = 0.02  # 0 turns the geometric constraint off
    geo_groups: Literal["side", "limbs", "pairs", "all"] = "limbs"  # limbs: side without the hip/shoulder bones; pairs: the paper's 4 left/right groups
    flip: bool = True
    channels_last: bool = True

    def validate(self, p):
        require(len(self.subjects_3d) > 0, f"{p}.subjects_3d", self.subjects_3d, "needs at least one subject")
        both = sorted(set(self.subjects_3d) & set(self.subjects_2d_only))
        require(not both, f"{p}.subjects_2d_only", self.subjects_2d_only, f"overlaps subjects_3d in {both}")
        require(self.input_size % 32 == 0 and self.input_size >= 64, f"{p}.input_size", self.input_size,
                "must be a multiple of 32, >= 64")
        require(self.resnet_depth in (18, 34, 50, 101, 152), f"{p}.resnet_depth", self.resnet_depth,
                "must be 18, 34, 50, 101 or 152")
        for k in ("epochs_2d", "epochs_3d", "epochs_joint", "samples_per_epoch", "depth_blocks"):
            require(getattr(self, k) >= 0, f"{p}.{k}", getattr(self, k), "must be >= 0")
        require(self.epochs_3d + self.epochs_joint >= 1, f"{p}.epochs_3d", self.epochs_3d,
                "phases 2 and 3 together need at least one epoch (the depth branch)")
        require(self.frame_stride >= 1, f"{p}.frame_stride", self.frame_stride, "must be >= 1")
        require(self.batch_size >= 2, f"{p}.batch_size", self.batch_size, "must be >= 2")
        for k in ("lr", "sigma", "depth_channels"):
            require(getattr(self, k) > 0, f"{p}.{k}", getattr(self, k), "must be > 0")
        for k in ("depth_weight", "geo_weight"):
            require(getattr(self, k) >= 0, f"{p}.{k}", getattr(self, k), "must be >= 0")


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
    gif_step: int = 1
    gif_fps: float = 10.0
    gif_dpi: int = 70
    #: the 3D skeleton video (mp4: the camera's frames with the 2D detections beside one method's
    #: 3D): which sequence as "<subject>/<action>/<camera>" ("" = the animation's sequence and
    #: camera) and which method's 3D
    video_sequence: str = ""
    video_method: str = "temporal"

    def validate(self, p):

        for k in ("pck_threshold_mm", "auc_max_mm", "gif_fps"):
            require(getattr(self, k) > 0, f"{p}.{k}", getattr(self, k), "must be > 0")
        require(self.auc_steps >= 2, f"{p}.auc_steps", self.auc_steps, "must be >= 2")
        for k in ("gif_frames", "gif_step", "gif_dpi"):
            require(getattr(self, k) >= 1, f"{p}.{k}", getattr(self, k), "must be >= 1")
        require(self.video_sequence == "" or self.video_sequence.count("/") == 2, f"{p}.video_sequence",
                self.video_sequence, 'must be "" or "<subject>/<action>/<camera>"')
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


@section("studio")
class Studio:
    """The studio (stage ``studio``): procedural or real mocap filmed by a Human3.6M-like rig."""

    #: procedural = synthetic subjects and actions; mocap = real mocap from ``mocap_path``
    source: Literal["procedural", "mocap"] = "procedural"
    #: subject -> split (train | test); for source mocap the subject ids of the mocap data
    subjects: dict[str, str] = field(default_factory=lambda: {
        "S1": "train", "S5": "train", "S6": "train", "S7": "train", "S8": "train",
        "S9": "test", "S11": "test"})
    #: procedural actions (Human3.6M names); for source mocap a filter on take names ([] = all)
    actions: tuple[str, ...] = ("Directions", "Discussion", "Eating", "Greeting", "Phoning",
                                "Photo", "Posing", "Purchases", "Sitting", "SittingDown",
                                "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether")
    seconds: float = 3.0          # per procedural sequence (mocap takes: at most max_seconds)
    max_seconds: float = 10.0
    fps: float = 10.0
    width: int = 512
    height: int = 512
    num_cameras: int = 4
    camera_distance: float = 4.5  # m from the volume centre
    camera_height: float = 1.5    # m above the floor
    seed: int = 0
    #: real mocap: the shared npz, or a folder <subject>/<take>.bvh|.amc (one .asf per subject)
    mocap_path: str = ""
    #: BVH files carry no unit: metres per file unit (CMU: 1/0.45 inch = 0.0564444 m)
    bvh_unit_m: float = 0.0564444
    render: bool = True           # false: only mocap.h5 and cameras.json (fast)
    workers: int = 0              # render processes; 0 = all CPU cores

    def validate(self, p):
        require(self.fps > 0, f"{p}.fps", self.fps, "must be > 0")
        require(self.seconds > 0, f"{p}.seconds", self.seconds, "must be > 0")
        require(self.max_seconds > 0, f"{p}.max_seconds", self.max_seconds, "must be > 0")
        require(self.width >= 32 and self.height >= 32, f"{p}.width", (self.width, self.height),
                "images must be at least 32x32")
        require(self.num_cameras >= 1, f"{p}.num_cameras", self.num_cameras, "must be >= 1")
        require(self.camera_distance > 1.0, f"{p}.camera_distance", self.camera_distance, "must be > 1 m")
        require(self.workers >= 0, f"{p}.workers", self.workers, "must be >= 0")
        require(self.bvh_unit_m > 0, f"{p}.bvh_unit_m", self.bvh_unit_m, "must be > 0")
        require(len(self.subjects) > 0, f"{p}.subjects", self.subjects, "needs at least one subject")
        for s, split in self.subjects.items():
            require(split in ("train", "test"), f"{p}.subjects.{s}", split, "split must be train or test")
        require(self.source == "procedural" or bool(self.mocap_path), f"{p}.mocap_path",
                self.mocap_path, "required when source is mocap")
        if self.source == "procedural":
            from pose3d.data.studio.motion import ACTIONS
            for a in self.actions:
                require(a in ACTIONS, f"{p}.actions", a, f"unknown action (known: {', '.join(ACTIONS)})")


@section("triangulate")
class Triangulate:
    #: 2D input: the cached detections, or the ground truth projected with each camera + noise
    input: Literal["detections", "gt"] = "detections"
    noise_px: float = 0.0             # Gaussian std added to GT 2D (input: gt)
    split: Literal["test", "train", "all"] = "test"
    score_threshold: float = 0.2      # detections below are dropped (treated as missing)
    weighted: bool = True             # scores as DLT row weights
    refine: bool = False              # Levenberg-Marquardt on the reprojection error after DLT
    refine_iters: int = 10
    ransac_threshold_px: float = 15.0
    ransac_min_inliers: int = 2
    ransac_max_hypotheses: int = 64   # view pairs tried (all pairs when fewer)
    #: RANSAC inlier threshold = scale x this quantile of the detector's 2D error on the training
    #: subjects (detections vs projected ground truth); 0 = the constant ransac_threshold_px
    ransac_threshold_quantile: float = 0.5
    ransac_threshold_scale: float = 8.0
    swap_hypotheses: bool = False     # ransac: also try each view's left/right-swapped limb labels
    swap_penalty: float = 0.5         # MSAC cost of a swapped view, in units of threshold^2
    #: detection scores -> DLT weights: as they are ("none") or through a per-joint monotone map of
    #: the 2D error fitted on the training subjects ("isotonic")
    score_calibration: Literal["none", "isotonic"] = "isotonic"
    smooth_cutoff_hz: float = 3.0     # > 0: also report smoothed_* metrics (zero-phase Butterworth)
    smooth_order: int = 2
    prob_reference_camera: str = ""   # "" = each subject's first camera
    prob_window: int = 0              # frames per camera estimate; 0 = all of a subject's frames
    prob_samples: int = 48            # Monte Carlo samples per camera per iteration
    prob_iters: int = 40
    prob_elite_frac: float = 0.2
    prob_init_sigma_deg: float = 10.0
    prob_tol_deg: float = 0.05
    prob_score_frames: int = 16       # frames of a window used to score samples
    prob_robust_px: float = 30.0
    stature_m: float = 0.0            # stature prior (m); > 0 overrides stature_from
    #: where the probabilistic route's metric scale comes from when stature_m is 0: the median
    #: stature of the training split (train) or each subject's own as the monocular lifter's
    #: predictions give it (lifter: the stage's --lifter-predictions, lift@temporal's)
    stature_from: Literal["train", "lifter"] = "lifter"

    def validate(self, p):
        require(self.noise_px >= 0, f"{p}.noise_px", self.noise_px, "must be >= 0")
        require(0 <= self.score_threshold <= 1, f"{p}.score_threshold", self.score_threshold, "must be in [0, 1]")
        require(self.refine_iters >= 0, f"{p}.refine_iters", self.refine_iters, "must be >= 0")
        require(self.ransac_threshold_px > 0, f"{p}.ransac_threshold_px", self.ransac_threshold_px, "must be > 0")
        require(self.ransac_min_inliers >= 2, f"{p}.ransac_min_inliers", self.ransac_min_inliers, "must be >= 2")
        require(self.ransac_max_hypotheses >= 1, f"{p}.ransac_max_hypotheses", self.ransac_max_hypotheses, "must be >= 1")
        require(0 <= self.ransac_threshold_quantile < 1, f"{p}.ransac_threshold_quantile",
                self.ransac_threshold_quantile, "must be in [0, 1) (0 = constant ransac_threshold_px)")
        require(self.ransac_threshold_scale > 0, f"{p}.ransac_threshold_scale", self.ransac_threshold_scale, "must be > 0")
        require(0 <= self.swap_penalty < 1, f"{p}.swap_penalty", self.swap_penalty, "must be in [0, 1)")
        require(self.smooth_cutoff_hz >= 0, f"{p}.smooth_cutoff_hz", self.smooth_cutoff_hz, "must be >= 0 (0 = off)")
        require(self.smooth_order >= 1, f"{p}.smooth_order", self.smooth_order, "must be >= 1")
        require(self.prob_window >= 0, f"{p}.prob_window", self.prob_window, "must be >= 0 (0 = all frames)")
        require(self.prob_samples >= 4, f"{p}.prob_samples", self.prob_samples, "must be >= 4")
        require(self.prob_iters >= 1, f"{p}.prob_iters", self.prob_iters, "must be >= 1")
        require(0 < self.prob_elite_frac <= 1, f"{p}.prob_elite_frac", self.prob_elite_frac, "must be in (0, 1]")
        require(self.prob_init_sigma_deg > 0, f"{p}.prob_init_sigma_deg", self.prob_init_sigma_deg, "must be > 0")
        require(self.prob_score_frames >= 1, f"{p}.prob_score_frames", self.prob_score_frames, "must be >= 1")
        require(self.prob_robust_px > 0, f"{p}.prob_robust_px", self.prob_robust_px, "must be > 0")
        require(self.stature_m >= 0, f"{p}.stature_m", self.stature_m, "must be >= 0 (0 = from training data)")
