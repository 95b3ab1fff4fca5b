"""Decision thresholds chosen on labelled training scores."""

from __future__ import annotations

import numpy as np

CRITERIA = ("f1", "accuracy", "balanced")


def choose_threshold(scores: np.ndarray, y: np.ndarray, criterion: str = "balanced") -> float:
    """The threshold t (predict 1 when score >= t) that maximises ``criterion`` on (scores, y).

    ``f1`` (used = positive), ``accuracy``, or ``balanced`` accuracy (mean of the two recalls,
    i.e. Youden's J; robust to unbalanced training labels). Midpoints between sorted scores are
    tried; ties go to the higher threshold.

    Parameters
    ----------
    scores : (n,) float
    y : (n,) int, 1 = used, 0 = not used
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    y = np.asarray(y, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both used (1) and not-used (0) training slices")
    if not np.isfinite(scores).all():
        raise ValueError("calibration scores contain NaN or infinite values")
    s = np.sort(np.unique(scores))
    candidates = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1] + 1.0]])
    pred = scores[None, :] >= candidates[:, None]
    tp = (pred & (y == 1)).sum(1)
    fp = (pred & (y == 0)).sum(1)
    pos, neg = (y == 1).sum(), (y == 0).sum()
    tn = neg - fp
    if criterion == "f1":
        value = 2 * tp / np.maximum(2 * tp + fp + (pos - tp), 1)
    elif criterion == "accuracy":
        value = (tp + tn) / len(y)
    else:
        value = (tp / pos + tn / neg) / 2
    best = np.flatnonzero(value == value.max())
    return float(candidates[best[-1]])


__all__ = ["CRITERIA", "choose_threshold"]
