"""Counting (Monte-Carlo) membership: scores and radius against brute force, the 1,024-neighbour
cap, label-free scores, save/load, options, and the memorisation signal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from ctfp.exceptions import InputError
from ctfp.membership.counting import CountingMembership, CountingSettings
from tests.membership.test_density import METRICS, copies, pairwise, small


def brute(q, generated, train, quantile, metric):
    """(fraction of generated slices within the radius of each row of q, the radius)."""
    radius = np.quantile(pairwise(train, generated, metric).min(1), quantile)
    return (pairwise(q, generated, metric) <= radius).sum(1) / len(generated), radius


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("quantile", [0.3, 0.5])
def test_scores_are_the_brute_force_fraction_within_the_radius(
    metric: str, quantile: float
) -> None:
    generated, train, y, test = small()
    model = CountingMembership(radius_quantile=quantile, metric=metric, device="cpu")
    model.fit(train, y, generated)
    expected, radius = brute(test, generated, train, quantile, metric)
    assert model.radius_ == pytest.approx(radius, rel=1e-6)
    score = model.score_samples(test)
    assert score.dtype == np.float64
    np.testing.assert_array_equal(score, expected)
    np.testing.assert_array_equal(
        model.train_scores_, brute(train, generated, train, quantile, metric)[0]
    )
    assert expected.max() > 0  # the test compares counts, not only zeros


def test_counts_are_capped_at_1024_neighbours() -> None:
    rng = np.random.default_rng(0)
    generated = rng.normal(size=(1100, 2)).astype(np.float32)
    train = rng.normal(size=(30, 2)).astype(np.float32)
    train[0] = 50  # far away: the radius (quantile 1) then holds every generated slice
    y = np.arange(30) % 2
    test = rng.normal(size=(20, 2)).astype(np.float32)
    model = CountingMembership(radius_quantile=1.0, device="cpu").fit(train, y, generated)
    counted = (pairwise(test, generated, "l2") <= model.radius_).sum(1)
    assert (counted == 1100).all()
    np.testing.assert_array_equal(model.score_samples(test), np.minimum(counted, 1024) / 1100)


def test_scores_do_not_depend_on_the_labels() -> None:
    generated, train, y, test = small()
    model = CountingMembership(device="cpu").fit(train, y, generated)
    shuffled = np.random.default_rng(3).permutation(y)
    other = CountingMembership(device="cpu").fit(train, shuffled, generated)
    assert not model.uses_labels and model.needs_generated
    assert other.radius_ == model.radius_
    np.testing.assert_array_equal(other.train_scores_, model.train_scores_)
    np.testing.assert_array_equal(other.score_samples(test), model.score_samples(test))


def test_state_round_trip() -> None:
    generated, train, y, test = small()
    model = CountingMembership(metric="l1", device="cpu").fit(train, y, generated)
    params, arrays = model.to_state()
    again = CountingMembership.from_state(json.loads(json.dumps(params)), arrays, device="cpu")
    assert again.get_params() == model.get_params()
    assert again.radius_ == model.radius_ and again.threshold_ == model.threshold_
    np.testing.assert_array_equal(again.train_scores_, model.train_scores_)
    np.testing.assert_array_equal(again.score_samples(test), model.score_samples(test))
    np.testing.assert_array_equal(again.predict(test), model.predict(test))


def test_clone_and_params() -> None:
    model = CountingMembership(radius_quantile=0.25, device="cpu")
    params = model.get_params()
    assert set(CountingSettings.field_names()) <= set(params) and params["radius_quantile"] == 0.25
    generated, train, y, _ = small()
    model.fit(train, y, generated)
    copy = clone(model)
    assert copy.get_params() == params and not hasattr(copy, "threshold_")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"radius_quantile": 0.0}, "radius_quantile"),
        ({"radius_quantile": 1.5}, "radius_quantile"),
        ({"radius_quantile": -0.2}, "radius_quantile"),
        ({"metric": "hamming"}, "metric"),
        ({"calibrate": "auc"}, "calibrate"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict, named: str) -> None:
    generated, train, y, _ = small()
    with pytest.raises(ValueError, match=named):
        CountingMembership(device="cpu", **options).fit(train, y, generated)


def test_missing_generated() -> None:
    _, train, y, _ = small()
    with pytest.raises(InputError, match="generated"):
        CountingMembership(device="cpu").fit(train, y)


@pytest.mark.parametrize("metric", METRICS)
def test_memorised_slices_are_separated(metric: str) -> None:
    reals, y, generated = copies()
    model = CountingMembership(metric=metric, device="cpu")
    model.fit(reals[:120], y[:120], generated)
    assert roc_auc_score(y[120:], model.score_samples(reals[120:])) > 0.9
    assert (model.predict(reals[120:]) == y[120:]).mean() > 0.8
