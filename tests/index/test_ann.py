"""Approximate FAISS indexes: recall against exact search, effort tuning, device honesty."""

from __future__ import annotations

import numpy as np
import pytest

from ctfp.exceptions import DeviceError
from ctfp.index.ann import ApproximateIndex, exact_nearest, make_index, recall_at_1
from ctfp.index.flat import FlatIndex


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


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_refuse_cuda_instead_of_ignoring_it(kind: str) -> None:
    with pytest.raises(DeviceError, match="CPU only"):
        make_index(8, kind=kind, metric="l2", device="cuda")
    index = make_index(8, kind=kind, metric="l2", device="cpu")
    index.add(np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32))
    with pytest.raises(DeviceError, match="CPU only"):
        ApproximateIndex.from_bytes(index.to_bytes(), device="cuda")
    assert ApproximateIndex.from_bytes(index.to_bytes(), device="auto").ntotal == 200
