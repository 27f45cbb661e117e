"""Stage logic of ``triangulate@{algebraic,ransac,probabilistic}``: multi-view 2D -> 3D.

Inputs: the studio's ``mocap.h5`` (ground truth, and the split), ``cameras.json`` and either the
cached 2D detections (``detections_2d.parquet``: subject, action, camera, frame, keypoints_px
J*2 distorted full-image pixels, scores J) or the ground truth projected with each camera's
model plus Gaussian noise (``input: gt``, ``noise_px``). Views are grouped per (subject,
action, frame) into ``(T, V, J, 2)`` arrays, in the camera order of cameras.json.

Methods: ``algebraic`` (confidence-weighted DLT, H&Z 12.2), ``ransac`` (RANSAC over views +
refit), both calibrated and in world coordinates; ``probabilistic`` (no extrinsics: Jiang et al.
2023, :mod:`pose3d.geometry.probabilistic`), in the reference camera's coordinates, one camera
estimate per subject window.

Detector-error model, from the *training* subjects only (``input: detections``, :func:`train_detector_errors`):
the detections' 2D error against the projected ground truth gives the Spearman correlation of
score vs error per joint (metrics ``score_spearman_<joint>``), the RANSAC inlier threshold
(``ransac_threshold_quantile`` x ``ransac_threshold_scale``) and, with ``score_calibration:
isotonic``, a monotone score -> weight map (:mod:`pose3d.confidence`). ``swap_hypotheses`` lets
RANSAC take a view's left/right-swapped limb detections (``swap_rescued_*`` metrics), and
``smooth_cutoff_hz`` adds ``smoothed_*`` metrics from a zero-phase Butterworth low-pass of each
sequence (:mod:`pose3d.smoothing`; the predictions stay unsmoothed). Writes ``data/predictions/triangulate_<method>.parquet`` (subject,
action, camera = "", frame, joints_3d J*3 metres) and a metrics JSON.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from pose3d.confidence import ScoreCalibration, fit_score_calibration, score_error_spearman
from pose3d.data.contracts import read_detections, read_predictions, write_predictions
from pose3d.data.io import DataError, read_mocap, write_metrics
from pose3d.data.views import GroundTruth, MultiView
from pose3d.geometry.procrustes import align_similarity
from pose3d.geometry.probabilistic import probabilistic_triangulate, stature
from pose3d.geometry.rotations import rotation_angle_deg
from pose3d.geometry.triangulation import triangulate
from pose3d.metrics import joint_errors
from pose3d.skeleton import FLIP_PERM, JOINT_NAMES
from pose3d.smoothing import butterworth_filtfilt

log = logging.getLogger(__name__)

METHODS = ("algebraic", "ransac", "probabilistic")
J = len(JOINT_NAMES)
#: what the stage's DVC metrics file keeps: what only this stage knows (the evaluate stage owns
#: MPJPE/P-MPJPE of the predictions; per-joint score correlations stay in the MLflow run)
HEADLINE = {
    "world": ("abs_mpjpe_mm", "smoothed_mpjpe_mm", "smoothed_pa_mpjpe_mm", "reprojection_px",
              "ransac_threshold_px", "score_spearman_mean", "swap_rescued_joint_frac"),
    "reference_camera": ("root_relative_mpjpe_mm", "smoothed_pa_mpjpe_mm", "rotation_error_deg", "rotation_error_max_deg",
                         "translation_direction_error_deg", "scale_error_pct", "score_spearman_mean"),
}


@dataclass
class SubjectViews:
    """One subject's 2D in every view beside its ground truth (:class:`pose3d.data.views.MultiView`:
    world poses, their projections, the stacked cameras, actions, frames, fps).

    points_px (T, V, J, 2) float64: the 2D that is triangulated (NaN = missing); scores
    (T, V, J) or None (ground-truth input).
    """
    truth: MultiView
    points_px: torch.Tensor
    scores: torch.Tensor | None


def load_views(mocap: str, cameras: str, detections: str | None, source: str, noise_px: float,
               split: str, seed: int = 0) -> list[SubjectViews]:
    """Ground truth + 2D (detections, or GT projected plus ``noise_px`` Gaussian noise)."""
    gt = GroundTruth.load(mocap, cameras, split=None if split == "all" else split)
    det = None
    if source == "detections":
        if not detections:
            raise DataError("triangulate.input = detections but no --detections file was given")
        det = read_detections(detections)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for subject in sorted(gt.subjects):
        mv = gt.multiview(subject)
        if det is None:
            uv = mv.pixels
            if noise_px > 0:
                uv = uv + noise_px * torch.randn(uv.shape, generator=gen, dtype=uv.dtype)
            out.append(SubjectViews(mv, uv, None))
        else:
            out.append(SubjectViews(mv, *_detections_in_views(det, gt, mv)))
    return out


def _detections_in_views(det, gt: GroundTruth, mv: MultiView) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of ``det`` for ``mv``'s subject -> points (T, V, J, 2) and scores (T, V, J);
    NaN / 0 where a frame or view has no detection."""
    offset, o = {}, 0
    for s in gt.of_subject(mv.subject):
        offset[s.action] = (o, len(s.positions_world))
        o += len(s.positions_world)
    df = det.keys
    m = (df["subject"] == mv.subject).to_numpy()
    d = df[m]
    act_off = d["action"].map(lambda a: offset.get(a, (-1, 0))[0]).to_numpy()
    act_len = d["action"].map(lambda a: offset.get(a, (-1, 0))[1]).to_numpy()
    fr = d["frame"].to_numpy()
    cam_idx = d["camera"].map({c: i for i, c in enumerate(mv.camera_names)}).to_numpy()
    ok = (act_off >= 0) & (fr >= 0) & (fr < act_len) & ~np.isnan(cam_idx.astype(float))
    if not ok.any():
        raise DataError(f"{det.path}: no detections for subject {mv.subject}")
    rows = (act_off + fr)[ok]
    ci = cam_idx[ok].astype(int)
    T, V = mv.pixels.shape[:2]
    uv = np.full((T, V, J, 2), np.nan)
    sc = np.zeros((T, V, J))
    uv[rows, ci] = det.keypoints[m][ok]
    sc[rows, ci] = det.scores[m][ok]
    return torch.as_tensor(uv), torch.as_tensor(sc)


