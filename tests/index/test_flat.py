"""FlatIndex: exactly the brute-force answer (L1, L2, inner product)."""

from __future__ import annotations

import numpy as np
import pytest

from ctfp.index import FlatIndex
from tests.conftest import cuda


def brute(x: np.ndarray, q: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    if metric == "l1":
        D = np.abs(q[:, None, :] - x[None]).sum(-1)
    elif metric == "l2":
        D = ((q[:, None, :] - x[None]) ** 2).sum(-1)
    else:
        D = -(q @ x.T)
    I = np.argsort(D, axis=1, kind="stable")[:, :k]  # noqa: E741
    D = np.take_along_axis(D, I, 1)
    return (-D if metric == "ip" else D), I


@pytest.mark.parametrize("metric", ["l1", "l2", "ip"])
def test_exactly_equal_to_brute_force_on_integer_data(metric: str) -> None:
    # Integer-valued float32 data: every distance is exact, so equality must be exact too.
    rng = np.random.default_rng(0)
    x = rng.integers(-50, 50, (64, 256)).astype(np.float32)
    q = rng.integers(-50, 50, (500, 256)).astype(np.float32)
    D, I = FlatIndex(256, metric=metric, device="cpu").add(x).search(q, 5)  # noqa: E741
    D_ref, I_ref = brute(x.astype(np.float64), q.astype(np.float64), metric, 5)
    np.testing.assert_array_equal(D, D_ref.astype(np.float32))
    # Ties may be ordered differently, but each returned neighbour is at the returned distance.
    full = {
        "l1": np.abs(q[:, None] - x[None]).sum(-1),
        "l2": ((q[:, None] - x[None]) ** 2).sum(-1),
        "ip": q @ x.T,
    }[metric]
    np.testing.assert_array_equal(np.take_along_axis(full, I, 1), D)
    assert (I_ref == I).mean() > 0.9


def test_l1_on_embedding_like_data() -> None:
    rng = np.random.default_rng(1)
    centres = rng.gamma(1.0, 1.0, (8, 2048)).astype(np.float32)
    q = rng.gamma(1.0, 1.0, (300, 2048)).astype(np.float32)
    D, I = FlatIndex(2048, metric="l1", device="cpu").add(centres).search(q, 8)  # noqa: E741
    D_ref, I_ref = brute(centres.astype(np.float64), q.astype(np.float64), "l1", 8)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5)


def test_errors() -> None:
    index = FlatIndex(4, device="cpu")
    with pytest.raises(ValueError, match="empty"):
        index.search(np.zeros((1, 4)), 1)
    index.add(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="3 dimensions"):
        index.search(np.zeros((1, 3)), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, 4)), 3)
    with pytest.raises(ValueError, match="metric"):
        FlatIndex(4, metric="cosine")


@cuda
@pytest.mark.gpu
def test_gpu_l1_matches_cpu() -> None:
    from ctfp.index.flat import faiss_has_gpu

    if not faiss_has_gpu():
        pytest.skip("this FAISS build has no GPU support (pip install 'ctfp[gpu]')")
    rng = np.random.default_rng(2)
    x = rng.integers(-50, 50, (64, 2048)).astype(np.float32)
    q = rng.integers(-50, 50, (1000, 2048)).astype(np.float32)
    cpu = FlatIndex(2048, device="cpu").add(x).search(q, 4)
    gpu = FlatIndex(2048, device="cuda").add(x).search(q, 4)
    np.testing.assert_array_equal(cpu[0], gpu[0])


def test_small_searches_run_in_one_thread_and_give_the_same_neighbours() -> None:
    """A small search runs in one OpenMP thread (spinning threads cost more than they save on a
    busy machine); the thread count is restored after it and the answer does not change."""
    import faiss

    from ctfp.index.flat import ONE_THREAD_WORK, threads_for

    before = faiss.omp_get_max_threads()
    with threads_for(ONE_THREAD_WORK - 1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with threads_for(ONE_THREAD_WORK):
        assert faiss.omp_get_max_threads() == before

    rng = np.random.default_rng(0)
    base, query = rng.random((300, 64), dtype=np.float32), rng.random((40, 64), dtype=np.float32)
    index = FlatIndex(64, metric="l1", device="cpu").add(base)
    _, ids = index.search(query, 3)
    expected = np.argsort(np.abs(query[:, None] - base[None]).sum(-1), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(ids, expected)
    assert faiss.omp_get_max_threads() == before
