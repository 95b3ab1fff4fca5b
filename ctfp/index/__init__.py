"""Nearest-neighbour search with FAISS: exact flat indexes (L1, L2, inner product) on CPU or GPU,
and approximate ones (IVF, HNSW).

The names of the distances and index kinds live here, importable without NumPy or FAISS (the
command line's options read them); the indexes are imported on first use.
"""

from __future__ import annotations

from ctfp._lazy import lazy

#: The distances ctfp reports (:mod:`ctfp.index.distance` defines each).
METRICS = ("l1", "l2", "cosine")
#: Exact (``flat``) or approximate (``ivf``, ``hnsw``) search.
KINDS = ("flat", "ivf", "hnsw")

_LAZY = {"FlatIndex": "ctfp.index.flat", "ApproximateIndex": "ctfp.index.ann"}


__getattr__ = lazy(__name__, _LAZY)


__all__ = ["KINDS", "METRICS", "ApproximateIndex", "FlatIndex"]
