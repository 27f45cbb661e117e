"""The lift stage's work: build data, train through the one loop, predict the test
subjects, score them and write the contract outputs.

    run_lift("martinez", section, base, mocap=..., cameras=..., detections=..., out=...,
             model_dir=..., metrics=..., curves=...)

Outputs: ``out`` (Parquet, one row per test (subject, action, camera, frame): ``joints_3d``
J*3 metres root-relative in the camera frame; the temporal model adds ``root_3d`` (3), its
predicted root trajectory in camera coordinates), ``model_dir/model.pt`` + ``config.json``
(rebuild with :func:`load_lifter`), ``model_dir/checkpoint.pt`` (resume), ``metrics`` JSON
(mpjpe_mm, pa_mpjpe_mm, n_mpjpe_mm, mpjve_mm on the test subjects) and the curves CSV.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pose3d import metrics as M
from pose3d.data.contracts import write_predictions
from pose3d.data.io import DataError, file_digest, write_json
from pose3d.runtime.params import as_flat_dict, fingerprint
from pose3d.skeleton import JOINT_NAMES, flip_poses
from pose3d.tasks.lifting.data import FrameSet, build_frames, flip_pixels, split_of, to_screen
from pose3d.tasks.lifting.steps import LIFTERS
from pose3d.runtime.train import Trainer, TrainConfig, load_state, resolve_device, save_model

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- prediction
@torch.no_grad()
def predict(model: torch.nn.Module, fs: FrameSet, flip_tta: bool = True, device="cpu",
            with_root: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict every frame of ``fs`` from its input 2D: (N, J, 3) root-relative metres
    (camera frame) and, with ``with_root``, (N, 3) root positions. Sequences of equal length
    go through the model as one batch (B, T, J, 2) (exact: each sequence is edge-padded on
    its own; single-frame models treat frames independently)."""
    model.eval().to(device)
    J = len(JOINT_NAMES)
    pose = np.zeros((fs.num_frames, J, 3), np.float32)
    root = np.zeros((fs.num_frames, 3), np.float32) if with_root else None
    for n in np.unique(fs.lengths):
        seqs = np.flatnonzero(fs.lengths == n)
        rows = fs.starts[seqs][:, None] + np.arange(n)[None]        # (S, T)
        uv = torch.from_numpy(fs.uv[rows]).double()                   # (S, T, J, 2)
        K = torch.from_numpy(fs.K[seqs]).double()[:, None]           # (S, 1, 3, 3)
        wh = torch.from_numpy(fs.wh[seqs]).double()[:, None]         # (S, 1, 2)
        x = to_screen(uv, wh).float().to(device)
        y = model(x).float().cpu()                                    # (S, T, J, 3)
        r = model.forward_root(x).float().cpu() if with_root else None
        if flip_tta:
            xf = to_screen(flip_pixels(uv, K), wh).float().to(device)
            y = (y + flip_poses(model(xf).float().cpu())) / 2
            if with_root:
                rf = model.forward_root(xf).float().cpu()
                rf[..., 0] = -rf[..., 0]
                r = (r + rf) / 2
        pose[rows.reshape(-1)] = y.reshape(-1, J, 3).numpy()
        if with_root:
            root[rows.reshape(-1)] = r.reshape(-1, 3).numpy()
    return pose, root


