"""The study's central number: how much of the dense run's training another run needs to reach
the dense run's final validation loss (interpolated between evaluation points; beyond the end by relative speed)."""

from __future__ import annotations

import numpy as np


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (a point only sees the past, so crossings are never early)."""
    if window <= 1:
        return np.asarray(values, dtype=float)
    values = np.asarray(values, dtype=float)
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values)
    for i in range(len(values)):
        lo = max(0, i + 1 - window)
        out[i] = (cumsum[i + 1] - cumsum[lo]) / (i + 1 - lo)
    return out


def first_crossing(x: np.ndarray, loss: np.ndarray, target: float, smoothing: int = 1) -> float | None:
    """Smallest x at which the (smoothed) loss curve reaches `target`, linearly interpolated; None if never."""
    x, loss = np.asarray(x, dtype=float), smooth(loss, smoothing)
    for i in range(len(loss)):
        if loss[i] <= target:
            if i == 0:
                return float(x[0])
            # linear interpolation between the last point above and the first at/below the target
            x0, x1, y0, y1 = x[i - 1], x[i], loss[i - 1], loss[i]
            return float(x0 + (y0 - target) / (y0 - y1) * (x1 - x0))
    return None


def speedup_fractions(dense: dict[str, np.ndarray], other: dict[str, np.ndarray], smoothing: int = 1) -> dict:
    """Fractions of dense's steps / FLOPs / wall-clock that `other` needs to reach dense's final loss.

    Each curve dict holds aligned arrays `step`, `flops`, `time`, `loss` at the evaluation points.
    The target is dense's final smoothed loss. A run that reaches it gets the interpolated crossing over
    dense's total (< 1 when faster). A run that never reaches it keeps a number, not a gap in the seeds:
    by its relative speed at its end, `other`'s total over the point where dense reached `other`'s final
    loss (> 1: it assumes the run keeps that speed ratio past its end); `reached` says which of the two.
    """
    target = float(smooth(dense["loss"], smoothing)[-1])
    own_final = float(smooth(other["loss"], smoothing)[-1])
    result = {"target_loss": target, "reached": True}
    for axis in ("step", "flops", "time"):
        key = f"{axis}s_frac" if axis == "step" else f"{axis}_frac"
        crossing = first_crossing(other[axis], other["loss"], target, smoothing)
        if crossing is not None:
            result[key] = crossing / float(dense[axis][-1])
            continue
        result["reached"] = False
        dense_at = first_crossing(dense[axis], dense["loss"], own_final, smoothing)
        result[key] = float(other[axis][-1]) / dense_at if dense_at else float("inf")
    return result
