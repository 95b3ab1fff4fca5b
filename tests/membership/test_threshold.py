"""Thresholds chosen on labelled training scores."""

from __future__ import annotations

import numpy as np
import pytest

from ctfp.membership.threshold import choose_threshold


def test_choose_threshold_criteria() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.95])
    y = np.array([0, 0, 0, 1, 1, 1])
    t = choose_threshold(scores, y, "accuracy")
    assert 0.3 < t <= 0.4
    assert ((scores >= choose_threshold(scores, y, "balanced")) == y).all()
    # F1 favours recall: labelling everything used is never worse than missing positives here.
    assert choose_threshold(scores, np.array([0, 1, 0, 1, 1, 1]), "f1") <= 0.2
    with pytest.raises(ValueError, match="both"):
        choose_threshold(scores, np.ones(6), "f1")
    with pytest.raises(ValueError, match="NaN"):
        choose_threshold(np.array([0.1, np.nan, 0.3, 0.4, 0.9, 0.95]), y, "f1")
    with pytest.raises(ValueError, match="criterion"):
        choose_threshold(scores, y, "auc")


def test_threshold_is_the_brute_force_best_balanced_accuracy() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    scores = rng.normal(size=60) + y
    t = choose_threshold(scores, y, "balanced")

    def balanced(threshold: float) -> float:
        pred = scores >= threshold
        return (
            (pred & (y == 1)).sum() / (y == 1).sum() + (~pred & (y == 0)).sum() / (y == 0).sum()
        ) / 2

    best = max(balanced(c) for c in np.concatenate([scores, [scores.max() + 1]]))
    assert balanced(t) == pytest.approx(best)
