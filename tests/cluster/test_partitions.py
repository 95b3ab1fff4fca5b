"""Partitions: one callable or many, an ordered map, results summed in partition order; k-means
and the mixture read partitions through it and fit what one stream of the same rows fits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from ctfp.cluster import GaussianMixture, KMeans
from ctfp.cluster.partitions import InMemory, Partitions
from tests.conftest import blobs


def test_one_callable_or_a_sequence_and_the_map() -> None:
    def batches():
        return [np.zeros((2, 3))]

    assert Partitions.of(batches).partitions == [batches]
    with pytest.raises(TypeError, match="map_fn needs batches as a sequence"):
        Partitions.of(batches, map)
    calls = []

    def recording_map(function, items):
        calls.append(len(items))
        return map(function, items)

    data = Partitions.of([batches, batches], recording_map)
    assert data.reduce(lambda p: len(p()), lambda a, b: a + b) == 2 and calls == [2]


def test_reduce_sums_in_partition_order_and_skips_empty_partitions() -> None:
    data = Partitions([lambda i=i: i for i in range(5)])
    got = data.reduce(lambda p: None if p() % 2 else [p()], lambda a, b: a + b)
    assert got == [0, 2, 4]
    with pytest.raises(ValueError, match="hold no data"):
        data.reduce(lambda p: None, lambda a, b: a)


def test_an_array_in_memory_is_one_partition_of_one_batch() -> None:
    x = np.arange(6.0).reshape(2, 3)
    (partition,) = Partitions.in_memory(x).partitions
    (batch,) = partition()
    assert batch is x
    assert isinstance(pickle.loads(pickle.dumps(partition)), InMemory)


def test_partitions_fit_what_one_stream_of_the_same_rows_fits() -> None:
    x, _ = blobs(3000, 8, spread=2.0)
    parts = [lambda i=i: np.array_split(x[i * 1000 : (i + 1) * 1000], 3) for i in range(3)]
    parts.append(lambda: [])  # a partition without batches adds nothing
    whole = lambda: (b for p in parts for b in p())  # noqa: E731
    mapped = lambda function, items: list(map(function, items))  # noqa: E731
    sample = x[::6]
    km = [KMeans(4, random_state=0, device="cpu") for _ in range(2)]
    km[0].fit_stream(parts, sample, passes=3, map_fn=mapped)
    km[1].fit_stream(whole, sample, passes=3)
    np.testing.assert_allclose(km[0].cluster_centers_, km[1].cluster_centers_, rtol=1e-6)
    assert km[0].inertia_ == pytest.approx(km[1].inertia_, rel=1e-9)
    gmm = [GaussianMixture(4, covariance_type="diag", random_state=0, device="cpu") for _ in "ab"]
    gmm[0].fit_stream(parts, sample, map_fn=mapped)
    gmm[1].fit_stream(whole, sample)
    np.testing.assert_allclose(gmm[0].means_, gmm[1].means_, rtol=1e-9)
    assert gmm[0].n_iter_ == gmm[1].n_iter_ and gmm[0].converged_
    np.testing.assert_array_equal(gmm[0].predict(x), gmm[1].predict(x))
    for model in (km[0], gmm[0]):
        with pytest.raises(ValueError, match="hold no data"):
            model.fit_stream([lambda: []], sample)
