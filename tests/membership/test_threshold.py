"""Thresholds chosen on labelled training scores."""

from __future__ import annotations

import numpy as np
import pytest

from ctfp.membership.threshold import choose_threshold, fpr_floor


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


def test_fpr_calibration_reaches_the_stated_rate_on_held_out_non_members() -> None:
    from ctfp.membership.threshold import parse_criterion

    rng = np.random.default_rng(0)
    rates = []
    for _ in range(200):
        train_neg = rng.normal(0, 1, 400)
        held_out = rng.normal(0, 1, 2000)
        y = np.zeros(400, dtype=int)
        t = choose_threshold(train_neg, y, "fpr:0.05")  # non-members only: enough for fpr
        assert (train_neg >= t).mean() <= 0.05  # never more than asked on the training side
        rates.append((held_out >= t).mean())
    # On fresh non-members the rate is at most 0.05 and within sampling error of it (binomial
    # sd on 400: 0.011; the conformal order statistic gives 20/401 in expectation).
    assert 0.045 < np.mean(rates) <= 0.05 + 0.002 and np.std(rates) < 0.02
    # Members are ignored by fpr; t is the ceil((n + 1)(1 - alpha))-th smallest non-member.
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 5.0, 6.0])
    y = np.array([0] * 10 + [1, 1])
    t = choose_threshold(scores, y, "fpr:0.1")  # just above the 10th of 10
    assert 1.0 < t < 1.0 + 1e-12
    # Under 19 non-members no threshold bounds 5 %: refused, saying what would.
    assert fpr_floor(0.05) == 19 and fpr_floor(0.1) == 9
    with pytest.raises(ValueError, match=r"at least 19 not-used .* got 10.*fpr:0.1 holds"):
        choose_threshold(scores, y, "fpr:0.05")
    # Tied scores (counting's fractions): ties never push the rate above the bound.
    tied = np.r_[np.zeros(30), np.full(10, 0.5)]
    t = choose_threshold(tied, np.zeros(40, dtype=int), "fpr:0.05")
    assert (tied >= t).mean() == 0 and t > 0.5
    assert parse_criterion("fpr:0.05") == ("fpr", 0.05)
    for bad in ("fpr:0", "fpr:1", "fpr:x", "fpr", "roc"):
        with pytest.raises(ValueError, match="criterion"):
            parse_criterion(bad)
    with pytest.raises(ValueError, match="needs not-used"):
        choose_threshold(scores[10:], y[10:], "fpr:0.05")


def test_fpr_calibration_holds_for_small_reference_sets() -> None:
    """The bound is for the non-members the threshold will meet: a new non-member reaches it
    with probability at most alpha however few known non-members there are (exchangeable
    scores; measured over many draws), where the plain sample quantile overshoots."""
    rng = np.random.default_rng(1)
    for n in (19, 38, 60):
        rates = []
        for _ in range(4000):
            t = choose_threshold(rng.normal(size=n), np.zeros(n, dtype=int), "fpr:0.05")
            rates.append(rng.normal() >= t)
        assert np.mean(rates) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 4000), n


def test_every_method_takes_an_fpr_criterion(memorised) -> None:
    from ctfp.membership.registry import METHODS
    from ctfp.settings import SettingsError

    reals, y, generated = memorised()
    for name, cls in METHODS.items():
        if "calibrate" not in cls().get_params():
            continue
        model = cls(calibrate="fpr:0.1").fit(reals, y, generated)
        train = model.train_scores_[y == 0]
        assert (train >= model.threshold_).mean() <= 0.1, name
        with pytest.raises((ValueError, SettingsError), match=r"calibrate|criterion"):
            cls(calibrate="fpr:2").fit(reals, y, generated)