@dataclass
class DetectorErrors:
    """The detector's 2D error on the training subjects, one row per (frame, view).

    errors (N, J) px: distance between the detection and the ground truth projected with the
    camera's full model; scores (N, J); both NaN where the detection is missing or below the
    score threshold.
    """
    errors: np.ndarray
    scores: np.ndarray


def train_detector_errors(mocap: str, cameras: str, detections: str, score_threshold: float) -> DetectorErrors:
    """:class:`DetectorErrors` of ``detections`` on the ``train`` split of ``mocap``: never a test
    subject, so thresholds and calibrations fitted on it do not see the test detections."""
    errs, scs = [], []
    for sv in load_views(mocap, cameras, detections, "detections", 0.0, "train"):
        e = (sv.truth.pixels - sv.points_px).norm(dim=-1)
        keep = torch.isfinite(e) & torch.isfinite(sv.scores) & (sv.scores >= score_threshold)
        nan = torch.full_like(e, float("nan"))
        errs.append(torch.where(keep, e, nan).reshape(-1, J).numpy())
        scs.append(torch.where(keep, sv.scores, nan).reshape(-1, J).numpy())
    out = DetectorErrors(np.concatenate(errs), np.concatenate(scs))
    if not np.isfinite(out.errors).any():
        raise DataError(f"{detections}: no training-subject detection with score >= {score_threshold} "
                        "to measure the detector's error on")
    return out


def ransac_threshold(errors: np.ndarray, quantile: float, scale: float) -> float:
    """The RANSAC inlier threshold (px): ``scale`` x the ``quantile`` of the finite errors."""
    e = errors[np.isfinite(errors)]
    return float(scale * np.quantile(e, quantile))


def smooth_sequences(pred: torch.Tensor, subjects: list[str], actions: list[str], fps: dict[tuple[str, str], float],
                     cutoff_hz: float, order: int) -> torch.Tensor:
    """pred (N, J, 3), the rows of each (subject, action) consecutive in frame order -> the same
    with every sequence low-passed by :func:`pose3d.smoothing.butterworth_filtfilt`."""
    X = pred.numpy().copy()
    keys = list(zip(subjects, actions))
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            f = fps[keys[start]]
            if cutoff_hz >= f / 2:
                raise DataError(f"triangulate.smooth_cutoff_hz = {cutoff_hz}: at or above the Nyquist frequency "
                                f"of {keys[start][0]}/{keys[start][1]} ({f} fps -> {f / 2} Hz); lower it or set 0")
            X[start:i] = butterworth_filtfilt(X[start:i], f, cutoff_hz, order)
            start = i
    return torch.as_tensor(X)


