"""Proximity membership: memorised slices found, reference calibration, neighbours, indexes."""

from __future__ import annotations

import numpy as np
import pytest

from ctfp.index.ann import make_index, recall_at_1
from ctfp.index.flat import FlatIndex
from ctfp.membership.proximity import ProximityMembership


@pytest.mark.parametrize("metric", ["l1", "l2", "cosine"])
@pytest.mark.parametrize("reference", [True, False])
def test_proximity_finds_memorised_slices(metric: str, reference: bool, memorised) -> None:
    reals, y, generated = memorised()
    train, test = np.arange(200) < 120, np.arange(200) >= 120
    model = ProximityMembership(metric=metric, reference=reference, device="cpu")
    model.fit(reals[train], y[train], generated)
    pred = model.predict(reals[test])
    assert (pred == y[test]).mean() > 0.9
    assert model.train_scores_.shape == (120,)
    # Higher score means closer to the generated set.
    assert (
        model.score_samples(reals[test])[y[test] == 1].mean()
        > model.score_samples(reals[test])[y[test] == 0].mean()
    )


def test_reference_slices_do_not_count_themselves(memorised) -> None:
    reals, y, generated = memorised()
    model = ProximityMembership(metric="l2", reference=True, device="cpu").fit(reals, y, generated)
    # Scoring the training not-used slices with themselves in the reference set would give
    # d_ref = 0 and push their scores down artificially; leave-one-out keeps d_ref > 0.
    d_ref_in_sample = -np.sqrt(((reals[:, None] - generated[None]) ** 2).sum(-1)).min(1)
    assert (model.train_scores_[y == 0] > d_ref_in_sample[y == 0]).all()


def test_neighbours_average(memorised) -> None:
    reals, y, generated = memorised()
    one = ProximityMembership(metric="l2", neighbours=1, reference=False, device="cpu").fit(
        reals, y, generated
    )
    five = ProximityMembership(metric="l2", neighbours=5, reference=False, device="cpu").fit(
        reals, y, generated
    )
    D = np.sqrt(((reals[:, None] - generated[None]) ** 2).sum(-1))
    D.sort(axis=1)
    np.testing.assert_allclose(-one.score_samples(reals), D[:, 0], rtol=1e-4)
    np.testing.assert_allclose(-five.score_samples(reals), D[:, :5].mean(1), rtol=1e-4)


def test_errors(memorised) -> None:
    reals, y, generated = memorised()
    with pytest.raises(ValueError, match="metric"):
        ProximityMembership(metric="hamming").fit(reals, y, generated)
    with pytest.raises(ValueError, match="not fitted"):
        ProximityMembership().score_samples(reals)
    with pytest.raises(ValueError, match="neighbours"):
        ProximityMembership(neighbours=500, device="cpu").fit(reals, y, generated)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_search_effort_is_tuned_to_the_recall_target(kind: str, memorised) -> None:
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
    assert model.fit(reals, y, generated).recall_ >= 0.99