def score(fs: FrameSet, pose: np.ndarray, root: np.ndarray | None = None,
          joint_mask=None) -> dict[str, float]:
    """P1/P2/N-MPJPE and MPJVE (mm) of predictions (N, J, 3) against ``fs``'s camera-frame GT;
    frame means over every (subject, action, camera, frame); ``root_mm`` when ``root`` given."""
    gt = torch.from_numpy(fs.pos_cam).double()
    pr = torch.from_numpy(pose).double()
    mask = None if joint_mask is None else torch.as_tensor(joint_mask)
    out = {"mpjpe_mm": M.framewise_mean(M.mpjpe(pr, gt, mask)) * 1000,
           "pa_mpjpe_mm": M.framewise_mean(M.pa_mpjpe(pr, gt, mask)) * 1000,
           "n_mpjpe_mm": M.framewise_mean(M.n_mpjpe(pr, gt, mask)) * 1000}
    ve = [M.mpjve(pr[a:a + n], gt[a:a + n], mask) for a, n in zip(fs.starts, fs.lengths) if n > 1]
    out["mpjve_mm"] = M.framewise_mean(torch.cat(ve)) * 1000 if ve else float("nan")
    if root is not None:
        out["root_mm"] = float((torch.from_numpy(root).double() - gt[:, 0]).norm(dim=-1).mean()) * 1000
    return out


def per_action(fs: FrameSet, pose: np.ndarray) -> dict[str, float]:
    """P1 (mm) per action over the test subjects and cameras."""
    err = M.mpjpe(torch.from_numpy(pose).double(), torch.from_numpy(fs.pos_cam).double()).numpy()
    acts = np.repeat(np.asarray(fs.action), fs.lengths)
    return {a: float(err[acts == a].mean() * 1000) for a in sorted(set(fs.action))}


def example_input(fs: FrameSet, frames: int = 27) -> torch.Tensor:
    """The first sequence's first ``frames`` inputs as a lifter takes them, (1, T, J, 2) screen
    coordinates: the input example of the model logged to MLflow."""
    rows = fs.starts[0] + np.arange(min(frames, int(fs.lengths[0])))
    uv = torch.from_numpy(fs.uv[rows]).double()[None]               # (1, T, J, 2)
    wh = torch.from_numpy(fs.wh[:1]).double()[:, None]               # (1, 1, 2)
    return to_screen(uv, wh).float()


def load_lifter(model_dir, map_location="cpu") -> torch.nn.Module:
    """Rebuild a lifter from ``model_dir/config.json`` + ``model.pt`` (weights only)."""
    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "config.json").read_text())
    kw = dict(cfg["model_kwargs"])
    if "filter_widths" in kw:
        kw["filter_widths"] = tuple(kw["filter_widths"])
    if cfg["model"] not in LIFTERS:
        raise DataError(f"{model_dir}/config.json: unknown lifter {cfg['model']!r} (known: {', '.join(LIFTERS)})")
    model = LIFTERS[cfg["model"]].model(**kw)
    model.load_state_dict(load_state(model_dir / "model.pt", map_location))
    return model.eval()


# --------------------------------------------------------------------------- the stage
@dataclass(frozen=True)
class LiftResult:
    metrics: dict            # what the metrics JSON holds (test subjects)
    history: list[dict]      # one row per epoch (the curves CSV)
    test: FrameSet           # the test frames ...
    pose: np.ndarray         # ... their predictions (N, J, 3) root-relative camera-frame metres
    root: np.ndarray | None  # (N, 3) predicted root trajectory (lifters with_root)