def prior_stature(mocap: str) -> float:
    """The stature prior (:func:`pose3d.geometry.probabilistic.stature`, metres) as the median
    over the *training* split of mocap.h5: never the test subjects' own size."""
    seqs = read_mocap(mocap, split="train")
    if not seqs:
        raise DataError(f"{mocap}: no training sequences for the stature prior; set triangulate.stature_m")
    X = torch.as_tensor(np.concatenate([s.positions_world for s in seqs]), dtype=torch.float64)
    return float(stature(X).median())


def lifter_statures(path: str | None, subjects) -> dict[str, float]:
    """Each subject's stature (:func:`pose3d.geometry.probabilistic.stature`, metres) as the
    median over every row (frames x cameras) of a lifter's predictions: the probabilistic
    route's metric scale from a monocular model that learned metric 3D on the training subjects
    (``triangulate.stature_from: lifter``). A missing file or subject is a DataError naming it."""
    if not path:
        raise DataError("triangulate.stature_from = lifter but no --lifter-predictions file was given")
    pr = read_predictions(path)
    out = {}
    for s in subjects:
        rows = (pr.keys["subject"] == s).to_numpy()
        h = stature(torch.as_tensor(pr.joints[rows], dtype=torch.float64))
        h = h[torch.isfinite(h)]
        if not h.numel():
            raise DataError(f"{path}: no predictions for subject {s} (triangulate.stature_from = lifter)")
        out[s] = float(h.median())
    return out


def _nanmean(x: torch.Tensor) -> float:
    x = x[torch.isfinite(x)]
    return float(x.mean()) if x.numel() else float("nan")


