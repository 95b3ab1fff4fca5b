"""Proximity membership, threshold calibration, approximate indexes, the ensemble."""

from __future__ import annotations

import numpy as np
import pytest

from ctfp.index.ann import ApproximateIndex, exact_nearest, make_index, recall_at_1
from ctfp.index.flat import FlatIndex
from ctfp.tasks.ensemble import EnsembleMembership
from ctfp.tasks.proximity import ProximityMembership, choose_threshold


def memorised(seed: int = 0, n: int = 200, d: int = 32):
    """Used slices have near-copies among the generated ones; not-used slices do not."""
    rng = np.random.default_rng(seed)
    reals = rng.normal(size=(n, d))
    y = (np.arange(n) % 2 == 0).astype(int)
    generated = np.concatenate(
        [reals[y == 1] + rng.normal(0, 0.3, ((y == 1).sum(), d)), rng.normal(size=(50, d))]
    )
    return reals, y, generated


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


@pytest.mark.parametrize("metric", ["l1", "l2", "cosine"])
@pytest.mark.parametrize("reference", [True, False])
def test_proximity_finds_memorised_slices(metric: str, reference: bool) -> None:
    reals, y, generated = memorised()
    train, test = np.arange(200) < 120, np.arange(200) >= 120
    model = ProximityMembership(metric=metric, reference=reference, device="cpu")
    model.fit(generated, reals[train], y[train])
    pred = model.predict(reals[test])
    assert (pred == y[test]).mean() > 0.9
    assert model.train_scores_.shape == (120,)
    # Higher score means closer to the generated set.
    assert (
        model.score(reals[test])[y[test] == 1].mean()
        > model.score(reals[test])[y[test] == 0].mean()
    )


def test_reference_slices_do_not_count_themselves() -> None:
    reals, y, generated = memorised()
    model = ProximityMembership(metric="l2", reference=True, device="cpu").fit(generated, reals, y)
    # Scoring the training not-used slices with themselves in the reference set would give
    # d_ref = 0 and push their scores down artificially; leave-one-out keeps d_ref > 0.
    d_ref_in_sample = -np.sqrt(((reals[:, None] - generated[None]) ** 2).sum(-1)).min(1)
    assert (model.train_scores_[y == 0] > d_ref_in_sample[y == 0]).all()


def test_neighbours_average() -> None:
    reals, y, generated = memorised()
    one = ProximityMembership(metric="l2", neighbours=1, reference=False, device="cpu").fit(
        generated, reals, y
    )
    five = ProximityMembership(metric="l2", neighbours=5, reference=False, device="cpu").fit(
        generated, reals, y
    )
    D = np.sqrt(((reals[:, None] - generated[None]) ** 2).sum(-1))
    D.sort(axis=1)
    np.testing.assert_allclose(-one.score(reals), D[:, 0], rtol=1e-4)
    np.testing.assert_allclose(-five.score(reals), D[:, :5].mean(1), rtol=1e-4)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_and_recall(kind: str) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(5000, 32)).astype(np.float32)
    queries = base[:300] + rng.normal(0, 0.05, (300, 32)).astype(np.float32)
    index = make_index(32, kind=kind, metric="l2")
    assert isinstance(index, ApproximateIndex)
    index.add(base)
    exact = FlatIndex(32, metric="l2", device="cpu").add(base)
    assert recall_at_1(index, exact, queries) > 0.9
    # The indexed vectors themselves stand for the exact index (brute force, no copy).
    assert recall_at_1(index, base, queries) == recall_at_1(index, exact, queries)
    for metric in ("l1", "ip"):
        _, truth = FlatIndex(32, metric=metric, device="cpu").add(base).search(queries, 1)
        np.testing.assert_array_equal(exact_nearest(base, queries, metric), truth[:, 0])
    reals, y, generated = memorised()
    model = ProximityMembership(index=kind, device="cpu").fit(generated, reals, y)
    assert model.recall_ is not None and 0.0 <= model.recall_ <= 1.0


def test_ensemble_is_at_least_as_good_as_chance_and_calibrated() -> None:
    reals, y, generated = memorised()
    train, test = np.arange(200) < 120, np.arange(200) >= 120
    model = EnsembleMembership(k=2, device="cpu").fit(generated, reals[train], y[train])
    assert (model.predict(reals[test]) == y[test]).mean() > 0.85
    assert model.train_scores_.shape == (120,)


def test_errors() -> None:
    reals, y, generated = memorised()
    with pytest.raises(ValueError, match="metric"):
        ProximityMembership(metric="hamming").fit(generated, reals, y)
    with pytest.raises(ValueError, match="not fitted"):
        ProximityMembership().score(reals)
    with pytest.raises(ValueError, match="neighbours"):
        ProximityMembership(neighbours=500, device="cpu").fit(generated, reals, y)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_search_effort_is_tuned_to_the_recall_target(kind: str) -> None:
    """Clustered data: the tuned effort is the least power of 2 reaching the target."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (50, 32)).astype(np.float32)
    base = centres[rng.integers(0, 50, 8000)] + rng.normal(size=(8000, 32)).astype(np.float32)
    queries = centres[rng.integers(0, 50, 400)] + rng.normal(size=(400, 32)).astype(np.float32)
    exact = FlatIndex(32, metric="l2", device="cpu").add(base)
    index = make_index(32, kind=kind, metric="l2").add(base)
    recall = index.tune(exact, queries, target=0.95)
    effort = index.effort
    assert recall >= 0.95 and recall == recall_at_1(index, exact, queries)
    start = 1 if kind == "ivf" else 16
    if effort > start:  # one step less effort misses the target
        index.effort = effort // 2
        assert recall_at_1(index, exact, queries) < 0.95
    # And the model tunes itself on its training reals.
    reals, y, generated = memorised()
    model = ProximityMembership(index=kind, recall_target=0.99, device="cpu")
    assert model.fit(generated, reals, y).recall_ >= 0.99