def run_lift(model_name: str, p, base, *, mocap, cameras, detections=None, out=None,
             model_dir=None, metrics_path=None, curves=None, run=None, progress: bool = True,
             train_subjects=None, test_subjects=None, checkpoint=None) -> LiftResult:
    """Train the registered lifter ``model_name`` with params section ``p`` and write the
    stage's outputs (each optional). Subjects come from mocap.h5's ``split`` attrs unless given.
    ``checkpoint`` (resume state; default ``model_dir/checkpoint.pt`` when a model_dir is given).
    """
    if model_name not in LIFTERS:
        raise DataError(f"unknown lifter {model_name!r} (known: {', '.join(LIFTERS)})")
    spec = LIFTERS[model_name]
    if base.num_threads:
        torch.set_num_threads(base.num_threads)
    train_subjects = list(train_subjects or split_of(mocap, "train"))
    test_subjects = list(test_subjects or split_of(mocap, "test"))
    if not train_subjects or not test_subjects:
        raise DataError(f"{mocap}: need train and test subjects (split attrs), got "
                        f"train={train_subjects} test={test_subjects}")
    det = detections if p.input_2d == "detections" else None
    if p.input_2d == "detections" and (det is None or not Path(det).exists()):
        raise DataError(f"{model_name}.input_2d = detections but {det} does not exist")
    frames = build_frames(mocap, cameras, input_2d=p.input_2d, noise_px=p.noise_px,
                          detections_path=det, subjects=train_subjects + test_subjects,
                          seed=base.seed)
    is_train = np.array([s in train_subjects for s in frames.subject])
    train, test = frames.select(is_train), frames.select(~is_train)
    log.info("%s: %d train frames (%d sequences), %d test frames", model_name, train.num_frames,
             len(train), test.num_frames)

    setup = spec.setup(p, train, base.seed)
    with_root = spec.with_root
    device = resolve_device(base.device)
    eval_seqs = test.select(np.arange(len(test)) % max(len(test) // 16, 1) == 0)  # a fixed subset

    def evaluate(ctx, epoch):
        pose, _ = predict(setup.lifter, eval_seqs, flip_tta=False, device=ctx.device)
        setup.lifter.train()
        return {"val_mpjpe_mm": score(eval_seqs, pose)["mpjpe_mm"]}

    fp = fingerprint(p, base) + file_digest(mocap, cameras, det)
    cfg = TrainConfig(epochs=p.epochs, device=base.device, cpu_precision=base.cpu_precision,
                      seed=base.seed, checkpoint=checkpoint or (Path(model_dir) / "checkpoint.pt" if model_dir else None),
                      curves_csv=curves, desc=f"lift@{model_name}", progress=progress)
    trainer = Trainer(setup.modules, setup.optimizers, setup.schedulers, config=cfg, run=run)
    history = trainer.fit(setup.step_fn, setup.train_batches, evaluate=evaluate, fingerprint=fp)

    pose, root = predict(setup.lifter, test, flip_tta=p.flip_tta, device=device, with_root=with_root)
    result = score(test, pose, root)
    result.update({"num_test_frames": int(test.num_frames), "input_2d": p.input_2d,
                   "test_subjects": test_subjects, "per_action_mpjpe_mm": per_action(test, pose)})
    if model_dir is not None:
        save_model(model_dir, setup.lifter.cpu(), {"model": model_name, "model_kwargs": setup.model_kwargs,
                                                   "params": dataclasses.asdict(p), "fingerprint": fp},
                   example=example_input(test), dynamic_axes=(0, 1))  # any batch, any length
    if out is not None:
        extra = {"root_3d": (root, "predicted root (pelvis) trajectory, camera frame, m")} if with_root else None
        write_predictions(out, test.row_keys(), pose, method=model_name, coord_frame="camera",
                          root_relative=True, extra_columns=extra,
                          meta={"input_2d": p.input_2d, "flip_tta": p.flip_tta, "params": as_flat_dict(p)})
    if metrics_path is not None:
        write_json(metrics_path, result)
    if run is not None:
        run.log_metrics({k: v for k, v in result.items() if isinstance(v, float)})
        for path in (metrics_path, curves):
            if path is not None:
                run.log_artifact(path)
    return LiftResult(result, history, test, pose, root)


def run_stage(s, paths, tracker) -> str:
    """``lift@<model>``: :func:`run_lift` with the stage's files (see stages/lift.py)."""
    res = run_lift(paths.model, s.params, s.base, mocap=paths.mocap, cameras=paths.cameras,
                   detections=paths.detections, out=paths.out, model_dir=paths.model_dir,
                   checkpoint=paths.checkpoint, curves=paths.curves,
                   run=tracker)
    m = res.metrics
    return (f"MPJPE {m['mpjpe_mm']:.1f} mm, P-MPJPE {m['pa_mpjpe_mm']:.1f} mm, MPJVE {m['mpjve_mm']:.2f} mm "
            f"on {m['num_test_frames']} test frames")
