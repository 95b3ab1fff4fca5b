"""Decision thresholds chosen on labelled training scores."""

from __future__ import annotations

import math

import numpy as np

from ctfp.membership.options import CRITERIA, CRITERIA_HELP, check_criterion, parse_criterion


def fpr_floor(alpha: float) -> int:
    """The fewest known non-members on which ``fpr:ALPHA`` can be bounded
    (:func:`choose_threshold`): a new non-member scores above all of n with probability
    1 / (n + 1)."""
    return int(np.ceil(1 / alpha - 1 - 1e-9))


def choose_threshold(scores: np.ndarray, y: np.ndarray, criterion: str = "balanced") -> float:
    """The threshold t (predict 1 when score >= t) that maximises ``criterion`` on ``scores``
    (n,) with labels ``y`` (n,) (1 = used, 0 = not used).

    ``f1`` (used = positive), ``accuracy``, or ``balanced`` accuracy (Youden's J): midpoints
    between sorted scores are tried, ties go to the higher threshold. ``fpr:ALPHA`` bounds the
    false-positive rate for new non-members (split conformal, Vovk et al. 2005): a non-member
    exchangeable with the n given scores above their j-th smallest with probability at most
    (n + 1 - j) / (n + 1), so t lies just above that order statistic for the least j that
    makes this at most ALPHA. It uses the non-members only, at least :func:`fpr_floor` of them.
    """
    name, alpha = parse_criterion(criterion)
    y = np.asarray(y, dtype=int)
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("calibration scores contain NaN or infinite values")
    if name == "fpr":
        assert alpha is not None
        negatives = np.sort(scores[y == 0])
        if len(negatives) == 0:
            raise ValueError("fpr calibration needs not-used (0) training slices")
        n = len(negatives)
        if n < fpr_floor(alpha):
            holds = math.ceil(100 / (n + 1)) / 100  # the least stated rate n can bound
            raise ValueError(
                f"calibrate fpr:{alpha:g} needs at least {fpr_floor(alpha)} not-used (0) training "
                f"slices to bound the false-positive rate, got {n}: even a score above all of "
                f"them is reached by a new non-member with probability 1/{n + 1}; add known "
                f"non-members or state a larger rate (fpr:{holds:g} holds with {n})"
            )
        j = int(np.ceil((n + 1) * (1 - alpha) - 1e-9))  # 1-based, j <= n
        return float(np.nextafter(negatives[j - 1], np.inf))
    if len(np.unique(y)) < 2:
        raise ValueError("calibration needs both used (1) and not-used (0) training slices")
    s = np.sort(np.unique(scores))
    candidates = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1] + 1.0]])
    pred = scores[None, :] >= candidates[:, None]
    tp = (pred & (y == 1)).sum(1)
    fp = (pred & (y == 0)).sum(1)
    pos, neg = (y == 1).sum(), (y == 0).sum()
    tn = neg - fp
    if name == "f1":
        value = 2 * tp / np.maximum(2 * tp + fp + (pos - tp), 1)
    elif name == "accuracy":
        value = (tp + tn) / len(y)
    else:
        value = (tp / pos + tn / neg) / 2
    best = np.flatnonzero(value == value.max())
    return float(candidates[best[-1]])


__all__ = [
    "CRITERIA",
    "CRITERIA_HELP",
    "check_criterion",
    "choose_threshold",
    "fpr_floor",
    "parse_criterion",
]
