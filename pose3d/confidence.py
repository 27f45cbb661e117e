"""Detection scores as evidence: do they rank the 2D errors, and a monotone calibration if not.

A heatmap peak score is only a useful DLT row weight if a higher score means a smaller pixel
error. :func:`score_error_spearman` measures that per joint (Spearman's rank correlation of score
vs error; negative = scores rank errors correctly). :class:`ScoreCalibration` maps a raw score to
a weight ``sigma_min / sigma(score)``, where ``sigma(score)`` is the mean 2D error as a
non-increasing function of the score, fitted per joint by isotonic regression (pool adjacent
violators, Barlow et al. 1972; Best & Chakravarti 1990) on binned training observations. Weights
``1 / sigma`` make the weighted DLT's residuals comparable across views (H&Z 4.2.4: a weighted
algebraic error ~ the geometric error scaled by the noise level).

Shapes: scores and errors ``(N, J)`` (N observations = frames x views, J joints); NaN = missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

__all__ = ["pav", "score_error_spearman", "ScoreCalibration", "fit_score_calibration"]


def pav(y: np.ndarray, w: np.ndarray | None = None, increasing: bool = True) -> np.ndarray:
    """Pool adjacent violators: the weighted least-squares monotone fit to the sequence ``y`` (n,).

    Returns (n,) fitted values, non-decreasing (``increasing``) or non-increasing. Each block of
    pooled neighbours takes its weighted mean; O(n) amortised with a stack of blocks.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"pav: y must be 1-D, got shape {y.shape}")
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    if w.shape != y.shape or (w <= 0).any():
        raise ValueError(f"pav: weights must be positive with the shape of y {y.shape}, got {w.shape}")
    sign = 1.0 if increasing else -1.0
    means, weights, sizes = [], [], []
    for v, wi in zip(sign * y, w):
        means.append(v)
        weights.append(wi)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:  # violation: pool the last two blocks
            wt = weights[-2] + weights[-1]
            m = (means[-2] * weights[-2] + means[-1] * weights[-1]) / wt
            n = sizes[-2] + sizes[-1]
            del means[-1], weights[-1], sizes[-1]
            means[-1], weights[-1], sizes[-1] = m, wt, n
    return sign * np.repeat(means, sizes)


def score_error_spearman(scores: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of score vs 2D error per joint: (N, J), (N, J) -> (J,).

    Only observations with a finite score and error enter; NaN for a joint with fewer than 3 of
    them or constant scores. Negative values mean the scores rank the errors (high score, small
    error); near 0 means they carry no information about the error.
    """
    scores, errors = np.asarray(scores, float), np.asarray(errors, float)
    if scores.shape != errors.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and errors {errors.shape}: expected the same (N, J) shape")
    out = np.full(scores.shape[1], np.nan)
    for j in range(scores.shape[1]):
        ok = np.isfinite(scores[:, j]) & np.isfinite(errors[:, j])
        if ok.sum() >= 3 and np.ptp(scores[ok, j]) > 0:
            out[j] = spearmanr(scores[ok, j], errors[ok, j]).statistic
    return out


@dataclass(frozen=True)
class ScoreCalibration:
    """Per-joint monotone map score -> weight in (0, 1].

    knots (J, B) ascending score knots, sigma (J, B) the fitted mean error (px) at each knot,
    non-increasing along B; weights interpolate ``sigma`` linearly between knots (constant
    beyond them) and return ``min_j(sigma) / sigma`` over all joints, so that the most reliable
    (joint, score) has weight 1 and weights compare across joints.
    """

    knots: np.ndarray
    sigma: np.ndarray

    def weights(self, scores: np.ndarray) -> np.ndarray:
        """(..., J) raw scores -> (..., J) calibrated weights, non-decreasing in the score; NaN
        stays NaN."""
        scores = np.asarray(scores, dtype=np.float64)
        J = self.knots.shape[0]
        if scores.shape[-1] != J:
            raise ValueError(f"scores: last axis must be the {J} joints, got shape {scores.shape}")
        s_min = float(np.nanmin(self.sigma))
        out = np.empty_like(scores)
        for j in range(J):
            out[..., j] = s_min / np.interp(scores[..., j], self.knots[j], self.sigma[j])
        return np.where(np.isfinite(scores), out, np.nan)


def fit_score_calibration(scores: np.ndarray, errors: np.ndarray, n_bins: int = 32,
                          min_error_px: float = 0.5) -> ScoreCalibration:
    """Fit :class:`ScoreCalibration` on training observations (N, J) scores and 2D errors (px).

    Per joint: observations are sorted by score and cut into ``n_bins`` equal-count bins; the
    bins' mean errors are made non-increasing in the score by :func:`pav` (weighted by bin
    counts), each at its bin's mean score. Errors below ``min_error_px`` are raised to it (no
    detector is better than its pixel grid: keeps the weights bounded). Raises ValueError when a
    joint has fewer than ``n_bins`` usable observations.
    """
    scores, errors = np.asarray(scores, float), np.asarray(errors, float)
    if scores.shape != errors.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and errors {errors.shape}: expected the same (N, J) shape")
    J = scores.shape[1]
    knots, sigma = np.empty((J, n_bins)), np.empty((J, n_bins))
    for j in range(J):
        ok = np.isfinite(scores[:, j]) & np.isfinite(errors[:, j])
        if ok.sum() < n_bins:
            raise ValueError(f"score calibration: joint {j} has {int(ok.sum())} usable training "
                             f"observations, fewer than n_bins = {n_bins}")
        order = np.argsort(scores[ok, j], kind="stable")
        s, e = scores[ok, j][order], np.maximum(errors[ok, j][order], min_error_px)
        bins = np.array_split(np.arange(len(s)), n_bins)
        knots[j] = [s[b].mean() for b in bins]
        counts = np.array([len(b) for b in bins], dtype=float)
        sigma[j] = pav(np.array([e[b].mean() for b in bins]), counts, increasing=False)
    return ScoreCalibration(knots=knots, sigma=sigma)