def _pose_metrics(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """pred, gt (N, J, 3) metres, pred may hold NaN joints (missing) -> errors in mm.

    NaN-aware: every error is a mean over the joints that have a prediction (MPJPE also needs
    the frame's root); P-MPJPE fits each frame's similarity on its predicted joints only (frames
    with >= 3 of them), so one missing joint no longer drops the frame or makes the metric NaN.
    ``valid_joint_frac``: predicted joints / all joints; ``pa_valid_joint_frac``: the joints that
    entered P-MPJPE / all joints.
    """
    valid = torch.isfinite(pred).all(-1)  # (N, J)
    frames = valid.sum(-1) >= 3  # a similarity needs 3 points
    pa = joint_errors(pred[frames], gt[frames], "procrustes", joint_mask=valid[frames])
    pa_valid = valid[frames]
    return {
        "mpjpe_mm": 1000 * _nanmean(joint_errors(pred, gt, "root")),
        "abs_mpjpe_mm": 1000 * _nanmean(joint_errors(pred, gt, "none")),
        "pa_mpjpe_mm": 1000 * _nanmean(pa[pa_valid]),
        "missing_joint_frac": float((~valid).double().mean()),
        "valid_joint_frac": float(valid.double().mean()),
        "pa_valid_joint_frac": int(pa_valid.sum()) / max(valid.numel(), 1),
    }


def run(method: str, mocap: str, cameras: str, detections: str | None, out: str, metrics_out: str,
        timings_out: str, p, device: torch.device, seed: int = 0,
        lifter_predictions: str | None = None) -> dict[str, float]:
    """Triangulate every (test) frame with ``method``; write predictions and metrics; return them.

    ``p`` is the ``triangulate`` params section (its fields are read here, passed on as plain
    arguments). ``lifter_predictions``: a lifter's predictions, the probabilistic route's scale
    when ``p.stature_from == "lifter"`` (and ``p.stature_m`` is 0).
    """
    if method not in METHODS:
        raise ValueError(f"method = {method!r}: expected one of {METHODS}")
    t0 = time.perf_counter()
    subjects = load_views(mocap, cameras, detections, p.input, p.noise_px, p.split, seed)
    cols = {"subject": [], "action": [], "camera": [], "frame": []}
    preds, gts, reproj = [], [], []
    cam_est, cam_metrics = {}, {"rotation_error_deg": [], "translation_direction_error_deg": [],
                                "scale_error_pct": []}
    sim_err = []
    statures: dict[str, float] = {}  # probabilistic: each subject's metric scale (stature, m)
    if method == "probabilistic":
        names = [sv.truth.subject for sv in subjects]
        if p.stature_from == "lifter" and p.stature_m <= 0:
            statures = lifter_statures(lifter_predictions, names)
        else:
            statures = dict.fromkeys(names, p.stature_m if p.stature_m > 0 else prior_stature(mocap))
    n_points = 0
    t_solve = 0.0
    extra: dict[str, float] = {}
    thr_px = p.ransac_threshold_px
    calib: ScoreCalibration | None = None
    if method in ("algebraic", "ransac") and p.input == "detections":
        de = train_detector_errors(mocap, cameras, detections, p.score_threshold)
        rho = score_error_spearman(de.scores, de.errors)
        extra.update({f"score_spearman_{n}": float(r) for n, r in zip(JOINT_NAMES, rho)})
        extra["score_spearman_mean"] = float(np.nanmean(rho))
        extra["train_error_median_px"] = float(np.nanmedian(de.errors))
        if p.ransac_threshold_quantile > 0:
            thr_px = ransac_threshold(de.errors, p.ransac_threshold_quantile, p.ransac_threshold_scale)
        if p.score_calibration == "isotonic":
            calib = fit_score_calibration(de.scores, de.errors)
    elif p.score_calibration != "none" or p.ransac_threshold_quantile > 0:
        log.info("triangulate.score_calibration / ransac_threshold_quantile need input: detections "
                    "(a detector to measure); %s uses the raw scores and ransac_threshold_px", method)
    if method == "ransac":
        extra["ransac_threshold_px"] = thr_px
    n_swapped_joints = n_swapped_views = 0
    for sv in subjects:
        uv = sv.points_px.to(device)
        sc = sv.scores.to(device) if sv.scores is not None else None
        cams = {k: v.to(device) for k, v in sv.truth.cameras.items()}
        ts = time.perf_counter()
        if method in ("algebraic", "ransac"):
            thr = p.score_threshold
            if calib is not None and sc is not None:  # calibrated weights; the threshold stays on raw scores
                raw = sc.cpu().numpy()
                w = np.where(raw >= p.score_threshold, calib.weights(raw), np.nan)
                sc, thr = torch.as_tensor(w, dtype=uv.dtype, device=device), 0.0
            swaps = method == "ransac" and p.swap_hypotheses
            res = triangulate(uv, cams, sc, method="dlt" if method == "algebraic" else "ransac",
                              score_threshold=thr, weighted=p.weighted, refine=p.refine,
                              refine_iters=p.refine_iters, ransac_threshold_px=thr_px,
                              ransac_min_inliers=p.ransac_min_inliers,
                              ransac_max_hypotheses=p.ransac_max_hypotheses,
                              swap_perm=FLIP_PERM if swaps else None, swap_penalty=p.swap_penalty, seed=seed)
            if res.swapped is not None:
                n_swapped_joints += int(res.swapped.any(-2).sum())
                n_swapped_views += int(res.swapped.sum())
            X = res.points_3d.cpu()
            reproj.append(res.reprojection_error_px.cpu().flatten())
            gt = sv.truth.world
        else:
            ref = sv.truth.camera_names.index(p.prob_reference_camera) if p.prob_reference_camera else 0
            if p.prob_reference_camera and p.prob_reference_camera not in sv.truth.camera_names:
                raise DataError(f"triangulate.prob_reference_camera = {p.prob_reference_camera!r}: "
                                f"not a camera of {sv.truth.subject} ({sv.truth.camera_names})")
            R_ref, t_ref = sv.truth.cameras["R"][ref], sv.truth.cameras["t"][ref]
            gt = sv.truth.world @ R_ref.T + t_ref  # ground truth in the reference camera's frame
            R_true = sv.truth.cameras["R"] @ R_ref.T
            t_true = sv.truth.cameras["t"] - (R_true @ t_ref.unsqueeze(-1)).squeeze(-1)
            T = uv.shape[0]
            W = p.prob_window if p.prob_window > 0 else T
            Xs = []
            for w0 in range(0, T, W):  # one camera estimate per window of frames (static rig)
                sl = slice(w0, min(T, w0 + W))
                r = probabilistic_triangulate(
                    uv[sl], cams["K"], cams["dist"], sc[sl] if sc is not None else None,
                    reference=ref, score_threshold=p.score_threshold, n_samples=p.prob_samples,
                    n_iters=p.prob_iters, elite_frac=p.prob_elite_frac,
                    init_sigma_deg=p.prob_init_sigma_deg, tol_deg=p.prob_tol_deg,
                    score_frames=p.prob_score_frames, robust_px=p.prob_robust_px,
                    stature_m=statures[sv.truth.subject], refine=p.refine, seed=seed + w0)
                Xw = r.points_3d.cpu()
                Xs.append(Xw)
                others = [v for v in range(len(sv.truth.camera_names)) if v != ref]
                R_est, t_est = r.R.cpu(), r.t.cpu()
                cam_metrics["rotation_error_deg"] += rotation_angle_deg(R_est[others], R_true[others]).tolist()
                cos = torch.nn.functional.cosine_similarity(t_est[others], t_true[others], dim=-1)
                cam_metrics["translation_direction_error_deg"] += torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).tolist()
                scale_true = float(stature(gt[sl]).median())
                cam_metrics["scale_error_pct"].append(100 * (statures[sv.truth.subject] / scale_true - 1))
                ok = torch.isfinite(Xw).all(-1)
                if ok.any():  # MPJPE after one similarity alignment for the whole window
                    A = align_similarity(Xw[ok].reshape(1, -1, 3), gt[sl][ok].reshape(1, -1, 3))
                    sim_err.append((A[0] - gt[sl][ok]).norm(dim=-1))
                cam_est.setdefault(sv.truth.subject, []).append({
                    "frames": [int(sl.start), int(sl.stop)], "iterations": r.iterations,
                    "cost_px": r.cost_px, "scale": r.scale,
                    "cameras": {n: {"R": R_est[i].tolist(), "t": t_est[i].tolist()}
                                for i, n in enumerate(sv.truth.camera_names)}})
            X = torch.cat(Xs)
        t_solve += time.perf_counter() - ts
        n_points += X.shape[0] * X.shape[1]
        preds.append(X)
        gts.append(gt)
        cols["subject"] += [sv.truth.subject] * len(X)
        cols["action"] += sv.truth.actions
        cols["camera"] += [""] * len(X)
        cols["frame"] += sv.truth.frames.tolist()
    pred, gt = torch.cat(preds), torch.cat(gts)
    metrics = _pose_metrics(pred, gt)
    if p.smooth_cutoff_hz > 0:
        fps = {(sv.truth.subject, a): f for sv in subjects for a, f in sv.truth.fps.items()}
        smoothed = smooth_sequences(pred, cols["subject"], cols["action"], fps, p.smooth_cutoff_hz, p.smooth_order)
        sm = _pose_metrics(smoothed, gt)
        metrics.update({f"smoothed_{k}": sm[k] for k in ("mpjpe_mm", "abs_mpjpe_mm", "pa_mpjpe_mm")})
    if method == "ransac" and p.swap_hypotheses:
        metrics.update({"swap_rescued_joints": n_swapped_joints, "swap_rescued_views": n_swapped_views,
                        "swap_rescued_joint_frac": n_swapped_joints / max(pred.shape[0] * pred.shape[1], 1)})
    metrics.update(extra)
    metrics.update({"n_frames": int(pred.shape[0]), "joints_per_s": n_points / max(t_solve, 1e-9),
                    "seconds": time.perf_counter() - t0})
    if reproj:
        metrics["reprojection_px"] = _nanmean(torch.cat(reproj))
    meta = {"input": p.input, "noise_px": p.noise_px}
    if method == "probabilistic":
        metrics["stature_prior_m"] = float(np.mean(list(statures.values())))
    if method == "probabilistic":
        metrics.update({k: float(np.mean(v)) for k, v in cam_metrics.items()})
        metrics["rotation_error_max_deg"] = float(np.max(cam_metrics["rotation_error_deg"]))
        # root-relative in the reference camera at the stature's scale (evaluate's mpjpe_mm for
        # this frame is after a similarity alignment per sequence, which removes the scale error)
        metrics["root_relative_mpjpe_mm"] = metrics["mpjpe_mm"]
        metrics["sim_mpjpe_mm"] = 1000 * float(torch.cat(sim_err).mean()) if sim_err else float("nan")
        ref_names = {sv.truth.subject: (p.prob_reference_camera or sv.truth.camera_names[0]) for sv in subjects}
        meta.update({"reference_camera": ref_names[subjects[0].truth.subject] if len(set(ref_names.values())) == 1
                     else ref_names, "estimated_cameras": cam_est})
    write_predictions(out, cols, pred.numpy(), method=f"triangulate_{method}",
                      coord_frame="reference_camera" if method == "probabilistic" else "world",
                      root_relative=False, meta=meta)
    write_metrics(metrics_out, timings_out, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
                  keys=HEADLINE["reference_camera" if method == "probabilistic" else "world"])
    return metrics


def run_stage(s, paths, tracker) -> str:
    """``triangulate@<method>``: :func:`run` with the stage's files."""
    tracker.log_params({"method": paths.method})
    m = run(paths.method, paths.mocap, paths.cameras, paths.detections, paths.out, paths.metrics, paths.timings, s.params,
            s.device, seed=s.base.seed, lifter_predictions=paths.lifter_predictions)
    tracker.log_metrics(m)
    return ", ".join(f"{k}={v:.4g}" for k, v in m.items())
