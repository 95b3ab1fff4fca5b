"""The one definition of each distance ctfp reports: ``l1``, ``l2`` and ``cosine``.

FAISS searches ``l1`` (``METRIC_L1``) and ``l2`` (``METRIC_L2``, squared); ``cosine`` is searched
as L2 on L2-normalised rows, and the distance reported for it is that L2 distance of unit vectors,
``sqrt(2 - 2 cos)`` (0 for the same direction, 2 for opposite ones). Membership scores, saved
models and the report all use these functions, so one label always means one number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctfp.index import METRICS
from ctfp.index.flat import faiss_metric, threads_for


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    return metric


def search_metric(metric: str) -> str:
    """The FAISS index metric that searches ``metric``: ``l1``, else ``l2``."""
    return "l1" if check_metric(metric) == "l1" else "l2"


def prepare(x: Any, metric: str) -> np.ndarray:
    """Rows as C-contiguous float32, L2-normalised for ``cosine`` (a new array then)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if check_metric(metric) == "cosine":
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    return a


def exact(x: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Distances (n, k) float64 between each row of ``x`` (n, d) and its ``vectors`` (n, k, d),
    both :func:`prepare`-d, from differences: FAISS's ``|x|^2 + |y|^2 - 2 x.y`` loses small
    distances' digits and depends on the batch.
    """
    diff = vectors - x[:, None, :]
    if check_metric(metric) == "l1":
        return np.abs(diff).sum(-1, dtype=np.float64)
    return np.sqrt(np.einsum("nkd,nkd->nk", diff, diff, dtype=np.float64))


def search(index: Any, x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest stored rows of ``index`` (a ctfp Flat or Approximate index searched
    with :func:`search_metric`) for prepared queries ``x``: exact distances (n, k) float64 by
    :func:`exact`, best first, and row numbers (n, k). Queries are taken 4,096 at a time so the
    (n, k, d) neighbour vectors stay small."""
    parts = []
    for lo in range(0, max(len(x), 1), 4096):
        q = x[lo : lo + 4096]
        ids = np.asarray(index.search(q, k)[1])
        parts.append(_ranked(q, index.reconstruct(ids), ids, metric))
    D, I = zip(*parts, strict=True)  # noqa: E741
    return np.concatenate(D), np.concatenate(I)


def nearest(query: Any, base: Any, metric: str, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``k`` nearest rows of ``base`` (m, d) for each row of ``query`` (n, d), by brute
    force on the CPU (no index is built): distances (n, k) float64 and row numbers (n, k)."""
    import faiss

    q, b = prepare(query, metric), prepare(base, metric)
    with threads_for(q.size * len(b)):
        _, I = faiss.knn(q, b, k, metric=faiss_metric(search_metric(metric)))  # noqa: E741
    vectors = np.where((I >= 0)[..., None], b[np.maximum(I, 0)], np.nan)
    return _ranked(q, vectors.astype(np.float32), I, metric)


def _ranked(
    q: np.ndarray, vectors: np.ndarray, ids: np.ndarray, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances of ``q``'s found neighbours (``vectors``, ``ids``), re-sorted best first
    (the exact distances may order near-ties differently from the search's)."""
    D = exact(q, vectors, metric)
    order = np.argsort(D, axis=1, kind="stable")
    return np.take_along_axis(D, order, 1), np.take_along_axis(ids, order, 1)


__all__ = [
    "METRICS",
    "check_metric",
    "exact",
    "nearest",
    "prepare",
    "search",
    "search_metric",
]
