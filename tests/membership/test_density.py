"""Density-ratio (DOMIAS) membership: kNN and KDE scores against brute force, leave-one-out of
the reference slices, the KDE truncation, save/load, options, and the memorisation signal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from ctfp.exceptions import InputError
from ctfp.membership.density import DensityRatioMembership, DensitySettings

METRICS = ["l1", "l2", "cosine"]


def pairwise(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Brute-force (n, m) distances in float64 (cosine: L2 of unit vectors)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
    diff = a[:, None, :] - b[None, :, :]
    if metric == "l1":
        return np.abs(diff).sum(-1)
    return np.sqrt((diff**2).sum(-1))


def small(seed: int = 0, m: int = 40):
    """(generated (m, 6), training reals (30, 6), y (30,) with 15 not used, test (20, 6))."""
    rng = np.random.default_rng(seed)
    generated = rng.normal(size=(m, 6)).astype(np.float32)
    train = rng.normal(size=(30, 6)).astype(np.float32)
    test = rng.normal(size=(20, 6)).astype(np.float32)
    return generated, train, np.arange(30) % 2, test


def copies(seed: int = 0, n: int = 200, d: int = 32, per: int = 5):
    """Used reals each have ``per`` noisy copies among the generated slices, not-used ones none."""
    rng = np.random.default_rng(seed)
    reals = rng.normal(size=(n, d))
    y = (np.arange(n) % 2 == 0).astype(int)
    used = np.repeat(reals[y == 1], per, axis=0)
    generated = np.concatenate([used + rng.normal(0, 0.3, used.shape), rng.normal(size=(50, d))])
    return reals, y, generated


def knn_brute(q, generated, ref, k, metric, own=None):
    """log r_k,ref - log r_k,gen; ``own[i]``: the reference row that query i is (-1: none)."""
    D_ref = pairwise(q, ref, metric)
    if own is not None:
        D_ref[own >= 0, own[own >= 0]] = np.inf
    r_ref = np.sort(D_ref, axis=1)[:, k - 1]
    r_gen = np.sort(pairwise(q, generated, metric), axis=1)[:, k - 1]
    return np.log(r_ref) - np.log(r_gen)


def brute_bandwidth(generated, metric, multiple):
    D = pairwise(generated, generated, metric)
    np.fill_diagonal(D, np.inf)
    return multiple * np.median(D.min(1))


def kde_brute(q, generated, ref, h, metric, own=None, keep=None):
    """Gaussian KDE log-ratio; ``keep``: sum over only the nearest ``keep`` of each set."""

    def log_density(D, size):
        if keep is not None:
            D = np.sort(D, axis=1)[:, :keep]
        return logsumexp(-(D**2) / (2 * h**2), axis=1) - np.log(size)

    D_ref = pairwise(q, ref, metric)
    size = np.full(len(q), float(len(ref)))
    if own is not None:
        D_ref[own >= 0, own[own >= 0]] = np.inf
        size[own >= 0] -= 1
    return log_density(pairwise(q, generated, metric), len(generated)) - log_density(D_ref, size)


def own_rows(y: np.ndarray) -> np.ndarray:
    """For each training real, its row in the reference set (the not-used reals), else -1."""
    own = np.full(len(y), -1)
    own[y == 0] = np.arange((y == 0).sum())
    return own


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("neighbours", [1, 4])
def test_knn_scores_are_the_brute_force_log_radius_ratio(metric: str, neighbours: int) -> None:
    generated, train, y, test = small()
    model = DensityRatioMembership(neighbours=neighbours, metric=metric, device="cpu")
    model.fit(train, y, generated)
    ref = train[y == 0]
    expected = knn_brute(test, generated, ref, neighbours, metric)
    np.testing.assert_allclose(model.score_samples(test), expected, rtol=1e-5, atol=1e-5)
    assert model.bandwidth_ is None


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("bandwidth", [0.5, 1.0, 2.0])
def test_kde_scores_are_the_brute_force_log_density_ratio(metric: str, bandwidth: float) -> None:
    generated, train, y, test = small()
    model = DensityRatioMembership(
        estimator="kde", bandwidth=bandwidth, metric=metric, device="cpu"
    ).fit(train, y, generated)
    h = brute_bandwidth(generated, metric, bandwidth)
    assert model.bandwidth_ == pytest.approx(h, rel=1e-5)
    expected = kde_brute(test, generated, train[y == 0], h, metric)
    np.testing.assert_allclose(model.score_samples(test), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("estimator", ["knn", "kde"])
@pytest.mark.parametrize("metric", METRICS)
def test_training_reference_slices_are_scored_leave_one_out(estimator: str, metric: str) -> None:
    generated, train, y, _ = small(seed=1)
    model = DensityRatioMembership(
        estimator=estimator, neighbours=3, metric=metric, device="cpu"
    ).fit(train, y, generated)
    ref = train[y == 0]
    if estimator == "knn":
        expected = knn_brute(train, generated, ref, 3, metric, own=own_rows(y))
    else:
        h = brute_bandwidth(generated, metric, 1.0)
        expected = kde_brute(train, generated, ref, h, metric, own=own_rows(y))
    np.testing.assert_allclose(model.train_scores_, expected, rtol=1e-5, atol=1e-5)
    # A used training slice is not in the reference set: it scores as any new slice does.
    np.testing.assert_array_equal(model.train_scores_[y == 1], model.score_samples(train[y == 1]))


def test_kde_sums_over_the_nearest_512_slices_of_a_larger_set() -> None:
    generated, train, y, test = small(m=600)
    # A wide kernel, so the dropped far kernels would change the sum.
    model = DensityRatioMembership(estimator="kde", bandwidth=20.0, metric="l2", device="cpu")
    model.fit(train, y, generated)
    h = brute_bandwidth(generated, "l2", 20.0)
    truncated = kde_brute(test, generated, train[y == 0], h, "l2", keep=512)
    whole = kde_brute(test, generated, train[y == 0], h, "l2")
    np.testing.assert_allclose(model.score_samples(test), truncated, rtol=1e-5, atol=1e-6)
    assert np.abs(truncated - whole).max() > 1e-3


def test_an_exact_copy_gets_a_large_finite_knn_score() -> None:
    generated, train, y, test = small()
    generated[7] = test[0]
    model = DensityRatioMembership(neighbours=1, metric="l2", device="cpu").fit(train, y, generated)
    score = model.score_samples(test)
    assert np.isfinite(score).all()
    assert score[0] > score[1:].max() + 10


@pytest.mark.parametrize("estimator", ["knn", "kde"])
def test_state_round_trip(estimator: str) -> None:
    generated, train, y, test = small()
    model = DensityRatioMembership(estimator=estimator, metric="cosine", device="cpu")
    model.fit(train, y, generated)
    params, arrays = model.to_state()
    again = DensityRatioMembership.from_state(json.loads(json.dumps(params)), arrays, device="cpu")
    assert again.get_params() == model.get_params()
    assert again.bandwidth_ == model.bandwidth_ and again.threshold_ == model.threshold_
    np.testing.assert_array_equal(again.train_scores_, model.train_scores_)
    np.testing.assert_array_equal(again.score_samples(test), model.score_samples(test))
    np.testing.assert_array_equal(again.predict(test), model.predict(test))


def test_clone_and_params() -> None:
    model = DensityRatioMembership(estimator="kde", bandwidth=0.5, device="cpu")
    params = model.get_params()
    assert set(DensitySettings.field_names()) <= set(params) and params["bandwidth"] == 0.5
    generated, train, y, _ = small()
    model.fit(train, y, generated)
    copy = clone(model)
    assert copy.get_params() == params and not hasattr(copy, "threshold_")
    assert model.uses_labels and model.needs_generated


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"bandwidth": 0.0}, "bandwidth"),
        ({"bandwidth": -1.0}, "bandwidth"),
        ({"estimator": "gaussian"}, "estimator"),
        ({"neighbours": 0}, "neighbours"),
        ({"metric": "hamming"}, "metric"),
        ({"calibrate": "auc"}, "calibrate"),
        ({"neighbours": 15}, "neighbours"),  # 15 reference slices, one left out: 14 others
        ({"neighbours": 41}, "neighbours"),  # 40 generated slices
    ],
)
def test_bad_options_are_refused_by_name(options: dict, named: str) -> None:
    generated, train, y, _ = small()
    with pytest.raises(ValueError, match=named):
        DensityRatioMembership(device="cpu", **options).fit(train, y, generated)


def test_missing_generated_and_duplicate_generated() -> None:
    generated, train, y, _ = small()
    with pytest.raises(InputError, match="generated"):
        DensityRatioMembership(device="cpu").fit(train, y)
    with pytest.raises(InputError, match="generated"):
        DensityRatioMembership(device="cpu").fit(train, y, generated[:0])
    same = np.repeat(generated[:1], 40, axis=0)
    with pytest.raises(ValueError, match="bandwidth"):
        DensityRatioMembership(estimator="kde", device="cpu").fit(train, y, same)


@pytest.mark.parametrize("estimator", ["knn", "kde"])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_memorised_slices_are_separated(estimator: str, metric: str) -> None:
    reals, y, generated = copies()
    model = DensityRatioMembership(estimator=estimator, metric=metric, device="cpu")
    model.fit(reals[:120], y[:120], generated)
    assert roc_auc_score(y[120:], model.score_samples(reals[120:])) > 0.9
    assert (model.predict(reals[120:]) == y[120:]).mean() > 0.8
