"""Decision thresholds chosen on labelled training scores."""

from __future__ import annotations

import numpy as np

from ctfp.membership.options import CRITERIA, CRITERIA_HELP, check_criterion, parse_criterion


def choose_threshold(scores: np.ndarray, y: np.ndarray, criterion: str = "balanced") -> float:
    """The threshold t (predict 1 when score >= t) that maximises ``criterion`` on (scores, y).

    ``f1`` (used = positive), ``accuracy``, or ``balanced`` accuracy (mean of the two recalls,
    i.e. Youden's J; robust to unbalanced training labels). Midpoints between sorted scores are
    tried; ties go to the higher threshold. ``fpr:ALPHA``: the lowest threshold that at most a
    fraction ALPHA of the non-members (y = 0) reach, the false-positive rate an auditor states;
    it needs non-members only (members, if any, are ignored).

    Parameters
    ----------
    scores : (n,) float
    y : (n,) int, 1 = used, 0 = not used
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
        # At most floor(alpha * n) non-members may reach t: t just above the next one down.
        allowed = int(np.floor(alpha * len(negatives) + 1e-9))
        if allowed >= len(negatives):
            return float(negatives[0])
        above = negatives[len(negatives) - allowed - 1]
        higher = negatives[negatives > above]
        return float((above + higher[0]) / 2 if len(higher) else above + 1.0)
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


__all__ = ["CRITERIA", "CRITERIA_HELP", "check_criterion", "choose_threshold", "parse_criterion"]
