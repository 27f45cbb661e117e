"""Temporal smoothing of triangulated trajectories: a zero-phase Butterworth low-pass.

:func:`butterworth_filtfilt` runs an order-``order`` Butterworth low-pass (``scipy.signal.butter``)
forward and backward (``filtfilt``): zero phase lag, squared magnitude response, so a joint's
trajectory is not delayed. Each coordinate's least-squares straight line is subtracted before
the filter and added back after it: the filter (unit gain at 0 Hz, symmetric) keeps a line in
the interior, but its start-up at the sequence ends (``filtfilt``'s padding and initial state)
bends one by ~1e-5 of its slope; detrended, a constant-velocity motion is unchanged to rounding,
ends included, and only the deviations from it are low-passed.

Layout: trajectories ``(T, ...)`` with time on axis 0 (e.g. ``(T, J, 3)``), one sequence at a
time; NaN (a missing joint) is filled by linear interpolation in time for the filter and NaN
again in the output.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, filtfilt

__all__ = ["butterworth_filtfilt"]


def butterworth_filtfilt(X: np.ndarray, fps: float, cutoff_hz: float, order: int = 4) -> np.ndarray:
    """Zero-phase low-pass of X (T, ...) sampled at ``fps`` with a ``cutoff_hz`` -3 dB point per
    pass (the forward-backward filter is -6 dB there) -> (T, ...), NaN where X is NaN.

    Columns with fewer than 2 finite samples are returned unchanged. Sequences too short for
    ``filtfilt``'s padding (``T <= 3 * (order + 1)``) are returned unchanged as well (a copy).
    Raises ValueError for a cutoff at or above Nyquist (``fps / 2``) or non-positive values.
    """
    if fps <= 0 or cutoff_hz <= 0:
        raise ValueError(f"butterworth_filtfilt: fps = {fps} and cutoff_hz = {cutoff_hz} must be > 0")
    if cutoff_hz >= fps / 2:
        raise ValueError(f"butterworth_filtfilt: cutoff_hz = {cutoff_hz} must be below Nyquist ({fps / 2} Hz at {fps} fps)")
    if order < 1:
        raise ValueError(f"butterworth_filtfilt: order = {order} must be >= 1")
    X = np.asarray(X, dtype=np.float64)
    T = X.shape[0]
    out = X.copy()
    if T <= 3 * (order + 1):
        return out
    b, a = butter(order, cutoff_hz / (fps / 2), btype="low")
    flat = out.reshape(T, -1)
    t = np.arange(T)
    for c in range(flat.shape[1]):
        y = flat[:, c]
        ok = np.isfinite(y)
        if ok.sum() < 2:
            continue
        filled = y if ok.all() else np.interp(t, t[ok], y[ok])
        slope, icpt = np.polyfit(t, filled, 1)
        trend = slope * t + icpt
        flat[:, c] = np.where(ok, filtfilt(b, a, filled - trend) + trend, np.nan)
    return flat.reshape(X.shape)
